/* Exact integer arithmetic shared by the kernels (static inline).
 *
 * Every rounding is computed from the exact floor of a quotient and the sign
 * of (remainder - 1/2); nothing adds a rounding half first, so no intermediate
 * can overflow int64. Right shifts of negative values are never used (they are
 * implementation-defined in C99): floor division goes through aidge_floor_shr.
 */
#ifndef AIDGE_ARITH_H
#define AIDGE_ARITH_H

#include <math.h>

#include "aidge_rt.h"

static inline int64_t aidge_load(const void *p, aidge_dtype t, int64_t i)
{
    switch (t) {
    case AIDGE_I8: return ((const int8_t *)p)[i];
    case AIDGE_U8: return ((const uint8_t *)p)[i];
    case AIDGE_I16: return ((const int16_t *)p)[i];
    case AIDGE_U16: return ((const uint16_t *)p)[i];
    case AIDGE_I32: return ((const int32_t *)p)[i];
    case AIDGE_I64: return ((const int64_t *)p)[i];
    default: return (int64_t)((const float *)p)[i];
    }
}

/* The caller guarantees that v fits t (values are clamped or fitted first). */
static inline void aidge_store(void *p, aidge_dtype t, int64_t i, int64_t v)
{
    switch (t) {
    case AIDGE_I8: ((int8_t *)p)[i] = (int8_t)v; break;
    case AIDGE_U8: ((uint8_t *)p)[i] = (uint8_t)v; break;
    case AIDGE_I16: ((int16_t *)p)[i] = (int16_t)v; break;
    case AIDGE_U16: ((uint16_t *)p)[i] = (uint16_t)v; break;
    case AIDGE_I32: ((int32_t *)p)[i] = (int32_t)v; break;
    case AIDGE_I64: ((int64_t *)p)[i] = v; break;
    default: ((float *)p)[i] = (float)v; break;
    }
}

static inline int64_t aidge_clamp(int64_t v, int64_t lo, int64_t hi)
{
    return v < lo ? lo : (v > hi ? hi : v);
}

/* floor(v / 2^s) for s in [1, 63]. */
static inline int64_t aidge_floor_shr(int64_t v, int s)
{
    return v >= 0 ? v >> s : -1 - ((-1 - v) >> s);
}

/* Round q + f (q the exact floor, cmp = sign(f - 1/2), f = 0 passed as cmp = -1). */
static inline int64_t aidge_resolve(int64_t q, int cmp, int mode)
{
    if (mode == AIDGE_FLOOR || cmp < 0)
        return q;
    if (cmp > 0)
        return q + 1;
    if (mode == AIDGE_HALF_UP)
        return q + 1;
    if (mode == AIDGE_HALF_EVEN)
        return (q & 1) ? q + 1 : q;
    return q >= 0 ? q + 1 : q; /* half away: q + 1/2 > 0 iff q >= 0 */
}

/* round(v / 2^shift) with `mode`; shift <= 0 multiplies (the caller checks the range). */
static inline int64_t aidge_round_shr(int64_t v, int shift, int mode)
{
    uint64_t rem, half;
    int64_t q;
    if (shift == 0)
        return v;
    if (shift < 0)
        return v * ((int64_t)1 << -shift);
    if (shift >= 64) { /* quotient in [-1/2, 1/2): only INT64_MIN / 2^64 ties */
        if (v >= 0)
            return aidge_resolve(0, -1, mode);
        return aidge_resolve(-1, (shift == 64 && v == INT64_MIN) ? 0 : 1, mode);
    }
    q = aidge_floor_shr(v, shift);
    rem = (uint64_t)v & ((((uint64_t)1) << shift) - 1u);
    half = ((uint64_t)1) << (shift - 1);
    return aidge_resolve(q, rem < half ? -1 : (rem > half ? 1 : 0), mode);
}

/* round(num / den), den > 0. */
static inline int64_t aidge_round_div(int64_t num, int64_t den, int mode)
{
    int64_t q = num / den, rem = num % den, other;
    if (rem < 0) { /* C truncates: move to floor division with rem in [0, den) */
        q -= 1;
        rem += den;
    }
    other = den - rem;
    return aidge_resolve(q, rem < other ? -1 : (rem > other ? 1 : 0), mode);
}

/* Round a finite double to an integral double with `mode`. */
static inline double aidge_round_double(double y, int mode)
{
    double a, r, f;
    int up;
    if (mode == AIDGE_HALF_EVEN)
        return nearbyint(y);
    if (mode == AIDGE_FLOOR)
        return floor(y);
    a = fabs(y);
    r = floor(a);
    f = a - r; /* exact */
    if (mode == AIDGE_HALF_AWAY)
        up = f >= 0.5;
    else
        up = (f > 0.5) || (f == 0.5 && y >= 0.0);
    r += up ? 1.0 : 0.0;
    return y < 0.0 ? -r : r;
}

/* clamp(round(y)) for a double y, [lo, hi] exact in double (|lo|, |hi| <= 2^53). */
static inline int64_t aidge_round_clamp_double(double y, int mode, int64_t lo, int64_t hi)
{
    double r = aidge_round_double(y, mode);
    if (!(r > (double)lo))
        return lo; /* NaN as well: the engines refuse non-finite inputs */
    if (r >= (double)hi)
        return hi;
    return (int64_t)r;
}

/* The target's accumulator rule on an exact int64 value. */
static inline int64_t aidge_fit(int64_t v, const aidge_acc_t *acc)
{
    int64_t hi, lo;
    uint64_t mask, low;
    if (acc->bits >= 64)
        return v;
    hi = (int64_t)((((uint64_t)1) << (acc->bits - 1)) - 1u);
    lo = -hi - 1;
    if (v >= lo && v <= hi)
        return v;
    aidge_overflows++;
    if (acc->overflow == AIDGE_OVF_SATURATE)
        return v > hi ? hi : lo;
    if (acc->overflow == AIDGE_OVF_WRAP) {
        mask = (((uint64_t)1) << acc->bits) - 1u;
        low = (uint64_t)v & mask;
        return low > (uint64_t)hi ? (int64_t)low - (int64_t)mask - 1 : (int64_t)low;
    }
    return v; /* "error": counted, model_run reports it */
}

/* Channel of flat index i under a fused rescale. */
static inline int32_t aidge_sink_channel(const aidge_sink_t *sink, int64_t i)
{
    return sink->rq->n_params == 1 ? 0 : (int32_t)((i / sink->inner) % sink->channels);
}

/* Where a kernel puts its result v (a fitted accumulator) for flat output index i:
 * stored as is (sink NULL), or rescaled by the fused QUANTIZER (the debug dump
 * keeps v). */
static inline void aidge_emit(void *y, aidge_dtype yt, int64_t i, int64_t v, const aidge_sink_t *sink)
{
    if (!sink) {
        aidge_store(y, yt, i, v);
        return;
    }
    if (sink->dump)
        aidge_store(sink->dump, sink->dump_type, i, v);
    aidge_store(y, yt, i, aidge_requant_value(v, sink->rq, aidge_sink_channel(sink, i)));
}

#endif
