"""`heartbeat(label)`: a line now and then while a long step runs silently.

    with heartbeat("quantizing 4 bits"):
        quantize_network(...)

prints ``  ... quantizing 4 bits: 10 s`` whenever `every` seconds pass without a
progress line (its own, or one recorded with `note_output`, e.g. the Numba compile
notice of `aidge_lite.jit`), from a daemon thread, until the block ends. `make demo` uses it so that no step stays silent
for more than a few seconds, whatever the machine's load.
"""
from __future__ import annotations

import sys
import threading
import time
from contextlib import contextmanager

from .errors import InputError

__all__ = ["heartbeat", "note_output"]

_last_output = [0.0]  # monotonic time of the last progress line any aidge_lite helper printed


def note_output() -> None:
    """Record that a progress line was just printed (a heartbeat skips its next beat)."""
    _last_output[0] = time.monotonic()


@contextmanager
def heartbeat(label: str, *, every: float = 5.0, stream=None):
    if not isinstance(every, (int, float)) or isinstance(every, bool) or not every > 0:
        raise InputError(f"heartbeat: every must be a positive number of seconds, got {every!r}")
    stream = stream or sys.stdout
    done = threading.Event()
    start = time.monotonic()
    last = [start]

    def beat():
        while not done.wait(min(1.0, every)):
            now = time.monotonic()
            if now - max(_last_output[0], last[0]) < every:
                continue  # something was printed recently (e.g. the compile notice)
            last[0] = now
            try:
                from tqdm import tqdm

                tqdm.write(f"  ... {label}: {now - start:.0f} s", file=stream)
                stream.flush()
            except (ValueError, OSError):  # stream closed under us
                return

    thread = threading.Thread(target=beat, name="aidge_lite-heartbeat", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join(timeout=1.0)
