"""Extracts the LBP-TOP features of a raw micro-expression database (see configs/features.py)."""
from absl import app
from absl import flags
from ml_collections import config_flags

from tgsr_jax import extraction
from tgsr_jax import settings
from subtle_core import cli

_CONFIG = config_flags.DEFINE_config_file("config", None, "Extraction config file.",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output folder (feature file, metadata, cache).")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments {argv[1:]}")
  job = settings.ExtractionJob.from_config(_CONFIG.value)  # read and checked once, here
  result = extraction.run_extraction(job, _WORKDIR.value)
  print(f"clips from: {result.source}")
  print(f"wrote {result.mat_path} ({len(result.labels)} clips: {result.num_extracted} extracted, "
        f"{result.num_cached} from the cache); metadata {result.metadata_path}")
  if result.bad:
    print(f"skipped {len(result.bad)} bad clip(s), listed in {result.report_path}")


if __name__ == "__main__":
  cli.run(main)
