"""Table lookup: an elementwise function of an 8-bit code, as a 256-entry table.

Int8 models apply LOGISTIC, TANH and HARD_SWISH this way: the op is a function
of the int8 input alone, so the table computed once with the exact integer
algorithm *is* the op (no rounding happens here).
"""

import numba
import numpy as np


@numba.njit(cache=True)
def lookup(index, table, out):
    """``out[i] = table[index[i]]``.

    Parameters
    ----------
    index : (n,) int64
        Every value in ``[0, table.size)``; a value outside raises ``ValueError``.
    table : (k,) int8, uint8, int16 or int32
    out : (n,) same dtype as ``table``
        Written in place.

    Returns
    -------
    out

    Notes
    -----
    Exact: a copy, no arithmetic and no rounding.
    """
    if out.shape[0] < index.shape[0]:
        raise ValueError("lookup: out is shorter than index")
    size = table.shape[0]
    for i in range(index.shape[0]):
        j = index[i]
        if j < 0 or j >= size:  # one compare per element: never read outside the table
            raise ValueError("lookup: index outside the table")
        out[i] = table[j]
    return out


def lookup_ref(index, table, out):
    """NumPy twin of :func:`lookup`."""
    out[...] = table[index]
    return out
