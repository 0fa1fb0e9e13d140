"""Entry points that report a failure as one line naming what to fix.

Every ``python -m experiments.NAME`` runs its ``main`` through :func:`run`. An exception reaches
the user as ``error: <message>`` on stderr (exit status 2), where the message names the file or
config field and what was expected. The whole traceback is saved to a file named on the next line,
and ``--verbose`` prints it instead.
"""
from __future__ import annotations

import datetime
import os
import pathlib
import sys
import tempfile
import traceback
from typing import Callable

from absl import app
from absl import flags
from absl import logging

from subtle_core import distributed

_VERBOSE = flags.DEFINE_bool("verbose", False,
                             "On an error, print the whole traceback instead of one line.")

# Errors whose message already says what is wrong; anything else is prefixed with its type.
_PLAIN = (ValueError, OSError, KeyError, LookupError)


def error_line(error: BaseException) -> str:
  """The message shown to the user for ``error``."""
  message = str(error.args[0]) if isinstance(error, KeyError) and error.args else str(error)
  if not message:
    message = type(error).__name__
  elif not isinstance(error, _PLAIN):
    message = f"{type(error).__name__}: {message}"
  return message


def save_traceback(text: str, program: str) -> pathlib.Path:
  """Writes ``text`` to a new file in the temporary folder and returns its path."""
  stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
  fd, path = tempfile.mkstemp(prefix=f"{program}-{stamp}-", suffix=".traceback.txt")
  with os.fdopen(fd, "w") as f:
    f.write(text)
  return pathlib.Path(path)


def compilation_cache_dir() -> str | None:
  """Where the command-line runs keep JAX's persistent compilation cache, or None for none.

  ``$JAX_COMPILATION_CACHE_DIR`` when set (JAX's own variable; ``none`` turns the cache off),
  else ``$XDG_CACHE_HOME/subtle/jax`` (``~/.cache/subtle/jax``). Runs of a table compile the
  same training step once per seed, and a rerun compiles everything again: with the cache, XLA
  compiles each program once. A cache entry's key covers the program, the devices and the XLA
  flags, so an entry is only used for the same computation.
  """
  given = os.environ.get("JAX_COMPILATION_CACHE_DIR")
  if given is not None:
    return None if given.strip().lower() in ("", "none") else given
  base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
  return os.path.join(base, "subtle", "jax")


def _use_compilation_cache() -> None:
  path = compilation_cache_dir()
  import jax  # pylint: disable=import-outside-toplevel  (the experiments have imported it)
  jax.config.update("jax_compilation_cache_dir", path)


def run(main: Callable[[list[str]], object]) -> None:
  """``absl.app.run(main)``, with errors shown as one line (see the module docstring), and
  JAX's persistent compilation cache on (:func:`compilation_cache_dir`)."""
  program = pathlib.Path(sys.argv[0]).stem if sys.argv and sys.argv[0] else "run"
  if program == "__main__":
    program = (getattr(sys.modules.get("__main__"), "__spec__", None) or
               type("S", (), {"name": "run"})).name.rsplit(".", 1)[-1]

  def guarded(argv):
    try:
      _use_compilation_cache()
      return main(argv)
    except (KeyboardInterrupt, SystemExit, app.UsageError):
      raise
    except Exception as e:  # pylint: disable=broad-except  (shown as one line, traceback saved)
      if _VERBOSE.value:
        raise
      path = save_traceback(traceback.format_exc(), program)
      sys.stderr.write(f"error: {error_line(e)}\n"
                       f"(traceback saved to {path}; --verbose prints it)\n")
      sys.stderr.flush()
      if distributed.process_count() > 1:
        # The other processes wait in a collective for this one: leave at once instead of
        # waiting minutes at jax.distributed's shutdown barrier (they stop when its heartbeat
        # stops).
        logging.flush()
        os._exit(2)  # pylint: disable=protected-access
      sys.exit(2)

  app.run(guarded)
