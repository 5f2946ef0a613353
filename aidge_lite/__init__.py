"""aidge_lite: a bit-exact reference for quantized neural networks."""
import os as _os
import signal as _signal
import sys as _sys


def _exit_on_early_sigint(signum, frame):
    _os._exit(130)


# The `aidge-lite` command: a Ctrl-C while numpy and Numba import (before the CLI's own
# handlers exist, `aidge_lite.cli_exit`) ends as one later does, status 130 and no traceback.
if _sys.argv and _os.path.basename(_sys.argv[0]) == "aidge-lite" \
        and _signal.getsignal(_signal.SIGINT) is _signal.default_int_handler:
    _signal.signal(_signal.SIGINT, _exit_on_early_sigint)

from . import errors
from .interp import run
from .ir import Graph, Node, OpType, verify
from .serialize import load, save
from .target import Target
from .jit import install_notice as _install_notice

_install_notice()  # a line on stderr whenever Numba compiles kernels for long (aidge_lite.jit)

__version__ = "0.1.0"
__all__ = ["Graph", "Node", "OpType", "verify", "load_onnx", "load_tflite", "run", "errors", "quantize_network",
           "dequantize", "Target", "save", "load", "warmup"]

# Imported on first use: onnx and the PTQ passes cost ~0.1 s of start-up that a
# process running an already quantized graph (an integer golden run) never needs.
_LAZY = {"load_onnx": ".onnx_io", "load_tflite": ".tflite", "quantize_network": ".ptq", "dequantize": ".ptq",
         "warmup": ".jit"}


def __getattr__(name):
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name], __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'aidge_lite' has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_LAZY))
