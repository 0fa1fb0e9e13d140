"""The notebooks' code cells run from the repository root, in order, as a user would run them."""
import json
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((REPO / "notebooks").glob("*.ipynb"))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_code_cells_run(path, tmp_path):
  cells = json.loads(path.read_text())["cells"]
  code = "\n\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")
  assert code.strip()
  script = tmp_path / "notebook.py"
  # Imports resolve from the repository root (as in Colab after `cd`); outputs go to tmp_path.
  script.write_text(f"import os, sys\nsys.path.insert(0, {str(REPO)!r})\nos.chdir({str(tmp_path)!r})\n"
                    + code)
  done = subprocess.run([sys.executable, str(script)], cwd=REPO, capture_output=True, text=True,
                        timeout=600)
  assert done.returncode == 0, done.stderr[-3000:]
