"""Shared machinery of the fuzz suite: a watched worker process and the outcome classes.

A *case* is a module-level function ``fn(*args) -> Outcome`` with picklable arguments.
``FuzzRunner.run(fn, *args)`` sends it to a worker process, which runs it with Numba's bounds
checks on, and classifies what happens:

=============  ========================================================================
``refused``    an ``aidge_lite.errors`` exception: a clean error (clean)
``agrees``     the case ran and every comparison it makes held (clean)
``traceback``  any other exception escaped (failure)
``oob``        an IndexError "out of bounds" anywhere in the exception chain: a Numba
               bounds check fired, even if an interpreter wrapped it in ExecutionError
``disagrees``  the case's own comparison failed (vs onnxruntime, or between the engines)
``crash``      the worker died (segfault, abort): restarted for the next case
``hang``       no answer within the timeout: the worker is killed and restarted
=============  ========================================================================

Why a worker process: a crash or a hang must not take the test session with it, and
``NUMBA_BOUNDSCHECK`` must be set before Numba compiles anything. The worker gets its own
``NUMBA_CACHE_DIR`` (``.numba_cache/boundscheck-<xdist worker>``, kept between runs; a temp dir
when another process holds it): Numba's cache index does not key on the bounds-check flag, so
sharing the normal cache would load kernels compiled without checks (or leave checked, slower
ones for everybody else). The first run compiles the kernels with checks (~45 s of CPU).

Counts per test and outcome are kept in ``FuzzRunner.tally``; with ``AIDGE_FUZZ_TALLY=<file>``
the session adds them to that JSON file (``bench/fuzz_run.py`` reads it).
"""
from __future__ import annotations

import collections
import fcntl
import importlib
import json
import os
import pickle
import select
import struct
import subprocess
import sys
import tempfile
import time
import traceback
from dataclasses import dataclass
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

ROOT = Path(__file__).resolve().parents[2]
CLEAN = ("refused", "agrees")
FAILURES = ("traceback", "oob", "disagrees", "crash", "hang")
CASE_TIMEOUT = 120.0  # s per case: generous for a Numba compile of a new signature inside a case
WARM_TIMEOUT = 1800.0  # s for the first case of a cold bounds-check cache (~3 min on a busy box)


@dataclass
class Outcome:
    kind: str  # one of CLEAN + FAILURES
    detail: str = ""

    @property
    def ok(self) -> bool:
        return self.kind in CLEAN


def fuzz_settings(ci: int, slow: int, **kwargs) -> settings:
    """Hypothesis settings of a fuzz test: `ci` examples by default, `slow` under
    HYPOTHESIS_PROFILE=slow (the profile's own 10,000 would be per test)."""
    profile = os.environ.get("HYPOTHESIS_PROFILE", "ci")
    n = {"slow": slow, "dev": 4 * ci}.get(profile, ci)
    return settings(max_examples=n, deadline=None, derandomize=profile == "ci", database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.filter_too_much], **kwargs)


# ------------------------------------------------------------------ classification (worker side)
def _chain(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def error_key(exc: BaseException) -> tuple[str, str]:
    """(error class, node) of an aidge_lite error: what both engines must agree on."""
    import re

    node = getattr(exc, "node", None)
    if node is None:
        match = re.search(r"node '([^']*)'", str(exc))
        node = match.group(1) if match else ""
    return type(exc).__name__, str(node)


def outcome_of(exc: BaseException) -> Outcome:
    """Classify an exception raised by a case."""
    from aidge_lite.errors import AidgeLiteError

    import numpy as np

    for link in _chain(exc):  # NumPy's AxisError (a bad axis attribute, validated) is no read
        if isinstance(link, IndexError) and not isinstance(link, np.exceptions.AxisError) \
                and "out of bounds" in str(link):
            return Outcome("oob", _describe(exc))
    if isinstance(exc, AidgeLiteError):
        return Outcome("refused", "%s: %s" % error_key(exc))
    return Outcome("traceback", _describe(exc))


def engines_agree(qgraph, feeds) -> Outcome:
    """Both engines on `feeds`: the same values bit for bit, or the same error class and node."""
    import numpy as np

    import aidge_lite
    from aidge_lite.errors import AidgeLiteError

    results = {}
    for engine in ("reference", "integer"):
        try:
            results[engine] = aidge_lite.run(qgraph, feeds, engine=engine)
        except AidgeLiteError as exc:
            results[engine] = error_key(exc)
    fake, integer = results["reference"], results["integer"]
    if isinstance(fake, tuple) or isinstance(integer, tuple):
        if fake != integer:
            return Outcome("disagrees", f"engines differ: fake-quant {_short(fake)}, integer {_short(integer)}")
        return Outcome("agrees", "float agrees; both engines refuse: %s %s" % fake)
    for name, value in fake.items():
        if not np.array_equal(np.asarray(integer[name], np.float64), value, equal_nan=True):
            return Outcome("disagrees", f"output '{name}': integer engine != fake-quant")
    return Outcome("agrees", "float, fake-quant and integer agree")


def _short(result) -> str:
    return f"refuses {result}" if isinstance(result, tuple) else "runs"


def _describe(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc)[-6:])[-3000:]


def guarded(fn, *args) -> Outcome:
    """Run `fn(*args)`, turning an escaping exception into its Outcome."""
    try:
        result = fn(*args)
    except Exception as exc:  # noqa: BLE001 -- classified, a traceback is a finding
        return outcome_of(exc)
    return result if isinstance(result, Outcome) else Outcome("agrees")


# ------------------------------------------------------------------ worker process
def _send(fd: int, obj) -> None:
    data = pickle.dumps(obj)
    os.write(fd, struct.pack("<Q", len(data)))
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]


def _read_exact(fd: int, n: int, deadline: float | None) -> bytes | None:
    """n bytes from fd, None on EOF; TimeoutError past `deadline`."""
    chunks, got = [], 0
    while got < n:
        if deadline is not None:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                raise TimeoutError
        chunk = os.read(fd, n - got)
        if not chunk:
            return None
        chunks.append(chunk)
        got += len(chunk)
    return b"".join(chunks)


def _recv(fd: int, deadline: float | None = None):
    head = _read_exact(fd, 8, deadline)
    if head is None:
        raise EOFError
    body = _read_exact(fd, struct.unpack("<Q", head)[0], deadline)
    if body is None:
        raise EOFError
    return pickle.loads(body)


def serve(read_fd: int, write_fd: int) -> None:
    """The worker loop: (module, function, args) in, Outcome out, until None."""
    while True:
        try:
            job = _recv(read_fd)
        except EOFError:
            return
        if job is None:
            return
        module, name, args = job
        try:
            fn = getattr(importlib.import_module(module), name)
            outcome = guarded(fn, *args)
        except Exception as exc:  # noqa: BLE001 -- e.g. the case module fails to import
            outcome = Outcome("traceback", _describe(exc))
        _send(write_fd, outcome)


def warm_kernels() -> Outcome:
    import aidge_lite

    aidge_lite.warmup("default", progress=False)
    return Outcome("agrees", "kernels compiled")


def _cache_dir(tag: str):
    """(path, lock file) of this runner's bounds-check Numba cache."""
    base = ROOT / ".numba_cache"
    base.mkdir(exist_ok=True)
    path = base / f"boundscheck-{tag}"
    lock = open(base / f"boundscheck-{tag}.lock", "w")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # another session uses it: a private cold cache instead
        lock.close()
        return Path(tempfile.mkdtemp(prefix="aidge-fuzz-numba-")), None
    return path, lock


class FuzzRunner:
    """One worker process at a time; every case gets a timeout and a classified Outcome."""

    def __init__(self, tag: str = "main", timeout: float = CASE_TIMEOUT):
        self.timeout = timeout
        self.cache, self._lock = _cache_dir(tag)
        self.tally: collections.Counter = collections.Counter()
        self.failures: list[tuple[str, Outcome]] = []
        self._proc = None
        self._warm = False

    def _start(self) -> None:
        child_read, parent_write = os.pipe()
        parent_read, child_write = os.pipe()
        env = {**os.environ, "NUMBA_BOUNDSCHECK": "1", "NUMBA_CACHE_DIR": str(self.cache),
               "AIDGE_LITE_JIT_NOTICE": "0", "PYTHONFAULTHANDLER": "1"}
        env.pop("NUMBA_DISABLE_JIT", None)
        self._log = tempfile.TemporaryFile()
        code = f"from tests.fuzz.conftest import serve; serve({child_read}, {child_write})"
        self._proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=env,
                                      pass_fds=(child_read, child_write), stdin=subprocess.DEVNULL,
                                      stdout=self._log, stderr=self._log)
        os.close(child_read)
        os.close(child_write)
        self._read, self._write = parent_read, parent_write

    def _stop(self, kill: bool) -> None:
        if self._proc is None:
            return
        self._log.close()
        try:
            if kill:
                self._proc.kill()
            else:
                _send(self._write, None)
            self._proc.wait(timeout=30)
        except (OSError, subprocess.TimeoutExpired):
            self._proc.kill()
            self._proc.wait()
        os.close(self._read)
        os.close(self._write)
        self._proc = None

    def _log_tail(self) -> str:
        self._log.seek(0)
        return self._log.read()[-2000:].decode(errors="replace")

    def _warm_up(self) -> None:
        """Compile the kernels with bounds checks once per kernel source (`aidge_lite.warmup`),
        outside any case's timeout."""
        self._warm = True
        stamp = max((p.stat().st_mtime_ns for p in (ROOT / "kernels").glob("*.py")), default=0)
        marker = self.cache / "fuzz-warm"
        if marker.exists() and marker.read_text() == str(stamp):
            return
        outcome = self.run(warm_kernels, label="warm-up", timeout=WARM_TIMEOUT)
        self.tally.pop(("warm-up", outcome.kind))  # not a case
        self.failures[:] = [f for f in self.failures if f[0] != "warm-up"]
        if outcome.ok:
            marker.parent.mkdir(parents=True, exist_ok=True)
            marker.write_text(str(stamp))

    def run(self, fn, *args, label: str | None = None, timeout: float | None = None) -> Outcome:
        """Run case `fn(*args)` in the worker; count and return its Outcome."""
        if not self._warm:
            self._warm_up()
        if self._proc is None:
            self._start()
        limit = timeout or self.timeout
        try:
            _send(self._write, (fn.__module__, fn.__name__, args))
            outcome = _recv(self._read, time.monotonic() + limit)
        except TimeoutError:
            self._stop(kill=True)
            outcome = Outcome("hang", f"no answer within {limit:.0f} s")
        except (EOFError, BrokenPipeError):
            code = self._proc.wait()
            outcome = Outcome("crash", f"worker exit code {code}\n{self._log_tail()}")
            self._stop(kill=True)
        label = label or fn.__name__
        self.tally[(label, outcome.kind)] += 1
        if not outcome.ok:
            self.failures.append((label, outcome))
        return outcome

    def close(self) -> None:
        self._stop(kill=False)
        if self._lock is not None:
            self._lock.close()

    def write_tally(self, path: str) -> None:
        """Add this runner's counts to the JSON file `path` ({label: {kind: count}})."""
        with open(path, "a+") as f:
            fcntl.flock(f, fcntl.LOCK_EX)  # xdist workers add to the same file
            f.seek(0)
            text = f.read()
            data = json.loads(text) if text.strip() else {}
            for (label, kind), count in self.tally.items():
                data.setdefault(label, {}).setdefault(kind, 0)
                data[label][kind] += count
            f.seek(0)
            f.truncate()
            json.dump(data, f, indent=1, sort_keys=True)


@pytest.fixture(scope="session")
def fuzz_runner():
    runner = FuzzRunner(os.environ.get("PYTEST_XDIST_WORKER", "main"))
    yield runner
    runner.close()
    if os.environ.get("AIDGE_FUZZ_TALLY"):
        runner.write_tally(os.environ["AIDGE_FUZZ_TALLY"])


def check(outcome: Outcome) -> None:
    """Fail the test on a failure outcome, with the worker's detail."""
    assert outcome.ok, f"{outcome.kind}: {outcome.detail}"
