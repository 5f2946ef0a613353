"""Run the fuzz suite's slow profile and write `bench/results/fuzz.md`.

    python -m bench.fuzz_run [--workers N] [--profile slow|ci|dev] [--out bench/results/fuzz.md]

Runs ``pytest tests/fuzz`` (slow-marked tests included) with ``HYPOTHESIS_PROFILE=slow``:
each fuzz test draws its slow number of examples (`tests/fuzz/conftest.fuzz_settings`; the
ONNX tests 10,000 together). Cases run in the bounds-checked worker of ``tests/fuzz/conftest.py``,
which counts them per outcome class (``AIDGE_FUZZ_TALLY``); Hypothesis's own statistics give
the number of examples of every test, also of tests that do not go through the worker. The
report lists both, the pytest summary, the machine and its load.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CLEAN = ("refused", "agrees")
FAILURES = ("traceback", "oob", "disagrees", "crash", "hang")


def _machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}, Python {platform.python_version()}"


def _examples(output: str) -> dict[str, int]:
    """Examples per test from `--hypothesis-show-statistics` (passing + failing, generate phase
    and any shrinking)."""
    counts, test = {}, None
    for line in output.splitlines():
        header = re.match(r"^(\S+::\S+):\s*$", line.strip())
        if header:
            test = header.group(1)
            continue
        found = re.search(r"(\d+) passing examples?, (\d+) failing examples?", line)
        if test and found:
            counts[test] = counts.get(test, 0) + int(found.group(1)) + int(found.group(2))
    return counts


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=1, help="pytest-xdist workers (default 1)")
    parser.add_argument("--profile", default="slow", choices=("slow", "dev", "ci"))
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "fuzz.md"))
    parser.add_argument("paths", nargs="*", default=["tests/fuzz"])
    args = parser.parse_args(argv)

    tally_file = Path(tempfile.mkstemp(prefix="aidge-fuzz-tally-", suffix=".json")[1])
    tally_file.write_text("")
    env = {**os.environ, "HYPOTHESIS_PROFILE": args.profile, "AIDGE_FUZZ_TALLY": str(tally_file)}
    cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "slow or not slow",
           "--hypothesis-show-statistics", *args.paths]
    if args.workers > 1:
        cmd += ["-n", str(args.workers)]
    load_before, start = os.getloadavg(), time.time()
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True)
    seconds, load_after = time.time() - start, os.getloadavg()
    output = proc.stdout + proc.stderr
    summary = next((line for line in reversed(output.splitlines()) if re.search(r"\d+ (passed|failed)", line)),
                   "(no pytest summary)")
    tally = json.loads(tally_file.read_text() or "{}")
    tally_file.unlink()
    examples = _examples(output)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip()

    lines = [
        "# Fuzz suite, slow profile (`python -m bench.fuzz_run`)",
        "",
        f"- Date: {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC, commit {commit} + working tree",
        f"- Command: `HYPOTHESIS_PROFILE={args.profile} {' '.join(cmd[2:])}`",
        f"- Machine: {_machine()}",
        f"- Load average (1/5/15 min) before: {'/'.join(f'{x:.2f}' for x in load_before)}, "
        f"after: {'/'.join(f'{x:.2f}' for x in load_after)} (the machine is shared)",
        f"- Wall time: {seconds:.0f} s; pytest: `{summary.strip('= ')}` (exit code {proc.returncode})",
        f"- Kernels run with `NUMBA_BOUNDSCHECK=1` in a worker process; per-case timeout "
        f"{_timeout()} s (a hang), a dead worker is a crash.",
        "",
        "## Cases per outcome class (worker-run cases)",
        "",
        "| cases | " + " | ".join(CLEAN + FAILURES) + " | total |",
        "|---|" + "---:|" * (len(CLEAN + FAILURES) + 1),
    ]
    totals = dict.fromkeys(CLEAN + FAILURES, 0)
    for label in sorted(tally):
        counts = tally[label]
        for kind in totals:
            totals[kind] += counts.get(kind, 0)
        lines.append(f"| {label} | " + " | ".join(str(counts.get(k, 0)) for k in CLEAN + FAILURES)
                     + f" | {sum(counts.values())} |")
    lines.append("| **all** | " + " | ".join(f"**{totals[k]}**" for k in CLEAN + FAILURES)
                 + f" | **{sum(totals.values())}** |")
    if examples:  # not printed under pytest-xdist
        lines += ["", "## Examples per test (Hypothesis statistics, every fuzz test)", "",
                  "| test | examples |", "|---|---:|"]
        lines += [f"| `{test}` | {n} |" for test, n in sorted(examples.items())]
        lines.append(f"| **all** | **{sum(examples.values())}** |")
    failed = [line for line in output.splitlines() if line.startswith("FAILED")]
    reasons, lines_out = [], output.splitlines()
    for i, line in enumerate(lines_out):  # the assertion and the exception ending its detail
        if re.match(r"^E\s+AssertionError", line):
            block = [line.strip()[:300]]
            for more in lines_out[i + 1:i + 40]:
                if not more.startswith("E "):
                    break
                if re.search(r"^E\s+\w*(Error|Exception)\b", more) and more not in block:
                    block.append(more.strip()[:300])
            reasons.extend(block[:4])
    if failed:
        lines += ["", "## Failed tests (a failing Hypothesis test stops at its first falsifying case)", "",
                  *[f"- `{line}`" for line in failed], "", *[f"    {r}" for r in reasons]]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return proc.returncode


def _timeout() -> str:
    sys.path.insert(0, str(ROOT))
    from tests.fuzz.conftest import CASE_TIMEOUT

    return f"{CASE_TIMEOUT:.0f}"


if __name__ == "__main__":
    sys.exit(main())
