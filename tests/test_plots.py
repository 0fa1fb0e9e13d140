"""tgsr_jax.plots draws without pyplot: matplotlib loads lazily and a notebook's backend stays."""
import dataclasses
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_plots_import_lazily_and_keep_the_backend(tmp_path):
  script = textwrap.dedent(f"""
      import sys
      import numpy as np
      from tgsr_jax import plots
      assert "matplotlib" not in sys.modules, "importing tgsr_jax.plots loaded matplotlib"
      import matplotlib
      matplotlib.use("svg")  # a notebook's own backend
      import matplotlib.pyplot as plt
      before = plt.get_fignums()
      selected = np.zeros(85, bool)
      selected[[0, 3, 30]] = True
      plots.plot_selected_regions(selected, {str(tmp_path / 'regions.png')!r}, title="t",
                                  weights=np.arange(85.0), note="n")
      plots.plot_sensitivity(np.array([3, 1, 2]), np.array([0.2, 0.5, 0.4]),
                             np.array([0.3, 0.6, 0.5]), {str(tmp_path / 's.png')!r},
                             xlabel="kappa", log_x=True)
      assert matplotlib.get_backend() == "svg", matplotlib.get_backend()
      assert plt.get_fignums() == before  # no figure left open in pyplot
      print("ok")
      """)
  done = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True,
                        timeout=120)
  assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]
  for name in ("regions.png", "s.png"):
    data = (tmp_path / name).read_bytes()
    assert data[:4] == b"\x89PNG" and len(data) > 5000


def test_sweep_grid_tabulates_a_full_grid_and_refuses_a_partial_one():
  from tgsr_jax import plots
  from tgsr_jax import sweep
  kappa, xi = sweep.grid_points((9, 1, 3), (10.0, 0.1))
  mf1 = 0.01 * kappa + xi / 100.0  # an independent function of the point
  result = sweep.SweepResult(kappa=kappa, xi=xi, acc=mf1, mf1=mf1, uar=mf1,
                             iterations=np.arange(kappa.size), converged=np.ones(kappa.size, bool),
                             selected=np.zeros((kappa.size, 85), bool))
  kappas, xis, table = plots.sweep_grid(result, "mf1")
  np.testing.assert_array_equal(kappas, [1, 3, 9])
  np.testing.assert_array_equal(xis, [0.1, 10.0])
  np.testing.assert_allclose(table, 0.01 * kappas[:, None] + xis[None, :] / 100.0)
  fig = plots.sweep_heatmap_figure(result)
  assert fig.axes[0].get_xlabel() == "xi" and len(fig.axes[0].images) == 1
  partial = dataclasses.replace(result, kappa=kappa[1:], xi=xi[1:], mf1=mf1[1:])
  with pytest.raises(ValueError, match="full kappa x xi grid"):
    plots.sweep_grid(partial, "mf1")
  with pytest.raises(ValueError, match="metric"):
    plots.sweep_grid(result, "f1")


def test_confusion_and_regions_figures_draw_what_they_are_given():
  from tgsr_jax import plots
  conf = np.array([[5, 1, 0], [2, 3, 1], [0, 0, 4]])
  fig = plots.confusion_figure(conf, ["N", "P", "S"])
  np.testing.assert_array_equal(fig.axes[0].images[0].get_array(), conf)
  assert sorted(t.get_text() for t in fig.axes[0].texts) == sorted(str(v) for v in conf.ravel())
  with pytest.raises(ValueError, match="shape"):
    plots.confusion_figure(conf, ["N", "P"])
  selected = np.zeros(85, bool)
  selected[[0, 21 + 8 * 6 + 1]] = True
  fig = plots.selected_regions_figure({"a": selected, "b": (~selected, np.arange(85.0))})
  assert len(fig.axes) == 2 * 4
  # Row a, 8x8 panel: only cell (6, 1) is shaded.
  grid = np.asarray(fig.axes[3].images[0].get_array())
  assert grid[6, 1] > 0 and np.count_nonzero(grid) == 1
  assert fig.axes[0].get_title() == "1x1: 1 selected"
  assert fig.axes[4].get_title() == "1x1: 0 selected"
  with pytest.raises(ValueError, match="selected must have shape"):
    plots.selected_regions_figure({"a": selected[:10]})
