"""Fine-tuning from an MTL checkpoint with subject-independent k-fold CV (mtl_flax.finetune)."""
import functools
import json

import cv2
import jax
import numpy as np
import pytest

from configs import mtl as mtl_configs
from configs import mtl_finetune as finetune_configs
from mtl_flax import checkpoint as checkpoint_lib
from mtl_flax import finetune
from mtl_flax import train
from mtl_flax.data import pipeline

SIZE = 16


def _tiny_mtl_config():
  # The same computation as tests/test_mtl_train.py's tiny config (shared compilations).
  config = mtl_configs.get_config("runlocal,laf,ada")
  config.image_size = SIZE
  config.batch_size = 4
  config.eval_batch_size = 4
  config.num_steps = 4
  config.checkpoint_every = 2
  config.plots = False
  return config


def _tiny_datasets():
  rng = np.random.default_rng(0)
  images = lambda n: rng.integers(0, 256, (n, SIZE, SIZE, 3), dtype=np.uint8)
  train_sets = {"expression": pipeline.TaskData(images(8), rng.integers(0, 13, 8).astype(np.int32)),
                "landmarks": pipeline.TaskData(images(8), rng.uniform(0.3, 0.7, (8, 68, 2))
                                               .astype(np.float32))}
  test_sets = {k: v.subset(np.arange(4)) for k, v in train_sets.items()}
  return train_sets, test_sets


def _ckplus_tree(root, num_subjects=5):
  rng = np.random.default_rng(1)
  for s in range(1, num_subjects + 1):
    for q, code in enumerate((1, 5, 7), start=1):
      subject, seq = f"S{s:03d}", f"{q:03d}"
      for f in range(1, 4):
        path = root / "cohn-kanade-images" / subject / seq / f"{subject}_{seq}_{f:08d}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        cv2.imwrite(str(path), rng.integers(0, 256, (30, 30), dtype=np.uint8))
      label = root / "Emotion" / subject / seq / f"{subject}_{seq}_00000003_emotion.txt"
      label.parent.mkdir(parents=True, exist_ok=True)
      label.write_text(f"   {code:.7e}\n")


def test_finetune_from_mtl_checkpoint_with_subject_folds(tmp_path, monkeypatch):
  mtl_dir = tmp_path / "mtl"
  train.train_and_evaluate(_tiny_mtl_config(), mtl_dir, datasets=_tiny_datasets(),
                           stop_at_step=2)

  # The trunk handed to fine-tuning is the expression task's slice of the checkpoint.
  trunk, trunk_vars, _ = finetune.load_pretrained_trunk(mtl_dir)
  model = train.build_model(_tiny_mtl_config())
  tx = train.make_optimizer(model, _tiny_mtl_config().optimizer)
  shapes = jax.eval_shape(functools.partial(train.init_state, model, tx,
                                            image_shape=(SIZE, SIZE, 3)), jax.random.key(0))
  ckpt = checkpoint_lib.Checkpointer(mtl_dir)
  try:
    assert ckpt.read_metadata()["step"] == 2
    state = ckpt.restore_latest(jax.tree_util.tree_map(lambda s: np.zeros(s.shape, s.dtype),
                                                       shapes))
  finally:
    ckpt.close()
  task = model.tasks.index("expression")
  for name in ("conv00", "conv01", "proj07"):
    np.testing.assert_array_equal(trunk_vars["params"][name]["kernel"],
                                  state["params"]["trunk"][name]["kernel"][task])
  np.testing.assert_array_equal(trunk_vars["batch_stats"]["bn01"]["mean"],
                                state["batch_stats"]["trunk"]["bn01"]["mean"][task])

  _ckplus_tree(tmp_path / "ck")
  config = finetune_configs.get_config("ckplus,runlocal")
  config.checkpoint_workdir = str(mtl_dir)
  config.data.path = str(tmp_path / "ck")
  config.data.face_detection = False
  config.data.cache_dir = str(tmp_path / "cache")
  config.num_folds = 2
  out = tmp_path / "ft"
  summary = finetune.finetune(config, out)
  # The frames were decoded into the cache, which later runs memory-map.
  assert len(list((tmp_path / "cache").glob("ckplus-ck-*.npy"))) == 1
  images, *_ = finetune.load_finetune_data(config.data, image_size=SIZE, seed=0)
  assert isinstance(images.base, np.memmap) or isinstance(images, np.memmap)
  assert summary["num_folds"] == 2 and len(summary["fold_accuracies"]) == 2
  assert summary["class_names"] == ["anger", "happy", "surprise"]  # codes 1, 5, 7 re-indexed
  assert summary["num_samples"] == 5 * 3 * 3 and summary["num_subjects"] == 5
  assert summary["mean_accuracy"] == pytest.approx(np.mean(summary["fold_accuracies"]))
  assert summary["data"] == f"ckplus {tmp_path / 'ck'} (last 3 frames of each sequence)"
  assert summary["pretrained_step"] == 2
  assert summary["pretrained_checkpoint"] == (f"{mtl_dir.absolute() / 'checkpoints' / '2'} "
                                              "(the newest intact checkpoint)")
  folds = [json.loads((out / f"fold_{k:02d}.json").read_text())["result"] for k in range(2)]
  assert not set(folds[0]["test_subjects"]) & set(folds[1]["test_subjects"])
  assert sorted(folds[0]["test_subjects"] + folds[1]["test_subjects"]) == [1, 2, 3, 4, 5]
  assert sum(f["num_test"] for f in folds) == 45
  for f in folds:
    assert f["num_train"] + f["num_test"] == 45
    assert 0.0 <= f["accuracy"] <= 1.0

  # Finished folds are not rerun.
  def fail(*args, **kwargs):
    raise AssertionError("a finished fold was rerun")
  monkeypatch.setattr(finetune, "run_fold", fail)
  config.log_every = 7  # changes no result
  again = finetune.finetune(config, out)
  assert again["fold_accuracies"] == summary["fold_accuracies"]

  # Another fold split in the same workdir reruns every fold: no fold of the 2-fold split is
  # mixed into the 3-fold summary.
  ran = []

  def record(config, fold, train_idx, test_idx, *args):
    ran.append(fold)
    return {"fold": fold, "accuracy": 0.5, "num_train": int(len(train_idx)),
            "num_test": int(len(test_idx))}
  monkeypatch.setattr(finetune, "run_fold", record)
  config.num_folds = 3
  three = finetune.finetune(config, out)
  assert ran == [0, 1, 2] and three["fold_accuracies"] == [0.5] * 3
  folds = [json.loads((out / f"fold_{k:02d}.json").read_text())["result"] for k in range(3)]
  assert sorted(sum((f["test_subjects"] for f in folds), [])) == [1, 2, 3, 4, 5]
  assert sum(f["num_test"] for f in folds) == 45
  ran.clear()
  finetune.finetune(config, out)
  assert ran == []
  config.seed = 1  # another seed: other splits and initialisations
  finetune.finetune(config, out)
  assert ran == [0, 1, 2]


def test_unknown_finetune_optimizer_is_refused():
  config = finetune_configs.get_config("runlocal")
  config.optimizer = "SGD"
  trunk = train.multitask._backbone("tiny", np.float32)  # pylint: disable=protected-access
  with pytest.raises(ValueError, match="optimizer: expected 'sgd' or 'adam', got 'SGD'"):
    finetune.make_fold_functions(config, finetune.Classifier(trunk=trunk, num_classes=3))


def test_pretrained_trunk_needs_an_mtl_workdir(tmp_path):
  with pytest.raises(FileNotFoundError, match="config.json"):
    finetune.load_pretrained_trunk(tmp_path)


def test_finetune_data_config_errors_name_the_fields(tmp_path):
  config = finetune_configs.get_config("runlocal")
  config.data.path = "/data/CK+"
  with pytest.raises(ValueError, match=r"data\.path is set \(/data/CK\+\) but data\.source is "
                     r"'synthetic'.*'ckplus' or 'oulu_casia'"):
    finetune.check_data_config(config.data)
  config.data.source = "ck"
  with pytest.raises(ValueError, match=r"data\.source: unknown source 'ck'; expected one of "
                     r"'synthetic', 'ckplus', 'oulu_casia'"):
    finetune.check_data_config(config.data)
  config.data.source = "oulu_casia"
  config.data.path = str(tmp_path / "nowhere")
  with pytest.raises(ValueError, match=r"data\.path: .*nowhere does not exist"):
    finetune.check_data_config(config.data)
  # A refused start writes nothing.
  with pytest.raises(ValueError, match=r"data\.path"):
    finetune.finetune(config, tmp_path / "ft")
  assert not (tmp_path / "ft").exists()
  config.data.source, config.data.path = "synthetic", ""
  config.checkpoint_workdir = str(tmp_path / "no_run")
  with pytest.raises(FileNotFoundError, match=r"checkpoint_workdir: .*no_run does not exist"):
    finetune.finetune(config, tmp_path / "ft")
  assert not (tmp_path / "ft").exists()


def test_pretrained_weights_skip_a_damaged_latest_checkpoint(tmp_path, caplog):
  mtl_dir = tmp_path / "mtl"
  config = _tiny_mtl_config()
  train.train_and_evaluate(config, mtl_dir, datasets=_tiny_datasets())
  intact = finetune.load_pretrained(mtl_dir)
  assert intact.step == 4
  for path in (mtl_dir / "checkpoints" / "4" / "state").rglob("*"):
    if path.is_file() and path.parent.name == "d":
      path.write_bytes(path.read_bytes()[:20])
  pretrained = finetune.load_pretrained(mtl_dir)
  assert pretrained.step == 2
  warning = [r.getMessage() for r in caplog.records if "cannot be restored" in r.getMessage()]
  assert len(warning) == 1 and f"delete {mtl_dir.absolute() / 'checkpoints' / '4'}" in warning[0]
  assert (mtl_dir / "checkpoints" / "4").is_dir()  # fine-tuning only reads the MTL run
  # The weights are step 2's, not step 4's.
  ckpt = checkpoint_lib.Checkpointer(mtl_dir)
  try:
    meta = ckpt.read_metadata(2)
  finally:
    ckpt.close()
  assert meta["step"] == 2
  assert any(not np.array_equal(a, b) for a, b in zip(
      jax.tree_util.tree_leaves(intact.variables), jax.tree_util.tree_leaves(pretrained.variables)))


def test_finetune_cli_reports_a_config_error_in_one_line(tmp_path):
  import pathlib
  import subprocess
  import sys
  repo = pathlib.Path(__file__).resolve().parents[1]
  proc = subprocess.run(
      [sys.executable, "-m", "experiments.mtl_finetune", "--config=configs/mtl_finetune.py:runlocal",
       f"--workdir={tmp_path / 'ft'}", "--config.data.source=ckplus",
       f"--config.data.path={tmp_path / 'CK+'}"],
      cwd=repo, capture_output=True, text=True, timeout=300)
  assert proc.returncode == 2, proc.stderr[-2000:]
  assert proc.stderr.splitlines()[0] == (f"error: data.path: {tmp_path / 'CK+'} does not exist "
                                         "(expected the root of a 'ckplus' dataset)")
