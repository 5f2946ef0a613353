"""Lowerings of pools, reductions and data movement (concat, pad, transpose,
and the layout ops that only rename a buffer)."""
from __future__ import annotations

import numpy as np

from ..interp.geometry import window_geometry
from ..ir import OpType
from .lower import ROUNDING, narrowest, type_range
from .ops import _contiguous_strides, _fail, _inputs, _out, _step, _view, lowering

op = OpType


@lowering(op.MAXPOOL, op.AVGPOOL)
def pool(prog, graph, node, shape, engine_dtype):
    (x,) = _inputs(prog, node)
    hwc = node.attrs.get("layout") == "NHWC"
    if len(x.shape) != 4 or x.dtype == "float32":
        raise _fail(node, f"input {x.dtype}{x.shape}: 2-D integer pools only")
    c, h, w = (x.shape[3], x.shape[1], x.shape[2]) if hwc else x.shape[1:]
    kernel = tuple(node.attrs["kernel_shape"])
    strides, dilations, pads, out_hw, extra = window_geometry(node, (h, w), kernel)
    include_pad = int(bool(node.attrs.get("count_include_pad", 0)))
    average = node.op is op.AVGPOOL
    if average and include_pad and any(extra):
        raise _fail(node, "ceil_mode with count_include_pad")
    rounding = ROUNDING[node.attrs["rounding"]] if average else "AIDGE_FLOOR"
    geom = prog.struct("aidge_pool_t", dict(
        c=c, h=h, w=w, oh=out_hw[0], ow=out_hw[1], kh=kernel[0], kw=kernel[1], sh=strides[0],
        sw=strides[1], dh=dilations[0], dw=dilations[1], pt=pads[0], pl=pads[1],
        count_include_pad=include_pad, rounding=rounding, hwc=int(hwc)))
    out = _out(prog, node, x.dtype, shape, engine_dtype)
    fn = "aidge_avgpool" if average else "aidge_maxpool"
    return _step(node, f"{fn}({x.cname}, {x.enum}, {out.cname}, {out.enum}, &{geom});", [x.name], out)


@lowering(op.GLOBAL_AVGPOOL)
def global_avgpool(prog, graph, node, shape, engine_dtype):
    (x,) = _inputs(prog, node)
    if len(x.shape) != 4 or x.dtype == "float32":
        raise _fail(node, f"input {x.dtype}{x.shape}")
    out = _out(prog, node, x.dtype, shape, engine_dtype)
    return _step(node, f"aidge_global_avgpool({x.cname}, {x.enum}, {out.cname}, {out.enum}, "
                       f"{x.shape[1]}, {x.shape[2] * x.shape[3]}, {ROUNDING[node.attrs['rounding']]});",
                 [x.name], out)


@lowering(op.REDUCE_SUM)
def reduce_sum(prog, graph, node, shape, engine_dtype):
    (x,) = _inputs(prog, node)
    axes = sorted(int(a) % len(x.shape) for a in node.attrs["axes"])
    if 0 in axes or x.dtype == "float32":
        raise _fail(node, "a sum over the batch axis, or of floats")
    strides = _contiguous_strides(x.shape)
    kept = [d for d in range(len(x.shape)) if d not in axes]
    count = int(np.prod([x.shape[d] for d in axes], dtype=np.int64))
    lo, hi = type_range(x.dtype)
    out = _out(prog, node, narrowest(lo * count, hi * count), shape, engine_dtype)
    kv = _view(prog, [x.shape[d] for d in kept], [strides[d] for d in kept], [0] * len(kept))
    rv = _view(prog, [x.shape[d] for d in axes], [strides[d] for d in axes], [0] * len(axes))
    return _step(node, f"aidge_reduce_sum({x.cname}, {x.enum}, {out.cname}, {out.enum}, &{kv}, &{rv});",
                 [x.name], out)


@lowering(op.FLATTEN, op.RESHAPE, op.SQUEEZE, op.UNSQUEEZE, op.IDENTITY, op.DROPOUT)
def alias(prog, graph, node, shape, engine_dtype):
    (x,) = _inputs(prog, node)
    if x.name == prog.input.name or x.constant:  # not in the arena: a copy
        out = _out(prog, node, x.dtype, shape, engine_dtype)
        n = out.size
        view = _view(prog, [n], [1], [1])
        return _step(node, f"aidge_copy({x.cname}, {x.enum}, {out.cname}, {out.enum}, &{view});",
                     [x.name], out)
    root = x.alias or x.name
    out = _out(prog, node, x.dtype, shape, engine_dtype, alias=root)
    return _step(node, [f"/* {node.op.value}: same buffer as {prog.tensors[root].cname} */"],
                 [x.name], out)


@lowering(op.TRANSPOSE)
def transpose(prog, graph, node, shape, engine_dtype):
    (x,) = _inputs(prog, node)
    perm = node.attrs.get("perm") or tuple(reversed(range(len(x.shape))))
    perm = [int(p) % len(x.shape) for p in perm]
    if perm[0] != 0:
        raise _fail(node, f"perm {perm} moves the batch axis")
    out = _out(prog, node, x.dtype, shape, engine_dtype)
    src = _contiguous_strides(x.shape)
    view = _view(prog, shape, [src[p] for p in perm], _contiguous_strides(shape))
    return _step(node, f"aidge_copy({x.cname}, {x.enum}, {out.cname}, {out.enum}, &{view});",
                 [x.name], out)


@lowering(op.CONCAT)
def concat(prog, graph, node, shape, engine_dtype):
    xs = _inputs(prog, node)
    axis = int(node.attrs["axis"]) % len(shape)
    if axis == 0:
        raise _fail(node, "concatenation along the batch axis")
    if any(x.dtype == "float32" for x in xs):
        raise _fail(node, "float operand")
    ranges = [type_range(x.dtype) for x in xs]
    out = _out(prog, node, narrowest(min(r[0] for r in ranges), max(r[1] for r in ranges)), shape,
               engine_dtype)
    dst = _contiguous_strides(shape)
    code, offset = [], 0
    for x in xs:
        view = _view(prog, x.shape, _contiguous_strides(x.shape), dst, 0, offset * dst[axis])
        code.append(f"aidge_copy({x.cname}, {x.enum}, {out.cname}, {out.enum}, &{view});")
        offset += x.shape[axis]
    return _step(node, code, [x.name for x in xs], out)


@lowering(op.PAD)
def pad(prog, graph, node, shape, engine_dtype):
    (x,) = _inputs(prog, node)
    rank = len(x.shape)
    pads = [int(p) for p in node.attrs["pads"]]
    axes = [int(a) % rank for a in node.attrs.get("axes", range(rank))]
    if node.attrs.get("mode", "constant") != "constant" or min(pads, default=0) < 0:
        raise _fail(node, "only constant, non-negative padding")
    begin = [0] * rank
    for k, a in enumerate(axes):
        begin[a] = pads[k]
        if a == 0 and (pads[k] or pads[k + len(axes)]):
            raise _fail(node, "padding of the batch axis")
    value = node.attrs.get("value", 0)
    lo, hi = type_range(x.dtype) if x.dtype != "float32" else (0, -1)
    if float(value) != int(value) or not lo <= int(value) <= hi:
        raise _fail(node, f"pad value {value} for a {x.dtype} tensor")
    out = _out(prog, node, x.dtype, shape, engine_dtype)
    dst = _contiguous_strides(shape)
    view = _view(prog, x.shape, _contiguous_strides(x.shape), dst, 0,
                 sum(b * s for b, s in zip(begin, dst)))
    return _step(node, [f"aidge_fill({out.cname}, {out.enum}, {out.size}, INT64_C({int(value)}));",
                        f"aidge_copy({x.cname}, {x.enum}, {out.cname}, {out.enum}, &{view});"],
                 [x.name], out)
