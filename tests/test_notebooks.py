"""The notebooks run headless, top to bottom, in a Jupyter kernel, and draw their figures.

Each notebook runs in its own kernel (the test's Python: the ``python3`` kernelspec launches
``sys.executable``) with the repository first on ``PYTHONPATH``, as in a clone, and its working
directory in ``tmp_path``, so the runs it writes stay out of the repository. A cell error fails
the test with the cell's traceback; so does a figure that was not drawn (the ``image/png``
outputs are counted against ``metadata.subtle_jax.expected_figures``).
"""
import os
import pathlib
import sys

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

REPO = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks():
  assert {p.name for p in NOTEBOOKS} >= {"tgsr_quickstart.ipynb", "mtl_quickstart.ipynb"}


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_stored_without_outputs(path):
  nb = nbformat.read(path, as_version=4)
  for i, cell in enumerate(nb.cells):
    if cell.cell_type == "code":
      assert not cell.outputs and cell.execution_count is None, f"{path.name}: cell {i} has outputs"
  assert nb.metadata["subtle_jax"]["expected_figures"] > 0


def test_python3_kernel_runs_this_python():
  from jupyter_client.kernelspec import KernelSpecManager  # noqa: PLC0415
  argv = KernelSpecManager().get_kernel_spec("python3").argv
  # jupyter_client replaces a bare 'python' with sys.executable when it launches the kernel.
  assert argv[0] in ("python", "python3", f"python{sys.version_info[0]}.{sys.version_info[1]}",
                     sys.executable), argv


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs_and_draws_its_figures(path, tmp_path, monkeypatch):
  nb = nbformat.read(path, as_version=4)
  monkeypatch.setenv("PYTHONPATH", os.pathsep.join(
      [str(REPO)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]))
  monkeypatch.setenv("MPLBACKEND", "agg")  # as headless Jupyter; the notebook sets 'inline'
  client = nbclient.NotebookClient(nb, kernel_name="python3", timeout=600,
                                   resources={"metadata": {"path": str(tmp_path)}})
  client.execute()  # raises CellExecutionError (with the cell's traceback) on any cell error
  figures = sum("image/png" in out.get("data", {}) for cell in nb.cells
                if cell.cell_type == "code" for out in cell.outputs)
  assert figures == nb.metadata["subtle_jax"]["expected_figures"]
  # The kernel imported this repository, not another installed copy.
  streams = "".join(out.get("text", "") for cell in nb.cells if cell.cell_type == "code"
                    for out in cell.outputs if out.get("output_type") == "stream")
  assert f"code from {REPO} |" in streams, streams[:500]
