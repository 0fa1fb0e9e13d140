"""mtl_flax.plots: figures of what they are given, without pyplot; metrics.jsonl reading."""
import json
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from mtl_flax import inference
from mtl_flax import plots

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_read_metrics_and_series_in_step_order(tmp_path):
  path = tmp_path / "metrics.jsonl"
  path.write_text("\n".join(json.dumps(r) for r in [
      {"step": 2, "train/loss": 3.0}, {"step": 1, "train/loss": 4.0},
      {"step": 2, "eval/acc": 0.5}]) + "\n\n")
  records = plots.read_metrics(path)
  assert len(records) == 3
  steps, values = plots.metric_series(records, "train/loss")
  np.testing.assert_array_equal(steps, [1, 2])
  np.testing.assert_array_equal(values, [4.0, 3.0])
  fig = plots.curves_figure(records, {"loss": ["train/loss", "absent"], "acc": ["eval/acc"]})
  line, = fig.axes[0].get_lines()
  np.testing.assert_array_equal(line.get_xdata(), [1, 2])
  with pytest.raises(ValueError, match="no record holds.*present"):
    plots.curves_figure(records, {"nme": ["eval/nme"]})
  path.write_text('{"step": 1}\nnot json\n')
  with pytest.raises(ValueError, match=r"metrics.jsonl:2"):
    plots.read_metrics(path)
  with pytest.raises(FileNotFoundError, match="nothere"):
    plots.read_metrics(tmp_path / "nothere" / "metrics.jsonl")


def test_landmarks_are_drawn_at_their_pixels():
  rng = np.random.default_rng(0)
  images = rng.integers(0, 255, (3, 20, 20, 3), dtype=np.uint8)
  points = rng.uniform(0.1, 0.9, (3, 68, 2))
  fig = plots.landmarks_figure(images, points, points.reshape(3, 136) + 0.01, columns=2)
  assert len(fig.axes) == 4  # 2 x 2, the last one empty
  true, pred = fig.axes[1].collections
  np.testing.assert_allclose(true.get_offsets(), points[1] * 20 - 0.5)
  np.testing.assert_allclose(pred.get_offsets(), (points[1] + 0.01) * 20 - 0.5)
  with pytest.raises(ValueError, match="predicted landmarks"):
    plots.landmarks_figure(images, points, points[:, :10])


def test_image_grid_has_a_row_per_class_present():
  images = np.zeros((7, 8, 8, 3), np.uint8)
  labels = np.array([0, 2, 2, 0, 2, 0, 0])
  fig = plots.image_grid_figure(images, labels, ["a", "b", "c"], per_class=3)
  assert len(fig.axes) == 2 * 3
  assert [ax.get_ylabel() for ax in fig.axes[::3]] == ["a", "c"]
  assert sum(len(ax.images) for ax in fig.axes) == 6
  with pytest.raises(ValueError, match="class names"):
    plots.image_grid_figure(images, labels, ["a", "b"])


def test_decrease_rates_and_embeddings():
  fig = plots.decrease_rates_figure({"LAF": {"conv1": 0.5, "conv2": 0.9}})
  line, = fig.axes[0].get_lines()[:1]
  np.testing.assert_allclose(line.get_ydata(), [0.5, 0.9])
  rng = np.random.default_rng(1)
  fa, fb = rng.normal(size=(10, 4)), rng.normal(size=(6, 4)) + 3.0
  fig = plots.embeddings_figure({"x": (fa, fb), "y": (fa, fa)})
  assert len(fig.axes) == 2
  assert [len(c.get_offsets()) for c in fig.axes[0].collections] == [10, 6]
  assert "separability 0.00" in fig.axes[1].get_title()


def test_plots_do_not_touch_pyplot():
  script = textwrap.dedent("""
      import sys
      import numpy as np
      from mtl_flax import plots
      assert "matplotlib.pyplot" not in sys.modules
      plots.decrease_rates_figure({"LAF": {"a": 0.5}}).savefig("/dev/null", format="png")
      assert "matplotlib.pyplot" not in sys.modules, "a figure went through pyplot"
      print("ok")
      """)
  done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True,
                        timeout=120)
  assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_load_run_names_a_missing_run(tmp_path):
  with pytest.raises(FileNotFoundError, match="config.json"):
    inference.load_run(tmp_path)
