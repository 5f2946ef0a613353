/* Pools and reductions: max pool, average pool (exact sum, rounded division by
 * the number of valid taps or by the window area), global average pool,
 * REDUCE_SUM. CHW or HWC (g->hwc) tensors; every window sees the input. */
#include "aidge_arith.h"

static int64_t at(const aidge_pool_t *g, int32_t c, int32_t iy, int32_t ix)
{
    return g->hwc ? ((int64_t)iy * g->w + ix) * g->c + c : ((int64_t)c * g->h + iy) * g->w + ix;
}

static void pool(const void *x, aidge_dtype xt, void *y, aidge_dtype yt, const aidge_pool_t *g,
                 int average)
{
    int32_t c, oy, ox, i, j;
    for (c = 0; c < g->c; ++c) {
        for (oy = 0; oy < g->oh; ++oy) {
            for (ox = 0; ox < g->ow; ++ox) {
                int64_t best = INT64_MIN, sum = 0, count = 0, r;
                for (i = 0; i < g->kh; ++i) {
                    const int32_t iy = oy * g->sh - g->pt + i * g->dh;
                    if (iy < 0 || iy >= g->h)
                        continue;
                    for (j = 0; j < g->kw; ++j) {
                        const int32_t ix = ox * g->sw - g->pl + j * g->dw;
                        int64_t v;
                        if (ix < 0 || ix >= g->w)
                            continue;
                        v = aidge_load(x, xt, at(g, c, iy, ix));
                        best = v > best ? v : best;
                        sum += v;
                        ++count;
                    }
                }
                if (average) {
                    if (g->count_include_pad)
                        count = (int64_t)g->kh * g->kw;
                    r = aidge_round_div(sum, count, g->rounding);
                } else {
                    r = best;
                }
                aidge_store(y, yt, g->hwc ? ((int64_t)oy * g->ow + ox) * g->c + c
                                          : ((int64_t)c * g->oh + oy) * g->ow + ox, r);
            }
        }
    }
}

void aidge_maxpool(const void *x, aidge_dtype xt, void *y, aidge_dtype yt, const aidge_pool_t *g)
{
    pool(x, xt, y, yt, g, 0);
}

void aidge_avgpool(const void *x, aidge_dtype xt, void *y, aidge_dtype yt, const aidge_pool_t *g)
{
    pool(x, xt, y, yt, g, 1);
}

void aidge_global_avgpool(const void *x, aidge_dtype xt, void *y, aidge_dtype yt, int32_t c,
                          int32_t hw, int32_t rounding)
{
    int32_t k, i;
    for (k = 0; k < c; ++k) {
        int64_t sum = 0;
        for (i = 0; i < hw; ++i)
            sum += aidge_load(x, xt, (int64_t)k * hw + i);
        aidge_store(y, yt, k, aidge_round_div(sum, hw, rounding));
    }
}

void aidge_reduce_sum(const void *x, aidge_dtype xt, void *y, aidge_dtype yt,
                      const aidge_view_t *kept, const aidge_view_t *reduced)
{
    int32_t ko[AIDGE_MAX_DIMS] = {0}, ro[AIDGE_MAX_DIMS];
    int64_t n_kept = 1, n_red = 1, i, r, base = 0;
    int32_t d;
    for (d = 0; d < kept->ndim; ++d)
        n_kept *= kept->shape[d];
    for (d = 0; d < reduced->ndim; ++d)
        n_red *= reduced->shape[d];
    for (i = 0; i < n_kept; ++i) {
        int64_t sum = 0, off = base;
        for (d = 0; d < reduced->ndim; ++d)
            ro[d] = 0;
        for (r = 0; r < n_red; ++r) {
            sum += aidge_load(x, xt, off);
            for (d = reduced->ndim - 1; d >= 0; --d) {
                off += reduced->src_strides[d];
                if (++ro[d] < reduced->shape[d])
                    break;
                off -= (int64_t)reduced->src_strides[d] * reduced->shape[d];
                ro[d] = 0;
            }
        }
        aidge_store(y, yt, i, sum);
        for (d = kept->ndim - 1; d >= 0; --d) {
            base += kept->src_strides[d];
            if (++ko[d] < kept->shape[d])
                break;
            base -= (int64_t)kept->src_strides[d] * kept->shape[d];
            ko[d] = 0;
        }
    }
}
