"""Run every benchmark script in sequence (used by `make bench`).

Each script prints its markdown table and writes `bench/results/<name>.md`.
Scripts run in their own subprocess so a crash in one does not stop the
others; the exit status is non-zero if any failed.

    python -m bench.run_all [--quick] [name ...]
"""
from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

SCRIPTS = ("kernels", "end_to_end", "pipeline", "calib_memory", "clipping_speed", "accuracy",
           "qdq_agreement", "jit_warm", "wide_operands", "tflite_speed")


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    flags = [a for a in argv if a.startswith("--")]
    names = [a for a in argv if not a.startswith("--")] or list(SCRIPTS)
    root = Path(__file__).resolve().parent.parent
    failed = []
    for name in names:
        if not (root / "bench" / f"{name}.py").is_file():
            print(f"== bench.{name}: missing, skipped", flush=True)
            continue
        # --quick is understood by our scripts; the others take no flags
        args = flags if name in ("kernels", "end_to_end", "pipeline") else []
        print(f"== bench.{name}", flush=True)
        t0 = time.perf_counter()
        code = subprocess.call([sys.executable, "-m", f"bench.{name}", *args], cwd=str(root))
        print(f"== bench.{name}: exit {code} in {time.perf_counter() - t0:.0f} s", flush=True)
        if code:
            failed.append(name)
    if failed:
        print(f"failed: {', '.join(failed)}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
