"""tgsr_jax.plots draws without pyplot: matplotlib loads lazily and a notebook's backend stays."""
import pathlib
import subprocess
import sys
import textwrap

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
