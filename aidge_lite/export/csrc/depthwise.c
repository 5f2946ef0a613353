/* Depthwise 2-D convolution (group == input channels, channel multiplier
 * k / c): one input channel per output channel, no inner channel loop. Same
 * layouts, accumulator rule and fused rescale (sink) as conv.c. */
#include "aidge_arith.h"

#define AIDGE_DW_DEF(XS, WS, BS, XT, WT, BT) \
void aidge_depthwise_##XS##_##WS##_##BS(const XT *x, const WT *w, const BT *b, void *y, \
                                        aidge_dtype yt, const aidge_conv_t *g, const aidge_acc_t *acc, \
                                   const aidge_sink_t *sink) \
{ \
    const int32_t mult = g->k / g->c; \
    const int64_t zp = g->x_zero_point; \
    int32_t oc, oy, ox, i, j; \
    for (oc = 0; oc < g->k; ++oc) { \
        const int32_t ic = oc / mult; \
        for (oy = 0; oy < g->oh; ++oy) { \
            for (ox = 0; ox < g->ow; ++ox) { \
                int64_t sum = b[oc]; \
                int64_t out; \
                for (i = 0; i < g->kh; ++i) { \
                    const int32_t iy = oy * g->sh - g->pt + i * g->dh; \
                    if (iy < 0 || iy >= g->h) \
                        continue; \
                    for (j = 0; j < g->kw; ++j) { \
                        const int32_t ix = ox * g->sw - g->pl + j * g->dw; \
                        int64_t xv, wv; \
                        if (ix < 0 || ix >= g->w) \
                            continue; \
                        if (g->hwc) { \
                            xv = x[((int64_t)iy * g->w + ix) * g->c + ic]; \
                            wv = w[((int64_t)oc * g->kh + i) * g->kw + j]; \
                        } else { \
                            xv = x[((int64_t)ic * g->h + iy) * g->w + ix]; \
                            wv = w[((int64_t)oc * g->kh + i) * g->kw + j]; \
                        } \
                        sum += (xv - zp) * wv; \
                    } \
                } \
                out = g->hwc ? ((int64_t)oy * g->ow + ox) * g->k + oc \
                             : ((int64_t)oc * g->oh + oy) * g->ow + ox; \
                aidge_emit(y, yt, out, aidge_fit(sum, acc), sink); \
            } \
        } \
    } \
}

#define AIDGE_DW_ONLY(XS, WS, BS, XT, WT, BT) AIDGE_DW_DEF(XS, WS, BS, XT, WT, BT)
AIDGE_FOR_AFFINE(AIDGE_DW_ONLY)
