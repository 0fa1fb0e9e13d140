"""Dependencies go one way: subtle_core <- tgsr_jax and subtle_core <- mtl_flax.

Neither system imports the other (checked on the source, including imports inside functions),
and importing a system or the shared package loads only what it needs: no SciPy or h5py (the
TGSR feature-file readers load them when a .mat file is read).
"""
import ast
import json
import pathlib
import subprocess
import sys

import pytest

REPO = pathlib.Path(__file__).resolve().parents[1]
PACKAGES = ("subtle_core", "tgsr_jax", "mtl_flax")
# package -> the packages of this repository it must not import.
FORBIDDEN = {"subtle_core": {"tgsr_jax", "mtl_flax"}, "tgsr_jax": {"mtl_flax"},
             "mtl_flax": {"tgsr_jax"}}


def imported_packages(source: str) -> set[str]:
  """Top-level names of every module a Python source imports (``import``, ``from``, and
  ``importlib.import_module("...")`` with a literal name), wherever the statement stands."""
  names = set()
  for node in ast.walk(ast.parse(source)):
    if isinstance(node, ast.Import):
      names.update(alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
      names.add(node.module)
    elif (isinstance(node, ast.Call) and getattr(node.func, "attr", getattr(node.func, "id", ""))
          in ("import_module", "__import__") and node.args
          and isinstance(node.args[0], ast.Constant) and isinstance(node.args[0].value, str)):
      names.add(node.args[0].value)
  return {name.split(".")[0] for name in names}


def test_the_scanner_sees_every_kind_of_import():
  source = ("import tgsr_jax.solver\nfrom mtl_flax import train\n"
            "def f():\n  from tgsr_jax.synthetic import microexpressions\n"
            "  return importlib.import_module('subtle_core.faces')\nfrom . import sibling\n")
  assert imported_packages(source) == {"tgsr_jax", "mtl_flax", "subtle_core"}


@pytest.mark.parametrize("package", PACKAGES)
def test_no_package_imports_a_system_it_must_not(package):
  files = sorted((REPO / package).rglob("*.py"))
  assert files, f"no sources under {REPO / package}"
  offending = {str(f.relative_to(REPO)): sorted(imported_packages(f.read_text())
                                                & FORBIDDEN[package]) for f in files}
  assert {f: names for f, names in offending.items() if names} == {}


_PROBE = """
import importlib, json, sys
for name in sys.argv[1:]:
  importlib.import_module(name)
print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in
                        ('scipy', 'h5py', 'jax', 'tgsr_jax', 'mtl_flax', 'subtle_core'))))
"""


def _loaded_after_importing(*modules: str) -> set[str]:
  out = subprocess.run([sys.executable, "-c", _PROBE, *modules], cwd=REPO, check=True,
                       capture_output=True, text=True, timeout=300)
  return set(json.loads(out.stdout.strip().splitlines()[-1]))


def _packages(loaded: set[str]) -> set[str]:
  return {m.split(".")[0] for m in loaded}


def test_importing_subtle_core_loads_neither_system_nor_jax():
  loaded = _loaded_after_importing(
      "subtle_core", "subtle_core.atomic", "subtle_core.runfolder", "subtle_core.cli",
      "subtle_core.images", "subtle_core.seeding", "subtle_core.distributed",
      "subtle_core.faces.ibug", "subtle_core.faces.detect", "subtle_core.faces.render")
  assert "subtle_core.faces.render" in loaded  # the probe imported what it was asked
  assert _packages(loaded) == {"subtle_core"}


def test_importing_mtl_flax_loads_no_tgsr_scipy_or_h5py():
  loaded = _loaded_after_importing(
      "mtl_flax", "mtl_flax.metrics", "mtl_flax.data.readers", "mtl_flax.data.synthetic",
      "mtl_flax.data.augment", "mtl_flax.train")
  assert "mtl_flax.train" in loaded
  assert _packages(loaded) == {"mtl_flax", "subtle_core", "jax"}


def test_importing_tgsr_jax_is_light_and_its_api_loads_on_use():
  loaded = _loaded_after_importing("tgsr_jax", "tgsr_jax.synthetic.microexpressions",
                                   "tgsr_jax.readers", "tgsr_jax.face")
  assert "tgsr_jax.synthetic.microexpressions" in loaded
  # Reading clips and generating databases needs neither JAX nor the solver (loaded on first use).
  assert _packages(loaded) == {"tgsr_jax", "subtle_core"}
  assert not {"tgsr_jax.solver", "tgsr_jax.sweep"} & loaded
  # The public names still work (loaded on first use).
  import tgsr_jax  # pylint: disable=import-outside-toplevel
  from tgsr_jax import cdmer_io  # pylint: disable=import-outside-toplevel
  from tgsr_jax import solver  # pylint: disable=import-outside-toplevel
  assert tgsr_jax.fit is solver.fit and tgsr_jax.read_feature_file is cdmer_io.read_feature_file
  assert tgsr_jax.sweep.paper_xi_grid is tgsr_jax.paper_xi_grid
  assert tgsr_jax.temporal_interpolate is sys.modules["tgsr_jax.tim"].temporal_interpolate
  assert tgsr_jax.tim is sys.modules["tgsr_jax.tim"] and tgsr_jax.cdmer_io is cdmer_io
  assert set(tgsr_jax.__all__) <= set(dir(tgsr_jax))
  with pytest.raises(AttributeError, match="no_such_name"):
    tgsr_jax.no_such_name  # noqa: B018
