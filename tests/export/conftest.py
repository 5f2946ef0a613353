"""Shared pieces of the C export tests: a C builder with sanitizers, zoo quantization,
and the check that a compiled program equals the integer engine (outputs and layers)."""
from __future__ import annotations

import shutil
import warnings

import numpy as np
import pytest

import aidge_lite
from aidge_lite.export import export_c
from aidge_lite.export.build import Builder, read_dump, run_program
from aidge_lite.interp.quant_common import AccumulatorOverflowWarning
from aidge_lite.target import PROFILES

needs_gcc = pytest.mark.skipif(shutil.which("gcc") is None, reason="gcc missing")


@pytest.fixture(scope="session")
def builder():
    """-std=c99 -O2 -Wall -Wextra -Werror plus -fsanitize=address,undefined."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc missing")
    return Builder(sanitize=True)


@pytest.fixture(scope="session")
def plain_builder():
    """-std=c99 -O2 -Wall -Wextra -Werror: the production flags (long runs)."""
    if shutil.which("gcc") is None:
        pytest.skip("gcc missing")
    return Builder()


def zoo_case(model, bits, profile, per_channel=False, single_shift=False, signs=False, calib=200):
    """A zoo model quantized on `calib` calibration images spread over the split, and its test inputs."""
    from aidge_lite.models import datasets, zoo

    data = datasets.mnist() if zoo.dataset(model) == "mnist" else datasets.digits()
    step = max(len(data.calib_x) // calib, 1)
    q = aidge_lite.quantize_network(zoo.load(model), data.calib_x[::step].astype(np.float32),
                                    nb_bits=bits, target=PROFILES[profile], per_channel=per_channel,
                                    single_shift=single_shift, optimize_signs=signs)
    q.name = f"{model}_{bits}b_{profile}"
    return q, data.test_x.astype(np.float32)


def engine(q, x, intermediates=False):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", AccumulatorOverflowWarning)
        return aidge_lite.run(q, x, engine="integer", intermediates=intermediates)


def mismatches(expected: dict, got: dict) -> dict:
    """{name: mismatching elements} (shape differences count every element)."""
    out = {}
    for name, want in expected.items():
        have = got.get(name)
        if have is None or have.shape != want.shape:
            out[name] = int(want.size)
        else:
            out[name] = int(np.count_nonzero(np.asarray(have, np.float64) != np.asarray(want, np.float64)))
    return out


def check_many(builder, tmp_path, graphs, x_list, *, dump_samples=16, plain=None, fuse=True):
    """Export `graphs` (one program, one gcc call), run each on its inputs: outputs equal the
    integer engine's, and (debug build, first `dump_samples` inputs) every layer too.
    `builder` (sanitizers) builds both programs unless `plain` is given for the
    production one. `fuse`: export_c's option, one for all or one per graph. Returns the
    total number of compared output elements."""
    folders = []
    fuses = [fuse] * len(graphs) if isinstance(fuse, bool) else list(fuse)
    for k, (q, f) in enumerate(zip(graphs, fuses)):
        folder = tmp_path / f"m{k}"
        export_c(q, folder, prefix=f"m{k}", fuse=f)
        folders.append(folder)
    exe = (plain or builder).build_many(folders, tmp_path / "all")
    dbg = builder.build_many(folders, tmp_path / "all_debug", debug=True) if dump_samples else None
    compared = 0
    for k, (q, x, folder) in enumerate(zip(graphs, x_list, folders)):
        want = engine(q, x)
        got = run_program(exe, folder, x, index=k)
        bad = mismatches(want, got)
        assert sum(bad.values()) == 0, (q.name, bad)
        compared += sum(v.size for v in want.values())
        if dbg is not None:
            xs = x[:dump_samples]
            dump = tmp_path / f"dump{k}"
            small = run_program(dbg, folder, xs, index=k, dump_dir=dump)
            assert sum(mismatches(engine(q, xs), small).values()) == 0, q.name
            layers = read_dump(dump, folder, len(xs))
            bad = mismatches({n: v for n, v in engine(q, xs, True).items() if n in layers}, layers)
            assert len(layers) == len(q.topo_order()) - sum(
                1 for n in q if n.op.value in ("Constant", "Input")), q.name
            assert sum(bad.values()) == 0, (q.name, {n: c for n, c in bad.items() if c})
    return compared
