"""Run folders of MTL training: the fingerprint a run was made under, checked on every start.

A training run's results are its checkpoints and summary; what determines them is its config,
less the fields that change no result (`NON_RESULT_FIELDS`). That fingerprint is kept beside the
run (`fingerprint.json`, a `subtle_core.runfolder.ResultStore` entry) and checked when the
folder is used again: a resumed training run warns with the fields that differ (and continues
under the new values); a finished Table 4 row made under other settings is refused.
"""
from __future__ import annotations

import json
import logging
import pathlib

from subtle_core import atomic
from subtle_core import distributed
from subtle_core import runfolder

# Config fields that change no result of a run (logging, evaluation and checkpoint cadence).
NON_RESULT_FIELDS = ("log_every", "eval_every", "checkpoint_every", "keep_checkpoints", "plots",
                     "eval_batch_size")
FINGERPRINT_NAME = "fingerprint"


def _as_dict(config) -> dict:
  if isinstance(config, dict):
    return config
  return json.loads(config.to_json_best_effort())


def result_fields(config, ignore=NON_RESULT_FIELDS) -> dict:
  """Dotted field name -> value of every config field that can change a result."""
  def flat(d, prefix=""):
    out = {}
    for k, v in d.items():
      if isinstance(v, dict):
        out.update(flat(v, f"{prefix}{k}."))
      else:
        out[prefix + k] = v
    return out
  return {k: v for k, v in flat(_as_dict(config)).items() if k.split(".")[0] not in ignore}


def run_fingerprint(config, ignore=NON_RESULT_FIELDS) -> runfolder.Fingerprint:
  """The fingerprint of a run config: one field per dotted config field (so a mismatch names it)."""
  return runfolder.fingerprint(**result_fields(config, ignore))


def _names(differences: list[str]) -> list[str]:
  return sorted({d.split(": ", 1)[0] for d in differences})


def config_differences(saved: dict, config, ignore=NON_RESULT_FIELDS) -> list[str]:
  """Dotted names of the fields where a saved `config.json` differs from `config`.

  Args:
    saved: the saved config, as read from JSON.
    config: the ConfigDict of this run (or its dict).
    ignore: top-level fields left out (by default those that change no result).

  Returns:
    Sorted field names, e.g. ['optimizer.learning_rate', 'regulariser.kind'].
  """
  now = run_fingerprint(config, ignore)
  if runfolder.fingerprint(**result_fields(saved, ignore)).digest == now.digest:
    return []
  return _names(runfolder.differences(run_fingerprint(saved, ignore).to_json(), now))


def check_run(workdir, config, *, on_mismatch: runfolder.OnMismatch, hint: str = "") -> list[str]:
  """Checks the fingerprint saved in `workdir` against `config`; returns the differing fields.

  Runs saved before fingerprints were kept are compared through their `config.json`. With
  `on_mismatch='refuse'` a difference raises `runfolder.FingerprintMismatch` (naming the fields,
  then `hint`); with 'warn' it is logged; with 'recompute' it is only returned.
  """
  workdir = pathlib.Path(workdir)
  store = runfolder.ResultStore(workdir)
  now = run_fingerprint(config)
  saved = store.saved_fingerprint(FINGERPRINT_NAME)
  path = store.path(FINGERPRINT_NAME)
  if saved is None and (workdir / "config.json").is_file():
    saved = run_fingerprint(json.loads((workdir / "config.json").read_text())).to_json()
    path = workdir / "config.json"
  if saved is None or saved.get("digest") == now.digest:
    return []
  differences = runfolder.differences(saved, now)
  if on_mismatch == "refuse":
    raise runfolder.FingerprintMismatch(path, differences, hint)
  if on_mismatch == "warn":
    logging.warning("%s: this run's config differs from the saved one in %s; a resumed run "
                    "continues under the new values", workdir, ", ".join(_names(differences)))
  return _names(differences)


def save_run(workdir, config) -> None:
  """Writes `config.json` (the whole config, read by fine-tuning) and the run's fingerprint.

  On several processes only process 0 writes.
  """
  if not distributed.is_main_process():
    return
  workdir = pathlib.Path(workdir)
  runfolder.ResultStore(workdir).save_json(FINGERPRINT_NAME, run_fingerprint(config),
                                           {"config": "config.json"})
  atomic.write_text(workdir / "config.json",
                    json.dumps(_as_dict(config), indent=2, sort_keys=True) + "\n")
