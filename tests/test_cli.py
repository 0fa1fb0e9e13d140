"""subtle_core.cli: a failing entry point prints one line and saves its traceback."""
import pathlib
import subprocess
import sys
import textwrap

from subtle_core import cli

REPO = pathlib.Path(__file__).resolve().parents[1]


def test_error_line():
  assert cli.error_line(ValueError("config.xis: expected numbers")) == "config.xis: expected numbers"
  assert cli.error_line(KeyError("no feature file for 'V'")) == "no feature file for 'V'"
  assert cli.error_line(ZeroDivisionError("division by zero")) == (
      "ZeroDivisionError: division by zero")
  assert cli.error_line(RuntimeError()) == "RuntimeError"


def _program(tmp_path, body):
  script = tmp_path / "prog.py"
  script.write_text("from subtle_core import cli\n\n"
                    "def main(argv):\n"
                    + textwrap.indent(textwrap.dedent(body).strip() + "\n", "  ")
                    + "\nif __name__ == '__main__':\n  cli.run(main)\n")
  return script


def test_one_line_error_and_saved_traceback(tmp_path):
  script = _program(tmp_path, """
      raise ValueError("data.feature_dir: /nowhere does not exist (expected a folder)")
      """)
  proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                        cwd=REPO, timeout=120)
  assert proc.returncode == 2
  lines = proc.stderr.strip().splitlines()
  assert lines[0] == "error: data.feature_dir: /nowhere does not exist (expected a folder)"
  assert "Traceback" not in proc.stderr
  saved = pathlib.Path(lines[1].split("saved to ")[1].split(";")[0])
  assert "Traceback" in saved.read_text() and "ValueError" in saved.read_text()
  saved.unlink()
  verbose = subprocess.run([sys.executable, str(script), "--verbose"], capture_output=True,
                           text=True, cwd=REPO, timeout=120)
  assert verbose.returncode != 0 and "Traceback" in verbose.stderr


def test_success_is_untouched(tmp_path):
  script = _program(tmp_path, """
      print("ok")
      """)
  proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                        cwd=REPO, timeout=120)
  assert proc.returncode == 0 and proc.stdout.strip() == "ok"


def test_compilation_cache_location(monkeypatch, tmp_path):
  monkeypatch.delenv("JAX_COMPILATION_CACHE_DIR", raising=False)
  monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
  assert cli.compilation_cache_dir() == str(tmp_path / "subtle" / "jax")
  monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", "/somewhere/else")
  assert cli.compilation_cache_dir() == "/somewhere/else"
  monkeypatch.setenv("JAX_COMPILATION_CACHE_DIR", "none")
  assert cli.compilation_cache_dir() is None


def test_runs_use_the_compilation_cache(tmp_path):
  # Entry points switch JAX's persistent cache on (and `none` switches it off, though JAX read
  # the variable itself as a folder name at import).
  script = _program(tmp_path, """
      import jax
      print(jax.config.jax_compilation_cache_dir)
      """)
  env = {k: v for k, v in __import__("os").environ.items() if k != "JAX_COMPILATION_CACHE_DIR"}
  for setting, expected in ((None, str(tmp_path / "xdg" / "subtle" / "jax")), ("none", "None")):
    run_env = dict(env, XDG_CACHE_HOME=str(tmp_path / "xdg"))
    if setting is not None:
      run_env["JAX_COMPILATION_CACHE_DIR"] = setting
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          cwd=REPO, timeout=120, env=run_env)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == expected
