"""Table 5 baselines: hand-crafted face descriptors with a linear SVM, and their table writer."""
