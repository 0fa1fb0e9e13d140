r"""Fine-tunes a trained MTL expression network with subject-independent k-fold CV.

  python -m experiments.mtl_finetune --config configs/mtl_finetune.py[:variant] --workdir DIR

See configs/mtl_finetune.py for the CK+ / Oulu-CASIA commands.
"""
from absl import app
from absl import flags
from ml_collections import config_flags

from mtl_flax import finetune
from subtle_core import cli

_CONFIG = config_flags.DEFINE_config_file("config", None,
                                          "Fine-tuning config (configs/mtl_finetune.py).",
                                          lock_config=True)
_WORKDIR = flags.DEFINE_string("workdir", None, "Output directory.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"unexpected arguments: {argv[1:]}")
  summary = finetune.finetune(_CONFIG.value, _WORKDIR.value)
  accs = ", ".join(f"{a:.3f}" for a in summary["fold_accuracies"])
  print(f"{summary['num_folds']}-fold accuracy: {summary['mean_accuracy']:.4f} "
        f"+- {summary['std_accuracy']:.4f} (folds: {accs}; data: {summary['data']}; weights: "
        f"{summary['pretrained_checkpoint'] or 'random initialisation'})")


if __name__ == "__main__":
  cli.run(main)
