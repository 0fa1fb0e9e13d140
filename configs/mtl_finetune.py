r"""Fine-tuning a trained MTL expression network with subject-independent k-fold CV.

Default (CPU): synthetic basic expressions (CK+ codes), 5 folds, from the default MTL run:

  python -m experiments.mtl --config configs/mtl.py --workdir runs/mtl
  python -m experiments.mtl_finetune --config configs/mtl_finetune.py \
    --config.checkpoint_workdir=runs/mtl --workdir runs/mtl_finetune

CK+ (5 folds) or Oulu-CASIA (10 folds) from a ResNet-34 MTL run (GPU):

  python -m experiments.mtl_finetune --config configs/mtl_finetune.py:ckplus,resnet34 \
    --config.data.path=/data/CK+ --config.checkpoint_workdir=runs/mtl_r34 --workdir runs/ft_ck
  python -m experiments.mtl_finetune --config configs/mtl_finetune.py:oulu_casia,resnet34 \
    --config.data.path=/data/Oulu-CASIA --config.checkpoint_workdir=runs/mtl_r34 \
    --workdir runs/ft_oulu

Tiny smoke run (tests): `configs/mtl_finetune.py:runlocal`. An empty `checkpoint_workdir`
trains from a random initialisation (the no-transfer baseline; `backbone` and `image_size`
then choose the network). Finished folds are not rerun when the same workdir is used again.
"""
import ml_collections


def get_config(arg=None):
  """Returns the fine-tuning config; `arg`: comma-separated variants (see module doc)."""
  config = ml_collections.ConfigDict()
  config.seed = 0
  config.prng_impl = "threefry2x32"  # 'rbg' compiles faster on CPU (runlocal)
  config.checkpoint_workdir = ""  # an experiments.mtl workdir; "" = from scratch
  config.backbone = "tiny"  # only used from scratch
  config.image_size = 96  # only used from scratch (else the MTL run's)
  config.data = ml_collections.ConfigDict({
      "source": "synthetic",  # 'synthetic' | 'ckplus' | 'oulu_casia'
      "path": "",
      "num_subjects": 20,  # synthetic
      "peak_frames": 3,  # last frames per sequence (CK+, Oulu-CASIA)
      "face_detection": True,  # Haar crop for CK+ / Oulu-CASIA
      # Cache of the decoded crops (CK+, Oulu-CASIA): '' = the user's cache folder
      # ($XDG_CACHE_HOME/subtle/datasets, else ~/.cache/subtle/datasets), never inside the
      # dataset root; a folder; or 'none' (decode at every start, write nothing).
      "cache_dir": "",
  })
  config.num_folds = 5
  config.steps = 300  # per fold
  config.batch_size = 32
  config.eval_batch_size = 64
  config.optimizer = "sgd"  # 'sgd' (momentum) | 'adam'
  config.learning_rate = 0.01
  config.momentum = 0.9
  config.freeze_trunk = False  # train only the new classifier
  config.flip_probability = 0.5
  config.log_every = 50

  for token in (arg or "").split(","):
    token = token.strip()
    if not token:
      continue
    if token == "ckplus":
      config.data.source = "ckplus"
      config.num_folds = 5
    elif token == "oulu_casia":
      config.data.source = "oulu_casia"
      config.num_folds = 10
    elif token == "resnet34":
      config.backbone = "resnet34"
      config.steps = 3000
      config.batch_size = 64
      config.eval_batch_size = 256
      config.log_every = 100
    elif token == "runlocal":
      config.prng_impl = "rbg"
      config.image_size = 32
      config.data.num_subjects = 4
      config.num_folds = 2
      config.steps = 2
      config.batch_size = 4
      config.eval_batch_size = 8
      config.log_every = 1
    else:
      raise ValueError(f"configs/mtl_finetune.py: unknown variant {token!r}")
  return config
