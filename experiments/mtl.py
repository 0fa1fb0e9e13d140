r"""Trains the multi-task networks (expressions + landmarks); see configs/mtl.py for commands.

  python -m experiments.mtl --config configs/mtl.py[:variant] --workdir DIR

The run resumes from the latest checkpoint in DIR/checkpoints.

Several hosts: start one process per host with the same flags plus ``--coordinator_address
HOST:PORT --num_processes N --process_id I``. Each process feeds its share of every global batch
(``config.batch_size`` per task, divided among the processes), the checkpoints are written by
every process through Orbax into the same DIR (a folder all hosts share), and process 0 alone
writes the metrics, plots and summary.
"""
from absl import app
from absl import flags
from absl import logging
from ml_collections import config_flags

from mtl_flax import train
from subtle_core import cli
from subtle_core import distributed

_CONFIG = config_flags.DEFINE_config_file("config", None, "Training config (configs/mtl.py).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output / checkpoint directory.")
flags.mark_flags_as_required(["config", "workdir"])
_PROCESSES = distributed.define_flags()


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  distributed.initialize_from_flags(_PROCESSES)  # before any other JAX use
  summary = train.train_and_evaluate(_CONFIG.value, _WORKDIR.value)
  logging.info("summary: %s", summary)
  if distributed.is_main_process():
    _print_summary(summary)
  distributed.wait_for_all("experiments.mtl finished")  # while process 0 writes


def _print_summary(summary):
  data = "; ".join(f"{task}: {source}" for task, source in summary["data"].items())
  print(f"step {summary['step']}: {summary['eval']} (evaluated: {summary['evaluated']}; "
        f"data: {data})")
  subsets = [s for s in ("common", "challenging", "full")
             if f"landmark_nme_inter_pupil_{s}" in (summary["eval"] or {})]
  if subsets:  # an official 300-W root: the paper's Table 6
    print("300-W inter-pupil NME per test subset: " + ", ".join(
        f"{s} {summary['eval'][f'landmark_nme_inter_pupil_{s}']:.4f}" for s in subsets))


if __name__ == "__main__":
  cli.run(main)
