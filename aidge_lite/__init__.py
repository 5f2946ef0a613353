"""aidge_lite: a bit-exact reference for quantized neural networks."""
from . import errors
from .interp import run
from .ir import Graph, Node, OpType, verify
from .onnx_io import load_onnx
from .ptq import dequantize, quantize_network
from .serialize import load, save
from .target import Target

__version__ = "0.1.0"
__all__ = ["Graph", "Node", "OpType", "verify", "load_onnx", "run", "errors", "quantize_network",
           "dequantize", "Target", "save", "load"]
