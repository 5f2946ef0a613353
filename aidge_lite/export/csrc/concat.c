/* Data movement: strided copies (CONCAT operands, PAD interiors, TRANSPOSE)
 * with a change of integer storage type (float32 only to float32), and fills.
 * Values are copied exactly. */
#include "aidge_arith.h"

void aidge_copy(const void *x, aidge_dtype xt, void *y, aidge_dtype yt, const aidge_view_t *v)
{
    int32_t idx[AIDGE_MAX_DIMS] = {0};
    int64_t n = 1, i, is = v->src_offset, id = v->dst_offset;
    int32_t d;
    for (d = 0; d < v->ndim; ++d)
        n *= v->shape[d];
    for (i = 0; i < n; ++i) {
        if (xt == AIDGE_F32 && yt == AIDGE_F32) /* float tensors (DEQUANTIZE outputs) as they are */
            ((float *)y)[id] = ((const float *)x)[is];
        else
            aidge_store(y, yt, id, aidge_load(x, xt, is));
        for (d = v->ndim - 1; d >= 0; --d) {
            is += v->src_strides[d];
            id += v->dst_strides[d];
            if (++idx[d] < v->shape[d])
                break;
            is -= (int64_t)v->src_strides[d] * v->shape[d];
            id -= (int64_t)v->dst_strides[d] * v->shape[d];
            idx[d] = 0;
        }
    }
}

void aidge_fill(void *y, aidge_dtype yt, int32_t n, int64_t value)
{
    int32_t i;
    for (i = 0; i < n; ++i)
        aidge_store(y, yt, i, value);
}
