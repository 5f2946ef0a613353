/* aidge_lite C kernel library: types, parameter structs and kernel prototypes.
 *
 * Plain C99, no malloc. Every tensor is a flat array in its storage type
 * (aidge_dtype); the integer arithmetic (rounding, accumulator fitting,
 * rescales) is in aidge_arith.h and is exact for every int64 value.
 * The only floating point is where the graph itself asks for it: float32
 * model inputs, "float" / "double" rescale modes (one float64 multiply,
 * as the Target says) and DEQUANTIZE outputs.
 */
#ifndef AIDGE_RT_H
#define AIDGE_RT_H

#include <stddef.h>
#include <stdint.h>

typedef enum {
    AIDGE_I8 = 0, AIDGE_U8 = 1, AIDGE_I16 = 2, AIDGE_U16 = 3,
    AIDGE_I32 = 4, AIDGE_I64 = 5, AIDGE_F32 = 6
} aidge_dtype;

enum { AIDGE_HALF_AWAY = 0, AIDGE_HALF_UP = 1, AIDGE_HALF_EVEN = 2, AIDGE_FLOOR = 3 };
enum { AIDGE_OVF_ERROR = 0, AIDGE_OVF_SATURATE = 1, AIDGE_OVF_WRAP = 2 };
enum { AIDGE_RQ_FLOAT = 0, AIDGE_RQ_INT = 1, AIDGE_RQ_GEMMLOWP = 2, AIDGE_RQ_DOUBLE = 3 };
enum { AIDGE_ADD = 0, AIDGE_SUB = 1, AIDGE_MUL = 2 };
/* Bits of model_run's return value. */
enum { AIDGE_STATUS_OVERFLOW = 1, AIDGE_STATUS_SOFTMAX = 2 };

#define AIDGE_MAX_DIMS 8

/* Accumulator width and overflow rule of the graph's Target. */
typedef struct {
    int32_t bits;      /* 8..64 */
    int32_t overflow;  /* AIDGE_OVF_* */
} aidge_acc_t;

/* Number of accumulator values that left the target's range in this run
 * (every overflow rule counts; model_run fails when the rule is "error"). */
extern int64_t aidge_overflows;

/* 2-D convolution, grouped / depthwise included. hwc = 0: x is CHW, y is
 * (K, OH, OW), weights OIHW (K, C/group, KH, KW); hwc = 1: x is HWC, y is
 * (OH, OW, K), weights OHWI (K, KH, KW, C/group). Padded taps are skipped
 * (they hold the input zero point, i.e. contribute 0 after the offset). */
typedef struct {
    int32_t c, h, w;          /* input channels, height, width */
    int32_t k, oh, ow;        /* output channels, height, width */
    int32_t kh, kw;           /* kernel */
    int32_t sh, sw;           /* strides */
    int32_t dh, dw;           /* dilations */
    int32_t pt, pl;           /* top / left padding */
    int32_t group;
    int32_t x_zero_point;     /* subtracted from every input value */
    int32_t hwc;
} aidge_conv_t;

/* Pooling window (max, average); pb / pr: bottom / right padding, ceil_mode's
 * extra end padding included (it never counts). */
typedef struct {
    int32_t c, h, w, oh, ow;
    int32_t kh, kw, sh, sw, dh, dw, pt, pl;
    int32_t count_include_pad;
    int32_t rounding;
    int32_t hwc;
} aidge_pool_t;

/* A rescale: y = clamp(rescale(x)) per channel of a (outer, channels, inner) view. */
typedef struct {
    int32_t mode;                /* AIDGE_RQ_* */
    int32_t rounding;            /* float / int modes */
    int32_t n_params;            /* 1 or channels */
    const double *scale;         /* float: scale; double: real multiplier */
    const int32_t *multiplier;   /* int: M of round(x * M / 2^shift); gemmlowp: Q31 */
    const int32_t *shift;        /* int: right shift (< 0: left); gemmlowp: TFLite's (> 0: left) */
    int64_t lo, hi;              /* output clamp */
    int64_t in_zero_point;       /* gemmlowp: subtracted first */
    int32_t pre_shift;           /* gemmlowp: ADD's left shift */
    int32_t out_zero_point;      /* gemmlowp, double: added last */
} aidge_requant_t;

/* A rescale fused into another kernel (see aidge_lite/export/fuse.py): the value at
 * flat index i of the tensor it rescales gets the parameters of channel
 * (i / inner) % channels (when rq->n_params > 1). A non-NULL dump (debug builds)
 * receives, as dump_type, the tensor the graph has there but the fused code does not
 * keep: the accumulator before an output rescale (Conv / FC / ADD), the rescaled
 * value of an operand rescale (ADD). */
typedef struct {
    const aidge_requant_t *rq;
    int32_t channels, inner;
    void *dump;
    aidge_dtype dump_type;
} aidge_sink_t;

/* An N-d view: element (i0, .., i{n-1}) at offset + sum(ik * strides[k]). */
typedef struct {
    int32_t ndim;
    int32_t shape[AIDGE_MAX_DIMS];
    int32_t src_strides[AIDGE_MAX_DIMS];
    int32_t dst_strides[AIDGE_MAX_DIMS];
    int32_t src_offset, dst_offset;
} aidge_view_t;

/* conv.c / depthwise.c / fc.c: y = fit(bias + sum (x - zp) * w); y is int32 or int64
 * (yt) when sink is NULL, else the sink's rescale of it (see aidge_sink_t). */
#define AIDGE_CONV_DECL(XS, WS, BS, XT, WT, BT) \
    void aidge_conv_##XS##_##WS##_##BS(const XT *x, const WT *w, const BT *b, void *y, \
                                       aidge_dtype yt, const aidge_conv_t *g, const aidge_acc_t *acc, \
                                       const aidge_sink_t *sink); \
    void aidge_depthwise_##XS##_##WS##_##BS(const XT *x, const WT *w, const BT *b, void *y, \
                                            aidge_dtype yt, const aidge_conv_t *g, const aidge_acc_t *acc, \
                                            const aidge_sink_t *sink); \
    void aidge_fc_##XS##_##WS##_##BS(const XT *x, const WT *w, const BT *b, void *y, aidge_dtype yt, \
                                     int32_t rows, int32_t in, int32_t out, int32_t x_zero_point, \
                                     const aidge_acc_t *acc, const aidge_sink_t *sink);
#define AIDGE_FOR_WEIGHTS(M, XS, XT) \
    M(XS, i8, i32, XT, int8_t, int32_t) M(XS, i8, i64, XT, int8_t, int64_t) \
    M(XS, i16, i32, XT, int16_t, int32_t) M(XS, i16, i64, XT, int16_t, int64_t)
#define AIDGE_FOR_AFFINE(M) \
    AIDGE_FOR_WEIGHTS(M, i8, int8_t) AIDGE_FOR_WEIGHTS(M, u8, uint8_t) \
    AIDGE_FOR_WEIGHTS(M, i16, int16_t) AIDGE_FOR_WEIGHTS(M, u16, uint16_t)
AIDGE_FOR_AFFINE(AIDGE_CONV_DECL)

/* requant.c */
/* One integer value v through the rescale p with the parameters of channel k. */
int64_t aidge_requant_value(int64_t v, const aidge_requant_t *p, int32_t k);
void aidge_requant(const void *x, aidge_dtype xt, void *y, aidge_dtype yt, int32_t outer,
                   int32_t channels, int32_t inner, const aidge_requant_t *p);
/* TFLite QUANTIZE float32 -> int: round(x / scale) in float32, half away, + zero point. */
void aidge_tflite_quantize(const float *x, void *y, aidge_dtype yt, int32_t n, float scale,
                           int32_t zero_point, int64_t lo, int64_t hi);
/* TFLite DEQUANTIZE: float32((x - zp) * (double)scale). */
void aidge_dequantize(const void *x, aidge_dtype xt, float *y, int32_t n, float scale,
                      int32_t zero_point);

/* add.c: y = a op b over broadcast views (src_strides: a, dst_strides: b; y contiguous). */
void aidge_binary(int32_t op, const void *a, aidge_dtype at, const void *b, aidge_dtype bt,
                  void *y, aidge_dtype yt, const aidge_view_t *v, int32_t a_zero_point,
                  int32_t b_zero_point, const aidge_acc_t *acc);
/* add.c: ADD / SUB with fused rescales: y = ry(fit(ra(a) op rb(b))), each sink NULL for
 * none (ry NULL: y holds the fitted result, as aidge_binary's). */
void aidge_binary_fused(int32_t op, const void *a, aidge_dtype at, const void *b, aidge_dtype bt,
                        void *y, aidge_dtype yt, const aidge_view_t *v, const aidge_sink_t *ra,
                        const aidge_sink_t *rb, const aidge_acc_t *acc, const aidge_sink_t *ry);
void aidge_relu(const void *x, aidge_dtype xt, void *y, aidge_dtype yt, int32_t n);
void aidge_clip(const void *x, aidge_dtype xt, void *y, aidge_dtype yt, int32_t n, int64_t lo,
                int64_t hi);

/* concat.c: strided copies (concat, pad, transpose), fills. */
void aidge_copy(const void *x, aidge_dtype xt, void *y, aidge_dtype yt, const aidge_view_t *v);
void aidge_fill(void *y, aidge_dtype yt, int32_t n, int64_t value);

/* pool.c */
void aidge_maxpool(const void *x, aidge_dtype xt, void *y, aidge_dtype yt, const aidge_pool_t *g);
void aidge_avgpool(const void *x, aidge_dtype xt, void *y, aidge_dtype yt, const aidge_pool_t *g);
void aidge_global_avgpool(const void *x, aidge_dtype xt, void *y, aidge_dtype yt, int32_t c,
                          int32_t hw, int32_t rounding);
/* y[i] = sum over the reduced view of x (src_strides: kept dims, dst_strides: reduced dims). */
void aidge_reduce_sum(const void *x, aidge_dtype xt, void *y, aidge_dtype yt,
                      const aidge_view_t *kept, const aidge_view_t *reduced);

/* softmax.c: TFLite's int8 SOFTMAX (reference kernel) of each of `rows` rows of
 * `cols` values; output scale 1/256, zero point -128. Returns the number of rows
 * whose sum of exponentials reached 2^28, where TFLite aborts (written as -128). */
int32_t aidge_softmax_i8(const int8_t *x, int8_t *y, int32_t rows, int32_t cols,
                         int32_t multiplier, int32_t left_shift, int32_t diff_min);

/* lut.c: y[i] = table[x[i] + offset] */
void aidge_lookup(const void *x, aidge_dtype xt, void *y, aidge_dtype yt, int32_t n,
                  const void *table, aidge_dtype tt, int32_t offset);

#endif
