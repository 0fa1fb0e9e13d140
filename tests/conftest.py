"""Shared test set-up.

Two host devices are forced before JAX initialises, so the sharded paths (the TGSR sweep, data
parallel training) are exercised on a CPU-only machine.
"""
import os
import pathlib


def _with_flags(existing: str, wanted: tuple[str, ...]) -> str:
  """`existing` XLA flags plus each wanted flag whose name is not set there already."""
  flags = existing.split()
  names = {flag.split("=")[0] for flag in flags}
  return " ".join(flags + [flag for flag in wanted if flag.split("=")[0] not in names])


# Multithreaded Eigen is off: XLA's CPU intra-op pool has been seen to wedge (a computation that
# never finishes) on CI runners, and two test workers on two cores gain nothing from it.
# Subprocesses started by the tests (the CLI end-to-end tests) inherit these flags.
os.environ["XLA_FLAGS"] = _with_flags(os.environ.get("XLA_FLAGS", ""), (
    "--xla_force_host_platform_device_count=2", "--xla_cpu_multi_thread_eigen=false"))

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
