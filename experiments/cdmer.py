r"""TGSR CDMER protocol: ``python -m experiments.cdmer --config configs/cdmer.py --workdir DIR``.

Runs TGSR's sweep and, with ``config.methods`` / ``config.selection`` (default: every method of
Tables II/III, the oracle and the label-free rules), the whole comparison on the same data; prints
summary.md (one table per selection rule). TGSR alone: ``--config.methods=TGSR
--config.selection=oracle``.

Several hosts: start one process per host with the same flags plus ``--coordinator_address
HOST:PORT --num_processes N --process_id I``; each solves its share of TGSR's grid chunks, and
process 0 gathers them and alone writes ``--workdir`` (see :mod:`tgsr_jax.experiment`).

Only parses flags; the work is :func:`tgsr_jax.experiment.run`, which notebooks call directly.
"""
import pathlib

from absl import app
from absl import flags
from ml_collections import config_flags

from tgsr_jax import experiment
from tgsr_jax import settings
from subtle_core import cli
from subtle_core import distributed

_CONFIG = config_flags.DEFINE_config_file("config", "configs/cdmer.py",
                                          "Experiment config file (configs/cdmer.py[:variant]).")
_WORKDIR = flags.DEFINE_string("workdir", "runs/cdmer", "Output folder (reruns resume from it).")
_PROCESSES = distributed.define_flags()


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  distributed.initialize_from_flags(_PROCESSES)  # before any other JAX use
  cdmer_settings = settings.CdmerSettings.from_config(_CONFIG.value)  # read and checked once
  experiment.run(cdmer_settings, _WORKDIR.value)
  if distributed.is_main_process():
    print((pathlib.Path(_WORKDIR.value) / "summary.md").read_text())
  # The others wait while process 0 runs the comparison and writes (see tgsr_jax.experiment).
  distributed.wait_for_all("experiments.cdmer finished")


if __name__ == "__main__":
  cli.run(main)
