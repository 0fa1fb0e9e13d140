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

(a CSV listing clips of several databases needs --config.csv_database=NAME to pick one).

A tiny run on a generated synthetic database (seconds; also what the tests run). It writes
`{workdir}/SYNTHETIC_SMIC_VIS_seed0.mat`, never a file named like a real database's:

  python -m experiments.extract_features --config configs/features.py:runlocal \
    --workdir /tmp/features_smoke

Writes `{workdir}/{DB}.mat` ({DB}_micro_feature n x 15045, {DB}_micro_label n x 1),
`{workdir}/{DB}_clips.csv` and, when clips are bad, `{workdir}/{DB}_bad_clips.txt`; per-clip
features are cached in `{workdir}/cache`, so a rerun only extracts changed clips.
"""
import ml_collections


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """The extraction config; `arg` 'runlocal' writes and extracts a tiny synthetic database."""
  config = ml_collections.ConfigDict()
  # 'casme2', 'smic_hs', 'smic_vis', 'smic_nir' or 'csv'.
  config.database = "casme2"
  # Folder holding the database (for 'csv' the CSV file). Required unless synthetic is True.
  config.root = ""
  # True: extract a generated synthetic database (written under {workdir}/synthetic_raw first)
  # instead of a real one; root must then be empty. The feature file is named
  # SYNTHETIC_{DB}_seed{seed}.mat (unless out_name is given) and the run says so.
  config.synthetic = False
  # database='csv' only: keep the clips of this `database` column value (needed when the CSV
  # lists several databases); it also names the {DB}_micro_* variables.
  config.csv_database = ""
  config.sheet = ""  # CASME II coding sheet; default {root}/CASME2-coding-20140508.xlsx
  config.margin = 0.1  # relative margin around the detected face
  config.tim_length = 16
  config.size = 112
  config.interpolation = False  # bilinear LBP neighbours instead of rounded (classic)
  config.layout = "benchmark"  # or 'region_major'
  config.skip_bad = False
  config.whole_frame_fallback = False
  config.num_clips = 0  # synthetic only: clips to write (0: the generator's default)
  config.seed = 0  # synthetic only
  config.num_workers = 0  # reader threads (0: min(4, cpu count))
  # Feature file stem; default the database name (CASME2, SMIC_VIS, ...), or
  # SYNTHETIC_{DB}_seed{seed} for a synthetic database.
  config.out_name = ""
  if arg == "runlocal":
    config.database = "smic_vis"
    config.synthetic = True
    config.num_clips = 6
  elif arg:
    raise ValueError(f"unknown variant {arg!r}; expected 'runlocal' or nothing")
  return config
