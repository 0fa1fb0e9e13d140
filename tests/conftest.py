"""Shared test set-up.

Two host devices are forced before JAX initialises, so the sharded paths (the TGSR sweep, data
parallel training) are exercised on a CPU-only machine.
"""
import os
import pathlib
import tempfile

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")
# One persistent XLA compilation cache for the run, shared by the xdist workers and the
# command-line subprocesses the tests start (they inherit the environment): the suite compiles
# the same tiny training steps many times over. Only compilations over a second are stored
# (JAX's default), and a cache key covers the program, devices and flags, so a stale entry is
# never used.
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR",
                      os.path.join(tempfile.gettempdir(), f"subtle-tests-jax-cache-{os.getuid()}"))

import pytest  # noqa: E402

REPO_ROOT = pathlib.Path(__file__).resolve().parents[1]
SHARED = REPO_ROOT.parent / "shared"


def shared_path(*parts: str) -> pathlib.Path:
  """Returns a path under ../shared, skipping the calling test when it is absent."""
  path = SHARED.joinpath(*parts)
  if not path.exists():
    pytest.skip(f"real data not available: {path} is absent")
  return path


@pytest.fixture
def shared():
  return shared_path
