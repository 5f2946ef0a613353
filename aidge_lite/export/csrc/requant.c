/* Rescales (QUANTIZER nodes): per channel of a (outer, channels, inner) view.
 *
 * int      clamp(round(x * M / 2^shift)): one exact rounding of the exact
 *          product, for any int64 x (the product is formed in two 32-bit
 *          words when it may leave int64); shift < 0 saturates at the bounds.
 * gemmlowp TFLite's double rounding: SaturatingRoundingDoublingHighMul (ties
 *          up), then RoundingDivideByPOT (ties away), zero points, pre-shift.
 * float    clamp(round(double(x) * scale)) (the "float" rescale of a Target).
 * double   clamp(round(double(x) * real) + zp), ties away (TFLite's FC).
 */
#include "aidge_arith.h"

#define AIDGE_WIDE ((int64_t)1 << 32)
#define AIDGE_LOW32 ((uint64_t)0xFFFFFFFFu)

/* clamp(v * 2^s) for s >= 1 without overflowing. */
static int64_t shl_clamp(int64_t v, int s, int64_t lo, int64_t hi)
{
    int64_t lo_ceil;
    if (s >= 63)
        return v > 0 ? hi : (v < 0 ? lo : 0);
    if (v > aidge_floor_shr(hi, s))
        return hi;
    lo_ceil = aidge_floor_shr(lo, s) + ((((uint64_t)lo) & ((((uint64_t)1) << s) - 1u)) ? 1 : 0);
    if (v < lo_ceil)
        return lo;
    return v * ((int64_t)1 << s);
}

/* clamp(round(a * m / 2^sh)) when a * m may not fit int64 (|m| < 2^31): the
 * product is top * 2^32 + low with low in [0, 2^32). */
static int64_t wide_requant(int64_t a, int64_t m, int sh, int mode, int64_t lo, int64_t hi)
{
    const int64_t h_part = aidge_floor_shr(a, 32) * m;
    const int64_t l_part = (int64_t)((uint64_t)a & AIDGE_LOW32) * m;
    const int64_t top = h_part + aidge_floor_shr(l_part, 32);
    const int64_t low = (int64_t)((uint64_t)l_part & AIDGE_LOW32);
    int64_t q, rem, half;
    int k, cmp;
    if (top >= -((int64_t)1 << 31) && top < ((int64_t)1 << 31)) { /* fits int64 */
        const int64_t v = top * AIDGE_WIDE + low;
        if (sh < 0)
            return shl_clamp(v, -sh, lo, hi);
        return aidge_clamp(aidge_round_shr(v, sh, mode), lo, hi);
    }
    if (sh <= 0) /* |product| >= 2^63: beyond any int64 bound */
        return top < 0 ? lo : hi;
    if (sh >= 32) {
        k = sh - 32;
        q = k ? aidge_floor_shr(top, k) : top;
        rem = (int64_t)((((uint64_t)top) & ((((uint64_t)1) << k) - 1u)) << 32) + low;
    } else {
        k = 32 - sh;
        if (!(top >= -((int64_t)1 << (31 + sh)) && top < ((int64_t)1 << (31 + sh))))
            return top < 0 ? lo : hi;
        q = top * ((int64_t)1 << k) + (low >> sh);
        rem = low & (((int64_t)1 << sh) - 1);
    }
    half = (int64_t)1 << (sh - 1);
    cmp = rem < half ? -1 : (rem > half ? 1 : 0);
    if (q == INT64_MAX && mode != AIDGE_FLOOR && cmp >= 0)
        return hi;
    return aidge_clamp(aidge_resolve(q, cmp, mode), lo, hi);
}

static int64_t requant_int(int64_t a, int64_t m, int sh, int mode, int64_t lo, int64_t hi)
{
    int64_t v;
    if (a <= -AIDGE_WIDE || a >= AIDGE_WIDE)
        return wide_requant(a, m, sh, mode, lo, hi);
    v = a * m;
    if (sh < 0)
        return shl_clamp(v, -sh, lo, hi);
    return aidge_clamp(aidge_round_shr(v, sh, mode), lo, hi);
}

/* TFLite's MultiplyByQuantizedMultiplier; every intermediate is an int32 there
 * (the export checked it), int64 here. */
static int64_t requant_gemmlowp(int64_t a, const aidge_requant_t *p, int64_t m, int shift)
{
    const int64_t v = (a - p->in_zero_point) * ((int64_t)1 << p->pre_shift);
    const int64_t x = v * ((int64_t)1 << (shift > 0 ? shift : 0));
    int64_t high;
    if (x == INT32_MIN && m == INT32_MIN)
        high = INT32_MAX;
    else
        high = aidge_round_shr(x * m, 31, AIDGE_HALF_UP);
    high = aidge_round_shr(high, shift < 0 ? -shift : 0, AIDGE_HALF_AWAY);
    return aidge_clamp(high + p->out_zero_point, p->lo, p->hi);
}

int64_t aidge_requant_value(int64_t v, const aidge_requant_t *p, int32_t k)
{
    switch (p->mode) {
    case AIDGE_RQ_INT:
        return requant_int(v, p->multiplier[k], p->shift[k], p->rounding, p->lo, p->hi);
    case AIDGE_RQ_GEMMLOWP:
        return requant_gemmlowp(v, p, p->multiplier[k], p->shift[k]);
    case AIDGE_RQ_DOUBLE:
        return aidge_round_clamp_double((double)v * p->scale[k], AIDGE_HALF_AWAY,
                                        p->lo - p->out_zero_point, p->hi - p->out_zero_point)
               + p->out_zero_point;
    default: /* float */
        return aidge_round_clamp_double((double)v * p->scale[k], p->rounding, p->lo, p->hi);
    }
}

void aidge_requant(const void *x, aidge_dtype xt, void *y, aidge_dtype yt, int32_t outer,
                   int32_t channels, int32_t inner, const aidge_requant_t *p)
{
    int32_t o, c, s;
    int64_t i = 0;
    for (o = 0; o < outer; ++o) {
        for (c = 0; c < channels; ++c) {
            const int32_t k = p->n_params == 1 ? 0 : c;
            for (s = 0; s < inner; ++s, ++i) {
                int64_t r;
                if (xt == AIDGE_F32) /* float32 model inputs (float mode) are read as they are */
                    r = aidge_round_clamp_double((double)((const float *)x)[i] * p->scale[k],
                                                 p->rounding, p->lo, p->hi);
                else
                    r = aidge_requant_value(aidge_load(x, xt, i), p, k);
                aidge_store(y, yt, i, r);
            }
        }
    }
}

void aidge_tflite_quantize(const float *x, void *y, aidge_dtype yt, int32_t n, float scale,
                           int32_t zero_point, int64_t lo, int64_t hi)
{
    int32_t i;
    for (i = 0; i < n; ++i) {
        const float q = x[i] / scale;
        const double mag = floor(fabs((double)q) + 0.5);
        const double r = q < 0.0f ? -mag : mag;
        aidge_store(y, yt, i, aidge_round_clamp_double(r + (double)zero_point, AIDGE_FLOOR, lo, hi));
    }
}

void aidge_dequantize(const void *x, aidge_dtype xt, float *y, int32_t n, float scale,
                      int32_t zero_point)
{
    int32_t i;
    for (i = 0; i < n; ++i)
        y[i] = (float)((double)(aidge_load(x, xt, i) - zero_point) * (double)scale);
}
