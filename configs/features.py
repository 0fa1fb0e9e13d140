r"""LBP-TOP feature extraction of a raw micro-expression database into a benchmark-format file.

CASME II as released (`{root}/CASME2_RAW_selected/sub*/EP*/img*.jpg` and the coding sheet
`{root}/CASME2-coding-20140508.xlsx`):

  python -m experiments.extract_features --config configs/features.py --workdir runs/features \
    --config.database=casme2 --config.root=/data/CASME2

SMIC (`{root}/SMIC/{HS,VIS,NIR}/s*/micro/{negative,positive,surprise}/*/`):

  python -m experiments.extract_features --config configs/features.py --workdir runs/features \
    --config.database=smic_vis --config.root=/data

Any other database from a CSV with columns clip_dir, label, subject, database:

  python -m experiments.extract_features --config configs/features.py --workdir runs/features \
    --config.database=csv --config.root=/data/clips.csv

A tiny run on a generated database (seconds; also what the tests run):

  python -m experiments.extract_features --config configs/features.py:runlocal \
    --workdir /tmp/features_smoke

Writes `{workdir}/{DB}.mat` ({DB}_micro_feature n x 15045, {DB}_micro_label n x 1),
`{workdir}/{DB}_clips.csv` and, when clips are bad, `{workdir}/{DB}_bad_clips.txt`; per-clip
features are cached in `{workdir}/cache`, so a rerun only extracts changed clips.
"""
import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The extraction config; `arg` 'runlocal' writes and extracts a tiny generated database."""
  config = ml_collections.ConfigDict()
  # 'casme2', 'smic_hs', 'smic_vis', 'smic_nir' or 'csv'.
  config.database = "casme2"
  # Folder holding the database (for 'csv' the CSV file). Empty: a generated database is written
  # under {workdir}/synthetic_raw first (needs tgsr_jax.synthetic).
  config.root = ""
  config.sheet = ""  # CASME II coding sheet; default {root}/CASME2-coding-20140508.xlsx
  config.margin = 0.1  # relative margin around the detected face
  config.tim_length = 16
  config.size = 112
  config.interpolation = False  # bilinear LBP neighbours instead of rounded (classic)
  config.layout = "benchmark"  # or 'region_major'
  config.skip_bad = False
  config.whole_frame_fallback = False
  config.num_clips = 0  # generated database only: clips to write (0: the generator's default)
  config.seed = 0  # generated database only
  config.num_workers = 0  # reader threads (0: min(4, cpu count))
  config.out_name = ""  # feature file stem; default the database name (CASME2, SMIC_VIS, ...)
  if arg == "runlocal":
    config.database = "smic_vis"
    config.num_clips = 6
  elif arg:
    raise ValueError(f"unknown variant {arg!r}; expected 'runlocal' or nothing")
  return config
