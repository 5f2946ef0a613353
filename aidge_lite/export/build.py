"""Build and run exported C projects from Python (tests, benchmarks).

`Builder` compiles the kernel library once into objects (per set of flags) and
links exported models against it; `build_many` puts several exported models
(distinct prefixes) into one program with one gcc call, which takes the model
index as its first argument. `run_program` streams samples through a program
and parses its outputs; `read_dump` reads a debug build's per-step dumps.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile
from concurrent.futures import ThreadPoolExecutor
import shutil
import subprocess
from pathlib import Path

import numpy as np

from ..atomic import atomic_path, current_umask, write_text
from .emit import CFLAGS, LIBRARY, library_dir
from .staging import ExportError

SANITIZE = "-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer"


def compiler() -> str:
    cc = os.environ.get("CC") or shutil.which("gcc") or shutil.which("cc")
    if not cc:
        raise ExportError("no C compiler (gcc or $CC) on PATH")
    return cc


def _check(cmd, **kw):
    done = subprocess.run(cmd, capture_output=True, text=True, **kw)
    if done.returncode:
        raise ExportError(f"{' '.join(map(str, cmd[:3]))} ... failed ({done.returncode}):\n"
                          f"{done.stderr[-4000:]}")
    return done


class Builder:
    """Compiles the C library once per flag set (cached) and links programs."""

    def __init__(self, cflags: str = CFLAGS, sanitize: bool = False):
        self.cflags = cflags.split() + (SANITIZE.split() if sanitize else [])
        self.objects: list[Path] | None = None

    def library(self) -> list[Path]:
        """The library's objects: compiled once per (sources, flags, compiler), in
        parallel, cached under the system temp folder (renamed into place when complete)."""
        if self.objects is not None:
            return self.objects
        sources = [library_dir() / n for n in LIBRARY if n.endswith(".c")]
        digest = hashlib.sha256(" ".join([compiler(), *self.cflags]).encode())
        for name in LIBRARY:
            digest.update((library_dir() / name).read_bytes())
        cache = Path(tempfile.gettempdir()) / "aidge_lite_clib" / digest.hexdigest()[:20]
        if not cache.is_dir():
            cache.parent.mkdir(parents=True, exist_ok=True)
            tmp = Path(tempfile.mkdtemp(dir=cache.parent))
            with ThreadPoolExecutor(max(os.cpu_count() or 1, 1)) as pool:
                list(pool.map(lambda s: _check([compiler(), *self.cflags, "-c", str(s)], cwd=tmp),
                              sources))
            try:
                tmp.rename(cache)
            except OSError:  # another process finished first
                shutil.rmtree(tmp, ignore_errors=True)
        self.objects = [cache / (s.stem + ".o") for s in sources]
        return self.objects

    def build(self, folder, debug: bool = False) -> Path:
        """The program of one exported folder (its own main.c)."""
        folder = Path(folder)
        info = json.loads((folder / "export.json").read_text())
        exe = folder / (info["prefix"] + ("_debug" if debug else ""))
        flags = self.cflags + (["-DAIDGE_DEBUG_DUMP"] if debug else [])
        with atomic_path(exe, mode=0o777 & ~current_umask()) as tmp:  # never a half-linked program
            _check([compiler(), *flags, f"-I{library_dir()}", f"-I{folder}", "-o", str(tmp),
                    str(folder / "main.c"), str(folder / f"{info['prefix']}.c"),
                    *map(str, self.library()), "-lm"])
        return exe

    def build_many(self, folders, exe, debug: bool = False) -> Path:
        """One program holding every exported folder (distinct prefixes); argv[1] picks one."""
        infos = [json.loads((Path(f) / "export.json").read_text()) for f in folders]
        exe = Path(exe)
        driver = exe.with_suffix(".c")
        includes = "\n".join(f'#include "{Path(f).resolve() / (i["prefix"] + ".h")}"'
                             for f, i in zip(folders, infos))
        cases = "\n".join(_CASE % {"k": k, "p": i["prefix"], "P": i["prefix"].upper()}
                          for k, i in enumerate(infos))
        write_text(driver, _DRIVER % {"includes": includes, "cases": cases})
        flags = self.cflags + (["-DAIDGE_DEBUG_DUMP"] if debug else [])
        sources = [str(Path(f) / (i["prefix"] + ".c")) for f, i in zip(folders, infos)]
        with atomic_path(exe, mode=0o777 & ~current_umask()) as tmp:
            _check([compiler(), *flags, f"-I{library_dir()}", "-o", str(tmp), str(driver), *sources,
                    *map(str, self.library()), "-lm"])
        return exe


_DRIVER = r"""#include <stdio.h>
#include <stdlib.h>
%(includes)s

#define SERVE(p, P) do { \
    static p##_input_t in[P##_INPUT_SIZE]; \
    static union { p##_output_t v[P##_OUTPUT_SIZE]; long long a; } out; \
    for (;;) { \
        int k; \
        size_t got = fread(in, sizeof in[0], P##_INPUT_SIZE, stdin); \
        if (got == 0 && feof(stdin)) return 0; \
        if (got != P##_INPUT_SIZE) return 1; \
        k = p##_run(in, out.v); \
        if (k) return (k & P##_STATUS_OVERFLOW) ? 3 : 5; \
        for (k = 0; k < P##_NUM_OUTPUTS; ++k) \
            fwrite((const unsigned char *)out.v + p##_output_offsets[k], 1, \
                   (size_t)p##_output_bytes[k], stdout); \
    } \
} while (0)

int main(int argc, char **argv)
{
    switch (argc > 1 ? atoi(argv[1]) : -1) {
%(cases)s
    default: return 2;
    }
}
"""
_CASE = "    case %(k)d: SERVE(%(p)s, %(P)s);"


def run_program(exe, folder, x, *, index: int | None = None, dump_dir=None, timeout: float = 600):
    """Run `exe` on inputs `x` (N x input shape); {output name: array (N, ...)}.

    Raises ExportError when the program fails (its exit status and stderr).
    """
    info = json.loads((Path(folder) / "export.json").read_text())
    data = np.ascontiguousarray(np.asarray(x), dtype=info["input_dtype"])
    env = dict(os.environ)
    if dump_dir is not None:
        Path(dump_dir).mkdir(parents=True, exist_ok=True)
        env["AIDGE_DUMP_DIR"] = str(dump_dir)
    cmd = [str(exe)] + ([] if index is None else [str(index)])
    done = subprocess.run(cmd, input=data.tobytes(), capture_output=True, env=env, timeout=timeout)
    if done.returncode:
        raise ExportError(f"{exe} exited with {done.returncode}: {done.stderr.decode()[-2000:]}")
    return parse_outputs(done.stdout, info, len(data))


def parse_outputs(raw: bytes, info: dict, n: int) -> dict:
    """Split a program's stdout into {output name: (n, ...) array}."""
    steps = {s["node"]: s for s in info["steps"]}
    shapes = [steps[name]["shape"][1:] for name in info["outputs"]]
    dtypes = [np.dtype(d) for d in info["output_dtypes"]]
    per_sample = sum(int(np.prod(s, dtype=np.int64)) * d.itemsize for s, d in zip(shapes, dtypes))
    if len(raw) != per_sample * n:
        raise ExportError(f"expected {per_sample * n} output bytes, got {len(raw)}")
    rows = np.frombuffer(raw, np.uint8).reshape(n, per_sample)
    out, offset = {}, 0
    for name, shape, dtype in zip(info["outputs"], shapes, dtypes):
        nbytes = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
        chunk = np.ascontiguousarray(rows[:, offset:offset + nbytes])
        out[name] = chunk.view(dtype).reshape((n, *shape))
        offset += nbytes
    return out


def read_dump(dump_dir, folder, n: int) -> dict:
    """{node name: (n, ...) array} from a debug run's per-step files."""
    info = json.loads((Path(folder) / "export.json").read_text())
    out = {}
    for step in info["steps"]:
        path = Path(dump_dir) / f"{step['index']}.bin"
        dtype = np.float32 if step["dtype"] == "float32" else np.int64
        if step.get("constant"):  # the same whole tensor for every sample
            out[step["node"]] = np.fromfile(path, dtype).reshape([n] + step["shape"])[0]
        else:
            out[step["node"]] = np.fromfile(path, dtype).reshape([n] + step["shape"][1:])
    return out
