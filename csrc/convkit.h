/* convkit.h - the C ABI of convkit's `c` backend.
 *
 * Conventions shared by every entry point:
 * - arrays are C-contiguous, channels_first; 1-D and 2-D problems are passed
 *   as 3-D ones with leading size-1 dims (one code path per kernel);
 * - the caller allocates every output; the `*_len` arguments give each
 *   buffer's element count and are checked against the params;
 * - all sizes and indices are int64_t; `nthreads` is the OpenMP thread count
 *   (<= 0 means 1);
 * - every function returns CK_OK or an error code, see ck_strerror().
 *
 * The lines between CFFI-BEGIN and CFFI-END are read verbatim by
 * csrc/build_ffi.py as the cffi cdef, so they hold plain declarations only.
 */
#ifndef CONVKIT_H
#define CONVKIT_H

#include <stdint.h>

/* CFFI-BEGIN */
enum {
    CK_OK = 0,
    CK_ERR_NULL = 1,      /* a required pointer is NULL */
    CK_ERR_PARAM = 2,     /* a size, stride, pad or group count is invalid */
    CK_ERR_LENGTH = 3,    /* a buffer length does not match the params */
    CK_ERR_NOMEM = 4,     /* scratch allocation failed */
    CK_ERR_INDEX = 5,     /* a max-pool index lies outside its plane */
    CK_ERR_OVERFLOW = 6,  /* a size product overflows int64 */
    CK_ERR_CANCELLED = 7, /* the cancellation flag was raised (Ctrl-C): outputs are incomplete */
    CK_ERR_NONFINITE = 8  /* a weight (forward, input gradient) or, for a weight gradient that came
                             out NaN, an output gradient is NaN or infinite: these kernels would
                             multiply the zero padding by it, so the caller computes the problem
                             tap by tap instead (the output is not written) */
};

enum { CK_POOL_MAX = 0, CK_POOL_AVG = 1, CK_POOL_LP = 2 };

/* Convolution (cross-correlation) with zero pads (lo, hi) per dim. */
typedef struct {
    int64_t n, c_in, c_out, groups;
    int64_t in[3], out[3], k[3], stride[3], dil[3], pad_lo[3], pad_hi[3];
} ck_conv_params;

/* Max / average / Lp pooling; pads are implicit (never win, add zero). */
typedef struct {
    int64_t n, c;
    int64_t in[3], out[3], k[3], stride[3], dil[3], pad_lo[3], pad_hi[3];
    int32_t kind;              /* CK_POOL_* */
    int32_t count_include_pad; /* avg: divisor counts pads inside [-lo, n+hi) */
    int64_t divisor_override;  /* avg: > 0 replaces the divisor, 0 = none */
    const int64_t *div_factors; /* avg without override: out[0] + out[1] + out[2]
                                   per-dim divisor factors (the core's geometry;
                                   each window's divisor is their product) */
    double p;                  /* lp: the norm's exponent, > 0 */
    int32_t gx_zeroed;         /* backward: gx arrives zero-filled (e.g. calloc'ed
                                  pages), so the kernel skips zeroing it */
} ck_pool_params;

const char *ck_strerror(int code);
/* Kernels poll *flag between tiles and stop early (CK_ERR_CANCELLED) when it
 * is non-zero; NULL restores a flag that is never raised. */
void ck_set_cancel_flag(const int32_t *flag);
const char *ck_build_info(void);

/* y = conv(x, w) + bias; bias may be NULL (bias_len 0). */
int ck_conv_forward_f32(const ck_conv_params *p, const float *x, int64_t x_len,
                        const float *w, int64_t w_len, const float *bias, int64_t bias_len,
                        float *y, int64_t y_len, int nthreads);
int ck_conv_forward_f64(const ck_conv_params *p, const double *x, int64_t x_len,
                        const double *w, int64_t w_len, const double *bias, int64_t bias_len,
                        double *y, int64_t y_len, int nthreads);

/* gx = adjoint of the forward in x, applied to gy. */
int ck_conv_backward_input_f32(const ck_conv_params *p, const float *gy, int64_t gy_len,
                               const float *w, int64_t w_len, float *gx, int64_t gx_len,
                               int nthreads);
int ck_conv_backward_input_f64(const ck_conv_params *p, const double *gy, int64_t gy_len,
                               const double *w, int64_t w_len, double *gx, int64_t gx_len,
                               int nthreads);

/* The same two kernels by Winograd F(4x4,3x3) (see docs/c_backend.md):
 * CK_ERR_PARAM unless ck_conv_winograd_applies(p, 0 forward / 1 input
 * gradient).  Non-finite or huge inputs run the direct kernels instead. */
int ck_conv_winograd_applies(const ck_conv_params *p, int kernel);
int ck_conv_forward_winograd_f32(const ck_conv_params *p, const float *x, int64_t x_len,
                                 const float *w, int64_t w_len, const float *bias,
                                 int64_t bias_len, float *y, int64_t y_len, int nthreads);
int ck_conv_forward_winograd_f64(const ck_conv_params *p, const double *x, int64_t x_len,
                                 const double *w, int64_t w_len, const double *bias,
                                 int64_t bias_len, double *y, int64_t y_len, int nthreads);
int ck_conv_backward_input_winograd_f32(const ck_conv_params *p, const float *gy, int64_t gy_len,
                                        const float *w, int64_t w_len, float *gx, int64_t gx_len,
                                        int nthreads);
int ck_conv_backward_input_winograd_f64(const ck_conv_params *p, const double *gy, int64_t gy_len,
                                        const double *w, int64_t w_len, double *gx, int64_t gx_len,
                                        int nthreads);

/* gw = adjoint of the forward in w, applied to gy. */
int ck_conv_backward_weight_f32(const ck_conv_params *p, const float *gy, int64_t gy_len,
                                const float *x, int64_t x_len, float *gw, int64_t gw_len,
                                int nthreads);
int ck_conv_backward_weight_f64(const ck_conv_params *p, const double *gy, int64_t gy_len,
                                const double *x, int64_t x_len, double *gw, int64_t gw_len,
                                int nthreads);

/* y = pool(x); ind (max only, may be NULL) gets the flat index of each
 * maximum within its (n, c) plane, the first one on ties. */
int ck_pool_forward_f32(const ck_pool_params *p, const float *x, int64_t x_len,
                        float *y, int64_t y_len, int64_t *ind, int64_t ind_len, int nthreads);
int ck_pool_forward_f64(const ck_pool_params *p, const double *x, int64_t x_len,
                        double *y, int64_t y_len, int64_t *ind, int64_t ind_len, int nthreads);

/* gx = gradient of the pool; max needs ind, lp needs x and y, avg neither
 * (pass NULL with length 0 for what is not needed). */
int ck_pool_backward_f32(const ck_pool_params *p, const float *gy, int64_t gy_len,
                         const float *x, int64_t x_len, const float *y, int64_t y_len,
                         const int64_t *ind, int64_t ind_len, float *gx, int64_t gx_len,
                         int nthreads);
int ck_pool_backward_f64(const ck_pool_params *p, const double *gy, int64_t gy_len,
                         const double *x, int64_t x_len, const double *y, int64_t y_len,
                         const int64_t *ind, int64_t ind_len, double *gx, int64_t gx_len,
                         int nthreads);
/* CFFI-END */

#endif /* CONVKIT_H */
