"""Run a command; when it prints nothing for EVERY seconds, print a line saying it is still running.

    python tools/heartbeat.py [--every S] [--label TEXT] -- COMMAND [ARGS...]

Used by the Makefile around `pip install`, which unpacks large wheels for a
minute without a word: `make demo` on a fresh clone prints something at least
every 10 s. The command's output (stdout and stderr, merged) is passed through
line by line; the exit status is the command's. Standard library only (it runs
before anything is installed).
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import threading
import time


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="heartbeat", description=__doc__.split("\n\n")[0])
    parser.add_argument("--every", type=float, default=5.0, help="seconds of silence before a line (default 5)")
    parser.add_argument("--label", default=None, help="what to call the command in the lines")
    parser.add_argument("command", nargs=argparse.REMAINDER)
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command or args.every <= 0:
        parser.error("give a command after --, and --every > 0")
    label = args.label or " ".join(command[:3])
    start = time.monotonic()
    last = [start]
    lock = threading.Lock()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, bufsize=0)

    def beat():
        while proc.poll() is None:
            time.sleep(0.5)
            with lock:
                now = time.monotonic()
                if now - last[0] >= args.every and proc.poll() is None:
                    sys.stdout.write(f"... {label}: still running ({now - start:.0f} s)\n")
                    sys.stdout.flush()
                    last[0] = now

    thread = threading.Thread(target=beat, daemon=True)
    thread.start()
    for line in iter(proc.stdout.readline, b""):
        with lock:
            sys.stdout.buffer.write(line)
            sys.stdout.flush()
            last[0] = time.monotonic()
    return proc.wait()


if __name__ == "__main__":
    raise SystemExit(main())
