/* Fully connected: y[r, o] = fit(b[o] + sum_i (x[r, i] - zp) * w[o, i]), weights
 * (out, in) row-major, any weight zero point folded into the weights at export;
 * stored, or rescaled by a fused QUANTIZER (sink, see aidge_emit). */
#include "aidge_arith.h"

#define AIDGE_FC_DEF(XS, WS, BS, XT, WT, BT) \
void aidge_fc_##XS##_##WS##_##BS(const XT *x, const WT *w, const BT *b, void *y, aidge_dtype yt, \
                                 int32_t rows, int32_t in, int32_t out, int32_t x_zero_point, \
                                 const aidge_acc_t *acc, const aidge_sink_t *sink) \
{ \
    int32_t r, o, i; \
    for (r = 0; r < rows; ++r) { \
        const XT *xr = x + (int64_t)r * in; \
        for (o = 0; o < out; ++o) { \
            const WT *wr = w + (int64_t)o * in; \
            int64_t sum = b[o]; \
            for (i = 0; i < in; ++i) \
                sum += ((int64_t)xr[i] - x_zero_point) * (int64_t)wr[i]; \
            aidge_emit(y, yt, (int64_t)r * out + o, aidge_fit(sum, acc), sink); \
        } \
    } \
}

#define AIDGE_FC_ONLY(XS, WS, BS, XT, WT, BT) AIDGE_FC_DEF(XS, WS, BS, XT, WT, BT)
AIDGE_FOR_AFFINE(AIDGE_FC_ONLY)
