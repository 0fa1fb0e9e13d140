r"""Multi-task learning of expressions and landmarks with tensor trace norms and ADA.

Default (laptop / CPU): a tiny ResNet on 64 x 64 crops of the synthetic face datasets (the
planted variant, docs/synthetic_mtl.md: 10 labelled expression faces per class for training,
1,600 landmark faces), 300 steps, a few minutes:

  python -m experiments.mtl --config configs/mtl.py --workdir runs/mtl

The paper's setting (ResNet-34, SGD lr 0.01 with momentum, batch 256 per task; for a GPU;
add `--config.model.dtype=bfloat16` for mixed precision):

  python -m experiments.mtl --config configs/mtl.py:resnet34 --workdir runs/mtl_r34 \
    --config.data.expression.source=image_folder --config.data.expression.path=/data/LSEMSW \
    --config.data.landmarks.source=300w --config.data.landmarks.path=/data/300W

A 300-W root with the official layout (lfpw/, helen/, afw/, ibug/) trains on lfpw/trainset +
helen/trainset + afw only and reports the inter-pupil NME of the common, challenging and full
test subsets (the paper's Table 6); Menpo as extra training data:
`--config.data.landmarks.extra_paths=/data/menpo/trainset`. A root without those folders is read
as a flat folder, `test_fraction` of it held out at random.

A tiny smoke run (tests, seconds):

  python -m experiments.mtl --config configs/mtl.py:runlocal --workdir /tmp/mtl_smoke

Variants are comma-separated tokens after the colon, applied in order:
  resnet34 | runlocal          base setting (default: the CPU setting)
  none | laf | tucker | tt     trace-norm regulariser (sharing 'trace_norm'; 'none' = no penalty)
  single                       independent networks (sharing 'none', no penalty)
  hard<k>                      hard sharing of the first k block convolutions (e.g. hard6)
  hardstage<s>                 hard sharing up to the end of stage s (1-4; ResNet-34: k=6,14,26,32)
  cross_stitch                 cross-stitch units between the task networks
  ada | alternating            adversarial domain alignment (GRL / alternating updates)
e.g. `configs/mtl.py:runlocal,tucker,ada`. Any field can be overridden with
`--config.FIELD=VALUE` (e.g. `--config.regulariser.strength=0.05`). Runs resume automatically
from `--workdir`.
"""
import ml_collections

REGULARISERS = ("none", "laf", "tucker", "tt")


def _data_config(source, num, test_fraction):
  return ml_collections.ConfigDict({
      # 'synthetic' (mtl_flax.data.synthetic), or a reader: 'image_folder' (LSEMSW style) for the
      # expression task, '300w' for the landmark task.
      "source": source,
      "path": "",  # dataset root for a reader
      "test_path": "",  # optional separate test root (else a held-out split of `path`)
      "num": num,  # synthetic samples
      "test_fraction": test_fraction,  # held out for evaluation (by subject where known)
      "face_detection": False,  # Haar face crop for image_folder datasets
      # Where a reader's decoded crops are cached (first start decodes on every core, later
      # starts memory-map them; added or changed files are decoded again): '' = the user's
      # cache folder ($XDG_CACHE_HOME/subtle/datasets, else ~/.cache/subtle/datasets), never
      # inside the dataset root; a folder; or 'none' (decode at every start, write nothing).
      "cache_dir": "",
      # '300w' only: extra training folders, comma-separated (e.g. Menpo's 68-point faces;
      # 39-point profile faces are skipped).
      "extra_paths": "",
  })


def get_config(arg=None):
  """Returns the MTL config; `arg` is the comma-separated variant list (see module doc)."""
  config = ml_collections.ConfigDict()
  config.seed = 0
  # PRNG of the run's root key. 'rbg' compiles the initialisation much faster on CPU (used by
  # the tiny smoke variant) but its numbers may differ between backends; threefry is portable.
  config.prng_impl = "threefry2x32"
  config.tasks = ("expression", "landmarks")
  # 64 on CPU (the paper's 96 x 96 with the resnet34 variant): 0.44 times the pixels of 96, and
  # the planted displacements are still 0.7-1.9 pixels.
  config.image_size = 64

  config.model = ml_collections.ConfigDict({
      "backbone": "tiny",  # 'resnet34' | 'resnet18' | 'tiny'
      "num_classes": 13,
      "num_landmarks": 68,
      "sharing": "trace_norm",  # 'none' | 'trace_norm' | 'hard' | 'cross_stitch'
      # k block convolutions shared by sharing='hard'; -s = up to the end of stage s.
      "hard_share_convs": 0,
      # Computation dtype of the activations: 'float32' | 'bfloat16' (mixed precision: the
      # parameters, optimiser state, losses and trace-norm factorisations stay float32).
      "dtype": "float32",
  })
  config.regulariser = ml_collections.ConfigDict({
      "kind": "laf",  # 'none' | 'laf' | 'tucker' | 'tt'
      "strength": 0.01,  # one strength for the whole network
      # 'exact' (QR + SVD) | 'gram' (eigh of the small Gram matrix; the same values, faster on
      # ResNet-34, and the resnet34 variant's default) | 'randomized' (top-rank singular values
      # only) | 'newton_schulz' (matrix products only, for accelerators; singular values below
      # ~1e-3 s_max masked softly)
      "method": "exact",
      "gammas": ml_collections.config_dict.placeholder(tuple),  # per-unfolding weights
  })
  config.ada = ml_collections.ConfigDict({
      "enabled": False,
      "mode": "grl",  # 'grl' (gradient reversal) | 'alternating'
      "weight": 1.0,  # scales lambda_p = 2 / (1 + exp(-10 p)) - 1
  })
  config.optimizer = ml_collections.ConfigDict({
      "name": "sgd",  # 'sgd' (with momentum) | 'adam'
      "learning_rate": 0.01,
      "momentum": 0.9,
      "weight_decay": 0.0,
      "discriminator_learning_rate": 0.01,
  })
  config.landmark_loss = "l1"  # 'l1' | 'l2' (per face: sum over the 136 coordinates)
  config.nme_normalisation = "inter_pupil"  # 'inter_pupil' | 'inter_ocular'

  config.batch_size = 32  # per task
  config.eval_batch_size = 64
  # 300 steps: about 37 epochs of the 128 labelled expression faces (single-task training fits
  # them by step 150) and 6 of the 1,600 landmark faces.
  config.num_steps = 300
  config.log_every = 20
  config.eval_every = 300
  config.checkpoint_every = 100
  config.keep_checkpoints = 2

  config.augment = ml_collections.ConfigDict({
      "enabled": True,
      "expression_flip": 0.5,
      "landmark_flip": 0.5,
      "max_rotation_deg": 15.0,
      "scale_range": (0.9, 1.1),
      "max_shift": 0.05,
      "noise_std": 3.0,
  })
  config.data = ml_collections.ConfigDict({
      # 40 faces per class; 3/4 of the subjects held out, so that training sees few labels and the
      # test set (about 390 faces) can tell rows apart.
      "expression": _data_config("synthetic", 520, 0.75),
      "landmarks": _data_config("synthetic", 2000, 0.2),
  })
  # The synthetic data (docs/synthetic_mtl.md): 'planted' (expression classes are small landmark
  # displacements that the landmark faces show too), 'control' (neutral landmark faces) or
  # 'independent' (no planted link). Set this field; the tasks' fields follow it.
  config.data.synthetic = "planted"
  for task in ("expression", "landmarks"):
    config.data[task].synthetic = config.data.get_ref("synthetic")
  config.embedding = ml_collections.ConfigDict({
      "method": "pca",  # 'pca' | 'tsne' (needs scikit-learn)
      "max_points": 500,  # per dataset
  })
  config.plots = True

  for token in (arg or "").split(","):
    token = token.strip()
    if token:
      apply_variant(config, token)
  return config


def apply_variant(config, token):
  """Mutates `config` for one variant token (see the module docstring)."""
  if token == "resnet34":
    config.model.backbone = "resnet34"
    config.image_size = 96
    config.batch_size = 256
    config.eval_batch_size = 256
    config.num_steps = 60_000
    config.log_every = 100
    config.eval_every = 5_000
    config.checkpoint_every = 5_000
    config.keep_checkpoints = 3
    config.optimizer.weight_decay = 5e-4
    # The exact norms at a quarter of the cost of QR + SVD for Tucker and TT on ResNet-34's wide
    # unfoldings (README, MTL "Speed"); it falls back to QR + SVD where a kept singular value is
    # too small for the squared matrix.
    config.regulariser.method = "gram"
    config.data.expression.num = 20_000
    config.data.landmarks.num = 10_000
    config.data.expression.test_fraction = 0.2
    config.embedding.max_points = 2000
  elif token == "runlocal":
    config.prng_impl = "rbg"
    config.image_size = 32
    config.batch_size = 4
    config.eval_batch_size = 8
    config.num_steps = 3
    config.log_every = 1
    config.eval_every = 3
    config.checkpoint_every = 2
    config.data.expression.num = 26
    config.data.landmarks.num = 16
    config.data.expression.test_fraction = 0.25
    config.data.landmarks.test_fraction = 0.25
    config.embedding.max_points = 16
  elif token in REGULARISERS:
    config.model.sharing = "trace_norm"
    config.model.hard_share_convs = 0
    config.regulariser.kind = token
  elif token == "single":
    config.model.sharing = "none"
    config.model.hard_share_convs = 0
    config.regulariser.kind = "none"
  elif token.startswith("hardstage"):
    config.model.sharing = "hard"
    config.model.hard_share_convs = -int(token[len("hardstage"):])  # resolved with the backbone
    config.regulariser.kind = "none"
  elif token.startswith("hard"):
    config.model.sharing = "hard"
    config.model.hard_share_convs = int(token[len("hard"):])
    config.regulariser.kind = "none"
  elif token == "cross_stitch":
    config.model.sharing = "cross_stitch"
    config.model.hard_share_convs = 0
    config.regulariser.kind = "none"
  elif token == "ada":
    config.ada.enabled = True
    config.ada.mode = "grl"
  elif token == "alternating":
    config.ada.enabled = True
    config.ada.mode = "alternating"
  else:
    raise ValueError(f"configs/mtl.py: unknown variant {token!r}")
