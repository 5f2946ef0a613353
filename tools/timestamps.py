"""Prefix every line of stdin with the wall-clock time and the seconds since the start; at the end,
the total and the largest gap between two lines.

    make demo 2>&1 | python3 tools/timestamps.py

(moreutils' `ts` does the first part; this one also reports the largest silence, the number
`make demo`'s "a line at least every 10 s" is about). Standard library only.
"""
import sys
import time


def main() -> int:
    start = last = time.time()
    largest = 0.0
    for line in sys.stdin:
        now = time.time()
        largest = max(largest, now - last)
        last = now
        sys.stdout.write(f"[{time.strftime('%H:%M:%S', time.localtime(now))} +{now - start:7.1f}s] {line}")
        sys.stdout.flush()
    print(f"[total {time.time() - start:.1f}s, largest gap between lines {largest:.1f}s]")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
