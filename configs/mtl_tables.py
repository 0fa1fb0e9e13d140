r"""Tables 4 and 5 (and Fig. 3) of the MTL paper in one command: configs/mtl.py plus `tables`.

The CPU setting on the built-in data (configs/mtl.py's default setting; three seeds):

  python -m experiments.mtl_tables --config configs/mtl_tables.py --workdir runs/mtl_tables

On real data (the same data fields as configs/mtl.py; the paper's networks need a GPU):

  python -m experiments.mtl_tables --config configs/mtl_tables.py:resnet34 \
    --workdir runs/mtl_tables_r34 \
    --config.data.expression.source=image_folder --config.data.expression.path=/data/LSEMSW \
    --config.data.landmarks.source=300w --config.data.landmarks.path=/data/300W

A tiny smoke run (tests, about a minute on a CPU):

  python -m experiments.mtl_tables --config configs/mtl_tables.py:runlocal --workdir /tmp/tables

The variant after the colon is configs/mtl.py's (e.g. `runlocal`, `resnet34`); every field of
configs/mtl.py can be overridden as there (`--config.num_steps=300`, the data fields, the
built-in data's variant field). The `tables` fields choose what the tables hold:

  tables.num_seeds        seeds config.seed, config.seed + 1, ... (ignored when tables.seeds is set)
  tables.seeds            explicit seeds, e.g. `--config.tables.seeds="(0, 5, 7)"`
  tables.table4_rows      Table 4's rows (experiments/mtl_table4.py's names); Table 5 lists their
                          expression accuracy beside its baselines
  tables.table5_networks  the plain CNN baselines (backbones of mtl_flax.models.multitask)
  tables.handcrafted      'lbp', 'lpq', 'eoh' (+ linear SVM)
  tables.handcrafted_grid cells (rows, cols) of the descriptors
  tables.svm_c            the linear SVM's C
"""
import ml_collections

from configs import mtl

TABLE4_ROWS = ("single", "hard_s1", "hard_s2", "hard_s3", "hard_s4", "cross_stitch", "laf",
               "tucker", "tt", "laf_ada", "tucker_ada", "tt_ada")


def get_config(arg=None):
  """configs/mtl.py's config for `arg` with the `tables` fields added."""
  config = mtl.get_config(arg)
  tokens = {t.strip() for t in (arg or "").split(",")}
  full_size = "resnet34" in tokens
  config.tables = ml_collections.ConfigDict({
      "num_seeds": 3,
      "seeds": ml_collections.config_dict.placeholder(tuple),
      "table4_rows": TABLE4_ROWS,
      # The paper-sized AlexNet / VGG-16 beside ResNet-34; their 1/8-width layouts on the CPU.
      "table5_networks": ("alexnet", "vgg") if full_size else ("alexnet_tiny", "vgg_tiny"),
      "handcrafted": ("lbp", "lpq", "eoh"),
      "handcrafted_grid": (7, 7),
      "svm_c": 1.0,
  })
  return config
