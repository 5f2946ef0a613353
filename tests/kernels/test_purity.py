"""Project-style checks on kernels/: purity, twins, jit options, docstrings."""

import ast
import inspect
import os
import subprocess
import sys
from pathlib import Path

import pytest
from numba.core.caching import NullCache
from numba.core.registry import CPUDispatcher

from aidge_lite import kernels

KERNEL_FILES = sorted((Path(kernels.__file__).parent).glob("*.py"))
FORBIDDEN = ("aidge_lite", "networkx")


def _imported_modules(tree):
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            yield node.module


@pytest.mark.parametrize("path", KERNEL_FILES, ids=lambda p: p.name)
def test_kernels_import_nothing_from_the_package_or_networkx(path):
    tree = ast.parse(path.read_text(), filename=str(path))
    bad = [m for m in _imported_modules(tree) if m.split(".")[0] in FORBIDDEN]
    assert not bad, f"{path.name} imports {bad}"


def _public_kernels():
    """Jitted kernels, and Python entry points (`.jitted` = the body they call after
    converting operands, see kernels.canonical), that have a NumPy twin."""
    for name in kernels.__all__:
        obj = getattr(kernels, name)
        jitted = obj if isinstance(obj, CPUDispatcher) else getattr(obj, "jitted", None)
        if isinstance(jitted, CPUDispatcher) and hasattr(kernels, name + "_ref"):
            yield name, obj


def _python_function(kernel):
    return kernel.py_func if isinstance(kernel, CPUDispatcher) else kernel


PUBLIC_KERNELS = dict(_public_kernels())


def test_every_kernel_is_found():
    assert {"conv2d", "gemm", "fit_accumulator", "requant_float", "requant_int",
            "maxpool2d", "avgpool2d", "global_avgpool", "add", "concat2", "relu", "clip",
            "round_div", "round_div_pow2", "round_float"} <= set(PUBLIC_KERNELS)


@pytest.mark.parametrize("name", sorted(PUBLIC_KERNELS))
def test_kernel_style(name):
    kernel = _python_function(PUBLIC_KERNELS[name])
    jitted = getattr(PUBLIC_KERNELS[name], "jitted", PUBLIC_KERNELS[name])
    ref = getattr(kernels, name + "_ref")
    assert inspect.signature(kernel) == inspect.signature(ref)
    assert len(inspect.signature(ref).parameters) <= 6
    assert not isinstance(jitted._cache, NullCache), "needs cache=True"
    assert not jitted.targetoptions.get("fastmath"), "no fastmath"
    for f in (kernel, ref):
        assert f.__doc__ and f.__doc__.strip(), f"{f.__name__} needs a docstring"
    assert "Returns" in kernel.__doc__, "numpydoc sections expected"


def test_all_jitted_functions_use_cache_and_no_fastmath():
    for module in (m for m in vars(kernels).values() if inspect.ismodule(m)):
        for obj in vars(module).values():
            if isinstance(obj, CPUDispatcher):
                assert not isinstance(obj._cache, NullCache), obj.__name__
                assert not obj.targetoptions.get("fastmath"), obj.__name__


def test_gemm_compiles_into_the_disk_cache(tmp_path):
    # Numba skips the on-disk cache of a function holding dynamic globals
    # (numba.get_num_threads() in jitted code is one) with only a warning, and
    # every process then recompiles it. A fresh process with an empty cache
    # directory shows it; the GEMM path covers the shared implicit-GEMM driver.
    script = ("import numpy as np\nfrom aidge_lite import kernels\n"
              "kernels.gemm(np.ones((64, 18), np.uint8), np.ones((18, 16), np.int8),"
              " np.zeros(16, np.int32))\n")
    env = dict(os.environ, NUMBA_CACHE_DIR=str(tmp_path))
    run = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                         text=True, check=True, cwd=Path(kernels.__file__).parents[1])
    assert "Cannot cache" not in run.stderr, run.stderr
    cached = {p.name.split(".")[1].rsplit("-", 1)[0] for p in tmp_path.rglob("*.nbi")}
    assert {"igemm_run", "_gemm_body"} <= cached, cached
