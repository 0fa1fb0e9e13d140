"""Shared test set-up.

Two host devices are forced before JAX initialises, so the sharded paths (the TGSR sweep, data
parallel training) are exercised on a CPU-only machine.
"""
import os
import pathlib

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=2")

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
