/* Elementwise ops: ADD / SUB (accumulators: the target's rule applies; optionally
 * with their operand and result rescales fused, aidge_binary_fused), MUL
 * with zero points (TFLite), RELU and CLIP. Binary ops broadcast: the view's
 * src_strides index `a`, its dst_strides index `b`, `y` is contiguous. */
#include "aidge_arith.h"

void aidge_binary(int32_t op, const void *a, aidge_dtype at, const void *b, aidge_dtype bt,
                  void *y, aidge_dtype yt, const aidge_view_t *v, int32_t a_zero_point,
                  int32_t b_zero_point, const aidge_acc_t *acc)
{
    int32_t idx[AIDGE_MAX_DIMS] = {0};
    int64_t n = 1, i, ia = v->src_offset, ib = v->dst_offset;
    int32_t d;
    for (d = 0; d < v->ndim; ++d)
        n *= v->shape[d];
    for (i = 0; i < n; ++i) {
        const int64_t x1 = aidge_load(a, at, ia) - a_zero_point;
        const int64_t x2 = aidge_load(b, bt, ib) - b_zero_point;
        int64_t r = op == AIDGE_ADD ? x1 + x2 : (op == AIDGE_SUB ? x1 - x2 : x1 * x2);
        if (acc)
            r = aidge_fit(r, acc);
        aidge_store(y, yt, i, r);
        for (d = v->ndim - 1; d >= 0; --d) { /* next index, odometer style */
            ia += v->src_strides[d];
            ib += v->dst_strides[d];
            if (++idx[d] < v->shape[d])
                break;
            ia -= (int64_t)v->src_strides[d] * v->shape[d];
            ib -= (int64_t)v->dst_strides[d] * v->shape[d];
            idx[d] = 0;
        }
    }
}

/* An operand through its fused rescale (sink NULL: as loaded); the debug dump keeps
 * the rescaled value at the operand's own index. */
static int64_t operand(const void *x, aidge_dtype xt, int64_t i, const aidge_sink_t *sink)
{
    int64_t v = aidge_load(x, xt, i);
    if (!sink)
        return v;
    v = aidge_requant_value(v, sink->rq, aidge_sink_channel(sink, i));
    if (sink->dump)
        aidge_store(sink->dump, sink->dump_type, i, v);
    return v;
}

void aidge_binary_fused(int32_t op, const void *a, aidge_dtype at, const void *b, aidge_dtype bt,
                        void *y, aidge_dtype yt, const aidge_view_t *v, const aidge_sink_t *ra,
                        const aidge_sink_t *rb, const aidge_acc_t *acc, const aidge_sink_t *ry)
{
    int32_t idx[AIDGE_MAX_DIMS] = {0};
    int64_t n = 1, i, ia = v->src_offset, ib = v->dst_offset;
    int32_t d;
    for (d = 0; d < v->ndim; ++d)
        n *= v->shape[d];
    for (i = 0; i < n; ++i) {
        const int64_t x1 = operand(a, at, ia, ra);
        const int64_t x2 = operand(b, bt, ib, rb);
        aidge_emit(y, yt, i, aidge_fit(op == AIDGE_ADD ? x1 + x2 : x1 - x2, acc), ry);
        for (d = v->ndim - 1; d >= 0; --d) {
            ia += v->src_strides[d];
            ib += v->dst_strides[d];
            if (++idx[d] < v->shape[d])
                break;
            ia -= (int64_t)v->src_strides[d] * v->shape[d];
            ib -= (int64_t)v->dst_strides[d] * v->shape[d];
            idx[d] = 0;
        }
    }
}

void aidge_relu(const void *x, aidge_dtype xt, void *y, aidge_dtype yt, int32_t n)
{
    int32_t i;
    for (i = 0; i < n; ++i) {
        const int64_t v = aidge_load(x, xt, i);
        aidge_store(y, yt, i, v > 0 ? v : 0);
    }
}

void aidge_clip(const void *x, aidge_dtype xt, void *y, aidge_dtype yt, int32_t n, int64_t lo,
                int64_t hi)
{
    int32_t i;
    for (i = 0; i < n; ++i)
        aidge_store(y, yt, i, aidge_clamp(aidge_load(x, xt, i), lo, hi));
}
