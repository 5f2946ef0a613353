"""Operand dtypes the heavy kernel bodies are compiled for (internal).

Numba compiles one machine-code version per argument-type signature, and the
convolution tree (fast paths, packing, direct loops) costs ~9 s of compile per
version; even a jitted wrapper around one shared body costs ~4 s (Numba
re-optimises the linked callee). So the public `conv2d`, `conv2d_requant` and
`gemm` are plain Python functions that convert their operands, then call a
jitted body compiled for canonical types only:

- integer operands up to 16 bits (int8, uint8, int16) as int16; wider ones
  (uint16, int32, int64) as int64: both hold every value exactly;
- biases and parameter arrays as int64 / float64;
- always C-contiguous and writable (a read-only array, e.g. a frozen graph
  constant, is a different Numba type).

A conversion is a linear copy, negligible next to the kernel; an operand that
is already canonical is passed as is.
"""

import numpy as np


def as_operand(a: np.ndarray) -> np.ndarray:
    """`a` as C-contiguous writable int16 when its dtype fits (int8, uint8, int16), else int64."""
    dtype = np.dtype(a.dtype)
    if dtype.kind not in "iu":
        raise TypeError(f"integer operand expected, got {dtype}")
    fits = dtype.itemsize == 1 or dtype == np.int16
    return as_array(a, np.int16 if fits else np.int64)


def as_array(a, dtype) -> np.ndarray:
    """`a` as a C-contiguous writable array of `dtype` (no copy when it already is one)."""
    a = np.asarray(a)
    if a.dtype == dtype and a.flags.c_contiguous and a.flags.writeable:
        return a
    return np.array(a, dtype=dtype, order="C", copy=True)
