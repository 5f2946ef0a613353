"""One lowering per operator: the C kernel call (and its constants) for a node.

Each function takes (program, graph, node, shape at batch 1, engine dtype),
registers the node's output `Tensor` and returns its `Step`. Anything the C
library cannot reproduce exactly raises `UnsupportedOperatorError` naming the
node.
"""
from __future__ import annotations

import numpy as np

from ..errors import UnsupportedOperatorError
from ..interp.geometry import window_geometry
from ..ir import OpType
from . import fuse
from .lower import CTYPES, OVERFLOW, ROUNDING, SHORT, Step, Tensor, comment, narrowest, type_range

op = OpType
LOWER = {}


def lowering(*ops):
    def register(fn):
        for o in ops:
            LOWER[o] = fn
        return fn
    return register


def _fail(node, detail):
    return UnsupportedOperatorError(node.name, node.op.value, detail)


def _out(prog, node, dtype, shape, engine_dtype, alias=None) -> Tensor:
    t = Tensor(node.name, f"T{len(prog.tensors)}", dtype, tuple(shape), engine_dtype, alias)
    prog.tensors[node.name] = t
    return t


def _inputs(prog, node):
    return [_tensor(prog, name) for name in node.inputs]


def _tensor(prog, name) -> Tensor:
    """The tensor `name`; a graph constant becomes a static const array on first use."""
    if name not in prog.tensors and prog.graph is not None and prog.graph.is_constant(name):
        value = np.asarray(prog.graph.constant(name))
        if value.dtype.kind in "iu":
            dtype = narrowest(int(value.min()), int(value.max())) if value.size else "int8"
        elif value.dtype == np.float32:
            dtype = "float32"
        else:
            raise UnsupportedOperatorError(name, "Constant", f"a {value.dtype} constant operand")
        cname = prog.array(value, dtype, "C")
        prog.tensors[name] = Tensor(name, cname, dtype, tuple(value.shape), str(value.dtype),
                                    virtual=True, constant=True)
    return prog.tensors[name]


def _acc(prog) -> str:
    """The accumulator rule struct (one per program) and its storage type."""
    if "ACC" not in prog.__dict__.setdefault("_structs", {}):
        t = prog.target
        prog.constants.append(f"static const aidge_acc_t ACC = {{{t.acc_bits}, {OVERFLOW[t.overflow]}}};")
        prog._structs["ACC"] = True
    return "&ACC"


def _acc_dtype(prog) -> str:
    return "int32" if prog.target.acc_bits <= 32 else "int64"


def _contiguous_strides(shape):
    strides, step = [], 1
    for d in reversed(shape):
        strides.append(step)
        step *= int(d)
    return list(reversed(strides))


def _view(prog, shape, src_strides, dst_strides, src_offset=0, dst_offset=0) -> str:
    if len(shape) > 8:
        raise UnsupportedOperatorError("view", "copy", f"rank {len(shape)} > 8")
    pad = lambda v: "{" + ", ".join(str(int(x)) for x in (list(v) + [0] * (8 - len(v)))) + "}"
    return prog.struct("aidge_view_t", {"ndim": len(shape), "shape": pad(shape),
                                        "src_strides": pad(src_strides), "dst_strides": pad(dst_strides),
                                        "src_offset": src_offset, "dst_offset": dst_offset}, "V")


def _constant(graph, node, index):
    name = node.inputs[index]
    if not graph.is_constant(name):
        raise _fail(node, f"operand {index} ('{name}') is not a constant")
    return np.asarray(graph.constant(name))


def _fitting_array(prog, node, values, candidates, what):
    values = np.asarray(values)
    lo, hi = (int(values.min()), int(values.max())) if values.size else (0, 0)
    for dtype in candidates:
        tmin, tmax = type_range(dtype)
        if tmin <= lo and hi <= tmax:
            return prog.array(values.astype(np.int64), dtype, "W"), dtype
    raise _fail(node, f"{what} in [{lo}, {hi}] do not fit {'/'.join(candidates)}")


def _step(node, code, reads, out, *also):
    """A step writing `out` (what its debug dump holds) and the tensors `also` (a fused
    rescale's output)."""
    return Step(node.name, node.op.value, code if isinstance(code, list) else [code], reads, out.name,
                [t.name for t in also if t is not out])


# --------------------------------------------------------------- affine ops
@lowering(op.CONV)
def conv(prog, graph, node, shape, engine_dtype):
    x = _tensor(prog, node.inputs[0])
    w = _constant(graph, node, 1)
    b = _constant(graph, node, 2)
    hwc = node.attrs.get("layout") == "NHWC"
    layout = node.attrs.get("weight_layout", "OIHW")
    if w.ndim != 4 or len(x.shape) != 4:
        raise _fail(node, f"input {x.shape} / weights {w.shape}: only 2-D convolutions")
    if layout == "OIHW":
        w = w.transpose(0, 2, 3, 1) if hwc else w
    elif layout == "OHWI":
        w = w if hwc else w.transpose(0, 3, 1, 2)
    elif layout == "1HWO":
        w = w.transpose(3, 1, 2, 0) if hwc else w.transpose(3, 0, 1, 2)
    else:
        raise _fail(node, f"weight layout {layout!r}")
    k = w.shape[0]
    kh, kw = (w.shape[1], w.shape[2]) if hwc else (w.shape[2], w.shape[3])
    c, h, wd = (x.shape[3], x.shape[1], x.shape[2]) if hwc else x.shape[1:]
    group = int(node.attrs.get("group", 1))
    strides, dilations, pads, out_hw, _ = window_geometry(node, (h, wd), (kh, kw))
    if x.dtype not in ("int8", "uint8", "int16", "uint16"):
        raise _fail(node, f"input stored as {x.dtype}: the conv kernels take 8/16-bit inputs")
    wname, wtype = _fitting_array(prog, node, w, ("int8", "int16"), "weights")
    bname, btype = _fitting_array(prog, node, b, ("int32", "int64"), "biases")
    geom = prog.struct("aidge_conv_t", dict(
        c=c, h=h, w=wd, k=k, oh=out_hw[0], ow=out_hw[1], kh=kh, kw=kw, sh=strides[0], sw=strides[1],
        dh=dilations[0], dw=dilations[1], pt=pads[0], pl=pads[1], group=group,
        x_zero_point=int(node.attrs.get("input_zero_point", 0)), hwc=int(hwc)))
    acc, y, sink = _affine_out(prog, graph, node, shape, engine_dtype)
    kind = "depthwise" if group == c and group > 1 and k % c == 0 else "conv"
    fn = f"aidge_{kind}_{SHORT[x.dtype]}_{SHORT[wtype]}_{SHORT[btype]}"
    return _step(node, f"{fn}({x.cname}, {wname}, {bname}, {y.cname}, {y.enum}, &{geom}, {_acc(prog)}, "
                       f"{sink});", [x.name], acc, y)


@lowering(op.GEMM)
def gemm(prog, graph, node, shape, engine_dtype):
    x = _tensor(prog, node.inputs[0])
    w = _constant(graph, node, 1).astype(np.int64)
    b = _constant(graph, node, 2)
    if float(node.attrs.get("alpha", 1.0)) != 1.0 or float(node.attrs.get("beta", 1.0)) != 1.0 \
            or node.attrs.get("transA", 0):
        raise _fail(node, "alpha/beta != 1 or transA")
    if not node.attrs.get("transB", 0):
        w = w.T
    w = w - int(node.attrs.get("weight_zero_point", 0))
    if len(x.shape) != 2 or w.shape[1] != x.shape[1]:
        raise _fail(node, f"input {x.shape} / weights {w.shape}")
    if x.dtype not in ("int8", "uint8", "int16", "uint16"):
        raise _fail(node, f"input stored as {x.dtype}: the fc kernels take 8/16-bit inputs")
    wname, wtype = _fitting_array(prog, node, w, ("int8", "int16"), "weights")
    bname, btype = _fitting_array(prog, node, b, ("int32", "int64"), "biases")
    acc, y, sink = _affine_out(prog, graph, node, shape, engine_dtype)
    fn = f"aidge_fc_{SHORT[x.dtype]}_{SHORT[wtype]}_{SHORT[btype]}"
    zp = int(node.attrs.get("input_zero_point", 0))
    return _step(node, f"{fn}({x.cname}, {wname}, {bname}, {y.cname}, {y.enum}, {x.shape[0]}, "
                       f"{w.shape[1]}, {w.shape[0]}, {zp}, {_acc(prog)}, {sink});", [x.name], acc, y)


def _affine_out(prog, graph, node, shape, engine_dtype):
    """(accumulator tensor, tensor the kernel writes, sink argument) of a Conv / Gemm.

    Unfused: the kernel stores its accumulators in the arena (sink NULL). Fused with its
    QUANTIZER (see `fuse`): the accumulator tensor is virtual, the kernel rescales each
    accumulator as the quantizer would and writes the quantizer's output."""
    acc = _out(prog, node, _acc_dtype(prog), shape, engine_dtype)
    q = fuse.output_rescale(prog, graph, node)
    if q is None:
        return acc, acc, "NULL"
    dump = fuse.debug_buffer(prog, acc)
    y, rq, split = _rescale(prog, q, acc, *prog.shapes[q.name])
    return acc, y, fuse.sink(prog, rq, split, dump, acc.enum)


# ----------------------------------------------------------------- rescales
def _channel_split(shape, n_params, axis):
    """(outer, channels, inner) of a per-channel rescale along `axis`."""
    total = int(np.prod(shape, dtype=np.int64))
    if n_params == 1:
        return 1, 1, total
    axis %= len(shape)
    if shape[axis] != n_params:
        raise ValueError(f"{n_params} parameters for axis {axis} of {shape}")
    return (int(np.prod(shape[:axis], dtype=np.int64)), n_params,
            int(np.prod(shape[axis + 1:], dtype=np.int64)))


@lowering(op.QUANTIZER)
def quantizer(prog, graph, node, shape, engine_dtype):
    host = prog.plan.get(node.name)
    if host is not None:  # computed by the kernel of `host` (before or after this step)
        out = prog.tensors.get(node.name)
        if out is None:  # an operand rescale: its host comes later
            out, _, _ = _rescale(prog, node, _tensor(prog, node.inputs[0]), shape, engine_dtype,
                                 struct=False)
            fuse.debug_buffer(prog, out)
        return Step(node.name, node.op.value, [f"/* computed by the step of {comment(repr(host))} "
                                               "(fused rescale) */"], [], out.name, deferred=True)
    x = _tensor(prog, node.inputs[0])
    if node.attrs.get("mode", "float") == "tflite_quantize":
        return _tflite_quantize(prog, node, x, shape, engine_dtype)
    out, rq, (outer, channels, inner) = _rescale(prog, node, x, shape, engine_dtype)
    return _step(node, f"aidge_requant({x.cname}, {x.enum}, {out.cname}, {out.enum}, {outer}, "
                       f"{channels}, {inner}, &{rq});", [x.name], out)


def _tflite_quantize(prog, node, x, shape, engine_dtype):
    a = node.attrs
    dtype = str(np.dtype(a["dtype"]))
    if dtype not in SHORT:
        raise _fail(node, f"output dtype {dtype}")
    if a.get("float32"):
        raise _fail(node, "float32 rescale (compat='aidge'): the C library rescales in float64 "
                          "or integers only")
    if x.dtype != "float32":
        raise _fail(node, "QUANTIZE of a non-float tensor")
    out = _out(prog, node, dtype, shape, engine_dtype)
    scale = float(np.float32(a["scale"])).hex() + "f"
    return _step(node, f"aidge_tflite_quantize({x.cname}, {out.cname}, {out.enum}, {out.size}, "
                       f"{scale}, {int(a['zero_point'])}, {int(a['lo'])}, {int(a['hi'])});",
                 [x.name], out)


def _rescale(prog, node, x, shape, engine_dtype, struct=True, out=None):
    """(output tensor, aidge_requant_t name, (outer, channels, inner)) of a rescale QUANTIZER
    reading `x`; `out`: its tensor, already registered; `struct=False`: the tensor only."""
    a = node.attrs
    mode = a.get("mode", "float")
    dtype = str(np.dtype(a["dtype"]))
    if dtype not in SHORT:
        raise _fail(node, f"output dtype {dtype}")
    if a.get("float32"):
        raise _fail(node, "float32 rescale (compat='aidge'): the C library rescales in float64 "
                          "or integers only")
    if out is None:
        out = _out(prog, node, dtype, shape, engine_dtype)
    if not struct:
        return out, None, None
    fields = {"lo": f"INT64_C({int(a['lo'])})", "hi": f"INT64_C({int(a['hi'])})"}
    if mode in ("float", "int"):
        params = np.atleast_1d(a["scale"] if mode == "float" else a["multiplier"])
        axis = 1 if len(x.shape) > 1 else 0
        fields.update(mode="AIDGE_RQ_FLOAT" if mode == "float" else "AIDGE_RQ_INT",
                      rounding=ROUNDING[a["rounding"]])
        if mode == "float":
            fields["scale"] = prog.array(params, "double", "S")
        else:
            fields["multiplier"] = prog.array(params, "int32", "S")
            fields["shift"] = prog.array(np.atleast_1d(a["shift"]), "int32", "S")
    elif mode == "gemmlowp":
        params = np.atleast_1d(a["multiplier"])
        axis = int(a.get("axis", -1))
        fields.update(mode="AIDGE_RQ_GEMMLOWP", multiplier=prog.array(params, "int32", "S"),
                      shift=prog.array(np.atleast_1d(a["shift"]), "int32", "S"),
                      in_zero_point=f"INT64_C({int(a.get('input_zero_point', 0))})",
                      pre_shift=int(a.get("pre_shift", 0)), out_zero_point=int(a.get("zero_point", 0)))
    elif mode == "double":
        params = np.atleast_1d(np.asarray(a["multiplier"], np.float64))
        axis = -1
        fields.update(mode="AIDGE_RQ_DOUBLE", scale=prog.array(params, "double", "S"),
                      out_zero_point=int(a["zero_point"]))
    else:
        raise _fail(node, f"quantizer mode {mode!r}")
    if mode in ("float", "double") and x.dtype != "float32":
        prog.uses_float = True
    if x.dtype == "float32" and mode != "float":
        raise _fail(node, f"{mode} rescale of a float tensor")
    if len(x.shape) == 1 and params.size != 1:
        raise _fail(node, "per-channel rescale of a rank-1 tensor (channels on the batch axis)")
    try:
        outer, channels, inner = _channel_split(x.shape, params.size, axis)
    except ValueError as exc:
        raise _fail(node, str(exc)) from None
    fields["n_params"] = 1 if params.size == 1 else channels
    rq = prog.struct("aidge_requant_t", fields, "R")
    return out, rq, (outer, channels, inner)


@lowering(op.DEQUANTIZE)
def dequantize(prog, graph, node, shape, engine_dtype):
    x = _tensor(prog, node.inputs[0])
    out = _out(prog, node, "float32", shape, engine_dtype)
    scale = float(np.float32(node.attrs["scale"])).hex() + "f"
    return _step(node, f"aidge_dequantize({x.cname}, {x.enum}, {out.cname}, {out.size}, {scale}, "
                       f"{int(node.attrs['zero_point'])});", [x.name], out)


# ------------------------------------------------------------- elementwise
def _broadcast_strides(in_shape, out_shape):
    in_shape = (1,) * (len(out_shape) - len(in_shape)) + tuple(in_shape)
    strides = _contiguous_strides(in_shape)
    return [0 if d == 1 and o != 1 else s for d, o, s in zip(in_shape, out_shape, strides)]


@lowering(op.ADD, op.SUB, op.MUL)
def binary(prog, graph, node, shape, engine_dtype):
    a, b = _inputs(prog, node)
    if "float32" in (a.dtype, b.dtype):
        raise _fail(node, "float operand")
    zps = [0, 0]
    if node.op is op.MUL:
        zps = [int(z) for z in node.attrs["input_zero_points"]]
        lo_a, hi_a = type_range(a.dtype)
        lo_b, hi_b = type_range(b.dtype)
        ends = [(p - zps[0]) * (q - zps[1]) for p in (lo_a, hi_a) for q in (lo_b, hi_b)]
        dtype, acc = narrowest(min(ends), max(ends)), "NULL"
    else:
        dtype, acc = _acc_dtype(prog), _acc(prog)
    code = {op.ADD: "AIDGE_ADD", op.SUB: "AIDGE_SUB", op.MUL: "AIDGE_MUL"}[node.op]
    fused_in = [prog.plan.get(n) == node.name for n in node.inputs]
    q = fuse.output_rescale(prog, graph, node)
    if node.op is op.MUL or not (any(fused_in) or q is not None):
        out = _out(prog, node, dtype, shape, engine_dtype)
        view = _view(prog, shape, _broadcast_strides(a.shape, shape), _broadcast_strides(b.shape, shape))
        return _step(node, f"aidge_binary({code}, {a.cname}, {a.enum}, {b.cname}, {b.enum}, {out.cname}, "
                           f"{out.enum}, &{view}, {zps[0]}, {zps[1]}, {acc});", [a.name, b.name], out)
    # fused: operands read before their rescales, the sum rescaled as it is produced
    sources, sinks = [], []
    for t, fused in zip((a, b), fused_in):
        if fused:
            qn = graph.node(t.name)
            x = prog.tensors[qn.inputs[0]]
            _, rq, split = _rescale(prog, qn, x, t.shape, t.engine_dtype, out=t)
            sources.append(x)
            sinks.append(fuse.sink(prog, rq, split, t.cname, t.enum))
        else:
            sources.append(t)
            sinks.append("NULL")
    total = _out(prog, node, dtype, shape, engine_dtype)
    y, ry = total, "NULL"
    if q is not None:
        dump = fuse.debug_buffer(prog, total)
        y, rq, split = _rescale(prog, q, total, *prog.shapes[q.name])
        ry = fuse.sink(prog, rq, split, dump, total.enum)
    xa, xb = sources
    view = _view(prog, shape, _broadcast_strides(xa.shape, shape), _broadcast_strides(xb.shape, shape))
    return _step(node, f"aidge_binary_fused({code}, {xa.cname}, {xa.enum}, {xb.cname}, {xb.enum}, "
                       f"{y.cname}, {y.enum}, &{view}, {sinks[0]}, {sinks[1]}, {acc}, {ry});",
                 [xa.name, xb.name], total, y, *[t for t, f in zip((a, b), fused_in) if f])


@lowering(op.RELU)
def relu(prog, graph, node, shape, engine_dtype):
    (x,) = _inputs(prog, node)
    out = _out(prog, node, x.dtype, shape, engine_dtype)
    return _step(node, f"aidge_relu({x.cname}, {x.enum}, {out.cname}, {out.enum}, {out.size});",
                 [x.name], out)


@lowering(op.CLIP)
def clip(prog, graph, node, shape, engine_dtype):
    (x,) = _inputs(prog, node)
    lo, hi = node.attrs.get("min"), node.attrs.get("max")
    if lo is None or hi is None or x.dtype == "float32":
        raise _fail(node, "integer clip needs min and max")
    out = _out(prog, node, x.dtype, shape, engine_dtype)
    return _step(node, f"aidge_clip({x.cname}, {x.enum}, {out.cname}, {out.enum}, {out.size}, "
                       f"INT64_C({int(lo)}), INT64_C({int(hi)}));", [x.name], out)


@lowering(op.LOOKUP)
def lookup(prog, graph, node, shape, engine_dtype):
    (x,) = _inputs(prog, node)
    table = np.asarray(node.attrs["table"])
    offset = int(node.attrs["offset"])
    lo, hi = type_range(x.dtype) if x.dtype != "float32" else (None, None)
    if lo is None or lo + offset < 0 or hi + offset >= table.size:
        raise _fail(node, f"a {x.dtype} input may fall outside the {table.size}-entry table")
    ttype = str(table.dtype)
    tname = prog.array(table, ttype, "L")
    out = _out(prog, node, ttype, shape, engine_dtype)
    return _step(node, f"aidge_lookup({x.cname}, {x.enum}, {out.cname}, {out.enum}, {out.size}, "
                       f"{tname}, {CTYPES[ttype][1]}, {offset});", [x.name], out)


#: Checks run on the graph before the engine computes shapes: (graph, node) -> None
#: (filled by the lowering modules, e.g. `ops_softmax`).
PRECHECK = {}
