"""Deep multi-task learning for subtle expressions: stacked ResNet-34s, tensor trace norms, ADA."""
