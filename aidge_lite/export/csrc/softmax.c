/* Int8 SOFTMAX over the last axis, bit-exact to TFLite's reference kernel
 * (reference_ops::Softmax, int8 -> int8, gemmlowp fixed point) and to the
 * integer engine's kernels/softmax.py (softmax_int8 and its NumPy twin), whose
 * arithmetic this file repeats step by step. Per row:
 *
 * 1. d = x - max(row); an element with d < diff_min contributes nothing and
 *    outputs -128;
 * 2. a = SRDHM(d * 2^input_left_shift, input_multiplier) (Q5.26),
 *    e = exp_on_negative_values(a) (Q0.31);
 * 3. sum = sum of RDBPOT(e, 12) (Q12.19); its reciprocal is normalised with a
 *    count of leading zeros h and one_over_one_plus_x_for_x_in_0_1;
 * 4. y = clamp(RDBPOT(SRDHM(recip, e), 35 - h) - 128) (output scale 1/256,
 *    zero point -128, hard-coded as in TFLite).
 *
 * Every gemmlowp intermediate is an int32 in TFLite; here an int64_t holding
 * it: products are exact, additions that TFLite does in int32 wrap modulo 2^32
 * (wrap32: as two's-complement int32 arithmetic would; no valid input gets
 * there), left shifts saturate where gemmlowp's saturate. No right shift of a
 * negative value (implementation-defined in C99): roundings go through
 * aidge_round_shr. The exponentials are computed again in the output pass
 * instead of being kept: no scratch buffer.
 *
 * TFLite aborts (TFLITE_CHECK(exponent <= 31)) when a row's sum reaches 2^28
 * (the Q12.19 value 512: e.g. 512 elements equal to the row maximum); the
 * integer engine raises ValueError there. This kernel writes -128 over such a
 * row and returns the number of such rows (0 otherwise); the generated
 * model_run turns that into its AIDGE_STATUS_SOFTMAX bit. The export proves
 * at export time whether a row can get there (never for fewer than 512
 * columns) and refuses a model where every input would. */
#include "aidge_arith.h"

#define I32_MIN_ (-(int64_t)2147483647 - 1)
#define I32_MAX_ ((int64_t)2147483647)
#define ACC_INT_BITS 12
#define SUM_LIMIT ((int64_t)1 << 28)

/* Raw int32 constants of gemmlowp's fixedpoint.h. */
#define EXP_MINUS_ONE_EIGHTH ((int64_t)1895147668) /* exp(-1/8), Q0.31 */
#define ONE_THIRD ((int64_t)715827883)             /* 1/3, Q0.31 */
#define FORTY_EIGHT_OVER_17 ((int64_t)1515870810)  /* Q2.29 */
#define NEG_THIRTY_TWO_OVER_17 (-(int64_t)1010580540) /* Q2.29 */

/* exp(-2^k) in Q0.31, applied when bit (26 + k) of the Q5.26 remainder is set. */
static const int32_t EXP_BARREL_BIT[7] = {24, 25, 26, 27, 28, 29, 30};
static const int32_t EXP_BARREL_MUL[7] = {1672461947, 1302514674, 790015084, 290630308,
                                          39332535, 720401, 242};

/* v modulo 2^32 as a two's-complement int32. */
static int64_t wrap32(int64_t v)
{
    const uint64_t low = (uint64_t)v & (uint64_t)0xFFFFFFFFu;
    return low >= (uint64_t)0x80000000u ? (int64_t)low - ((int64_t)1 << 32) : (int64_t)low;
}

/* SaturatingRoundingDoublingHighMul: a * b / 2^31 to nearest, ties up. */
static int64_t srdhm(int64_t a, int64_t b)
{
    if (a == I32_MIN_ && b == I32_MIN_)
        return I32_MAX_;
    return aidge_round_shr(a * b, 31, AIDGE_HALF_UP); /* |a * b| <= 2^62 */
}

/* RoundingDivideByPOT: x / 2^e to nearest, ties away from zero (e in [0, 63]). */
static int64_t rdbpot(int64_t x, int e)
{
    return aidge_round_shr(x, e, AIDGE_HALF_AWAY);
}

/* SaturatingRoundingMultiplyByPOT<e>, e > 0: x * 2^e saturated to int32. */
static int64_t sat_shift_left(int64_t x, int e)
{
    const int64_t threshold = ((int64_t)1 << (31 - e)) - 1;
    if (x > threshold)
        return I32_MAX_;
    if (x < -threshold)
        return I32_MIN_;
    return x * ((int64_t)1 << e);
}

/* RoundingHalfSum: (a + b + sign) / 2 with C's truncating division. */
static int64_t rounding_half_sum(int64_t a, int64_t b)
{
    int64_t s = a + b;
    s += s >= 0 ? 1 : -1;
    return s / 2;
}

/* gemmlowp exp_on_negative_values: Q5.26 a <= 0 in, Q0.31 out. */
static int64_t exp_on_negative_values(int64_t a)
{
    const int64_t quarter = (int64_t)1 << 24;
    const int64_t a_mod = (int64_t)((uint64_t)a & (uint64_t)(quarter - 1)) - quarter;
    const int64_t x = sat_shift_left(a_mod, 5) + ((int64_t)1 << 28); /* Taylor around -1/8 */
    const int64_t x2 = srdhm(x, x);
    const int64_t x3 = srdhm(x2, x);
    const int64_t x4 = srdhm(x2, x2);
    const int64_t poly = rdbpot(wrap32(srdhm(wrap32(rdbpot(x4, 2) + x3), ONE_THIRD) + x2), 1);
    int64_t result = wrap32(EXP_MINUS_ONE_EIGHTH + srdhm(EXP_MINUS_ONE_EIGHTH, wrap32(x + poly)));
    const uint64_t remainder = (uint64_t)wrap32(a_mod - a);
    int k;
    for (k = 0; k < 7; ++k)
        if ((remainder >> EXP_BARREL_BIT[k]) & 1u)
            result = srdhm(result, EXP_BARREL_MUL[k]);
    return a == 0 ? I32_MAX_ : result;
}

/* gemmlowp one_over_one_plus_x_for_x_in_0_1 (Newton-Raphson), Q0.31 in and out. */
static int64_t one_over_one_plus_x_for_x_in_0_1(int64_t a)
{
    const int64_t half_denominator = rounding_half_sum(a, I32_MAX_);
    int64_t x = wrap32(FORTY_EIGHT_OVER_17 + srdhm(half_denominator, NEG_THIRTY_TWO_OVER_17));
    int k;
    for (k = 0; k < 3; ++k) {
        const int64_t one_minus = wrap32(((int64_t)1 << 29) - srdhm(half_denominator, x));
        x = wrap32(x + sat_shift_left(srdhm(x, one_minus), 2));
    }
    return sat_shift_left(x, 1);
}

/* Leading zeros of u in [0, 2^32) as a uint32 (32 for 0). */
static int count_leading_zeros32(int64_t u)
{
    int n = 0;
    if (u == 0)
        return 32;
    while (u < ((int64_t)1 << 31)) {
        u *= 2;
        ++n;
    }
    return n;
}

/* exp(beta * s_in * d) in Q0.31 for d = x - max in [diff_min, 0]. */
static int64_t row_exp(int64_t d, int32_t multiplier, int32_t left_shift)
{
    return exp_on_negative_values(srdhm(d * ((int64_t)1 << left_shift), multiplier));
}

int32_t aidge_softmax_i8(const int8_t *x, int8_t *y, int32_t rows, int32_t cols,
                         int32_t multiplier, int32_t left_shift, int32_t diff_min)
{
    int32_t r, c, aborted = 0;
    if (cols <= 0)
        return 0;
    for (r = 0; r < rows; ++r) {
        const int8_t *xr = x + (int64_t)r * cols;
        int8_t *yr = y + (int64_t)r * cols;
        int64_t row_max = -128, total = 0, recip;
        int headroom, exponent;
        for (c = 0; c < cols; ++c)
            row_max = xr[c] > row_max ? xr[c] : row_max;
        for (c = 0; c < cols; ++c) {
            const int64_t d = xr[c] - row_max;
            if (d >= diff_min)
                total += rdbpot(row_exp(d, multiplier, left_shift), ACC_INT_BITS);
        }
        if (total >= SUM_LIMIT) { /* TFLite aborts here */
            for (c = 0; c < cols; ++c)
                yr[c] = -128;
            ++aborted;
            continue;
        }
        headroom = count_leading_zeros32(total); /* total >= 2^19: the maximum's exp(0) */
        recip = one_over_one_plus_x_for_x_in_0_1(wrap32(total * ((int64_t)1 << headroom)
                                                        - ((int64_t)1 << 31)));
        exponent = ACC_INT_BITS - headroom + 31 - 8;
        for (c = 0; c < cols; ++c) {
            const int64_t d = xr[c] - row_max;
            if (d >= diff_min) {
                const int64_t v = rdbpot(srdhm(recip, row_exp(d, multiplier, left_shift)), exponent);
                yr[c] = (int8_t)aidge_clamp(v - 128, -128, 127);
            } else {
                yr[c] = -128;
            }
        }
    }
    return aborted;
}
