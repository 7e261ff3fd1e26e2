/* convkit.c - argument checks and the exported entry points of the C ABI.
 * The kernels live in the ck_*_impl.h templates, instantiated below for
 * float and double. */
#include "ck_internal.h"

#ifdef _OPENMP
#include <omp.h>
static int ck_thread_id(void) { return omp_get_thread_num(); }
#else
static int ck_thread_id(void) { return 0; }
#endif

/* Threads worth starting for `tasks` independent tasks. */
static int ck_threads(int nt, int64_t tasks)
{
    if (nt < 1)
        nt = 1;
    return tasks < (int64_t)nt ? (int)ck_max(1, tasks) : nt;
}

typedef struct {
    int64_t G, cig, cog, X, P, KK, Kc;
    int is1x1;       /* kernel 1, stride 1, no pads: x already is the column matrix */
    int unit_stride; /* stride 1 in every dim: im2col rows are shifted inputs */
} ck_conv_dims;

/* Depthwise and tiny channel products make 1-row GEMMs: loop directly. */
static int ck_conv_use_direct(const ck_conv_dims *d) { return d->cig * d->cog <= 4; }

/* 1x1, stride 1, no pads: the input is the im2col matrix as it is. */
static int ck_conv_pointwise(const ck_conv_params *p)
{
    int yes = 1;
    for (int i = 0; i < 3; i++)
        yes &= p->k[i] == 1 && p->stride[i] == 1 && p->pad_lo[i] == 0 && p->pad_hi[i] == 0;
    return yes;
}

typedef struct {
    int64_t width, ntile;
} ck_tiling;

/* Split P output columns into tiles whose packed panel (col_bytes per
 * column, 0 = nothing packed) stays near CK_PANEL_BYTES, and into at least
 * nt tiles when fewer than nt (image, group) jobs exist. */
static ck_tiling ck_tile(int64_t P, int64_t col_bytes, int64_t jobs, int nt)
{
    ck_tiling t;
    int64_t wmax = col_bytes > 0 ? ck_max(16, CK_PANEL_BYTES / col_bytes) : P;
    int64_t ntile = P > 0 ? (P + wmax - 1) / wmax : 1;
    if (jobs < nt) {
        const int64_t per = (nt + jobs - 1) / ck_max(jobs, 1);
        ntile = (ntile + per - 1) / per * per;
    }
    ntile = ck_max(1, ck_min(ntile, P));
    t.width = ck_max(1, (P + ntile - 1) / ntile);
    if (t.width > 16)
        t.width = ck_min(P, (t.width + 15) / 16 * 16);
    t.ntile = P > 0 ? (P + t.width - 1) / t.width : 0;
    return t;
}

/* ck_tile with the width a multiple of the micro-kernel's nr columns. */
static ck_tiling ck_tile_nr(int64_t P, int64_t col_bytes, int64_t jobs, int nt, int64_t nr)
{
    ck_tiling t = ck_tile(P, col_bytes, jobs, nt);
    if (t.width > nr)
        t.width = ck_min(P, (t.width + nr - 1) / nr * nr);
    t.ntile = P > 0 ? (P + t.width - 1) / t.width : 0;
    return t;
}

/* Whether Winograd F(4x4,3x3) computes the forward conv p: 2-D (the
 * leading dim of size 1), 3x3, stride 1, one group, pads of at most 1 (so
 * every output window holds input, which its error bound needs, see
 * docs/c_backend.md).  A dilation d runs as d x d undilated phases
 * (wino_forward_impl): pads and sizes must then be multiples of d, the
 * pads at most d. */
static int ck_wino_applies(const ck_conv_params *p)
{
    if (p->groups != 1 || p->in[0] != 1 || p->k[0] != 1 || p->pad_lo[0] || p->pad_hi[0]
        || p->k[1] != 3 || p->k[2] != 3 || p->c_in < 1 || p->c_out < 1)
        return 0;
    for (int i = 1; i < 3; i++) {
        const int64_t d = p->dil[i];
        if (p->stride[i] != 1 || d < 1 || p->pad_lo[i] % d || p->pad_hi[i] % d || p->in[i] % d
            || p->out[i] % d || p->pad_lo[i] > d || p->pad_hi[i] > d)
            return 0;
    }
    return 1;
}

/* ... and the input gradient of p, a forward conv of gy with pads 2*dil - pad. */
static int ck_wino_applies_bwi(const ck_conv_params *p)
{
    ck_conv_params q = *p;
    for (int i = 1; i < 3; i++) {
        q.pad_lo[i] = 2 * p->dil[i] - p->pad_lo[i];
        q.pad_hi[i] = 2 * p->dil[i] - p->pad_hi[i];
        q.in[i] = p->out[i];
        q.out[i] = p->in[i];
    }
    q.c_in = p->c_out;
    q.c_out = p->c_in;
    return ck_wino_applies(&q);
}

typedef struct {
    int64_t X, P;
    int64_t *div[3]; /* avg: per-dim divisor factors (NULL otherwise) */
    int64_t *store;
} ck_pool_dims;

/* ---- validation ----------------------------------------------------------- */

static int ck_check_buf(const void *ptr, int64_t len, int64_t want)
{
    if (len != want)
        return CK_ERR_LENGTH;
    if (want > 0 && !ptr)
        return CK_ERR_NULL;
    return CK_OK;
}

static int ck_check_dims(const int64_t *in, const int64_t *k, const int64_t *s, const int64_t *dl,
                         const int64_t *lo, const int64_t *hi, const int64_t *out)
{
    for (int i = 0; i < 3; i++) {
        if (in[i] < 1 || k[i] < 1 || s[i] < 1 || dl[i] < 1 || lo[i] < 0 || hi[i] < 0 || out[i] < 1)
            return CK_ERR_PARAM;
        if (in[i] > INT64_MAX / 4 || k[i] > INT64_MAX / 4 / dl[i] || lo[i] > INT64_MAX / 4
            || hi[i] > INT64_MAX / 4 || out[i] > INT64_MAX / 4 / s[i])
            return CK_ERR_OVERFLOW;
    }
    return CK_OK;
}

static int ck_conv_check(const ck_conv_params *p, ck_conv_dims *d)
{
    int rc;
    if (!p)
        return CK_ERR_NULL;
    if (p->n < 0 || p->c_in < 0 || p->c_out < 0 || p->groups < 1 || p->c_in % p->groups
        || p->c_out % p->groups)
        return CK_ERR_PARAM;
    if ((rc = ck_check_dims(p->in, p->k, p->stride, p->dil, p->pad_lo, p->pad_hi, p->out)))
        return rc;
    for (int i = 0; i < 3; i++) {
        const int64_t span = p->in[i] + p->pad_lo[i] + p->pad_hi[i] - p->dil[i] * (p->k[i] - 1) - 1;
        if (span < 0 || span / p->stride[i] + 1 != p->out[i])
            return CK_ERR_PARAM;
    }
    d->G = p->groups;
    d->cig = p->c_in / p->groups;
    d->cog = p->c_out / p->groups;
    if ((rc = ck_prod3(p->in, &d->X)) || (rc = ck_prod3(p->out, &d->P))
        || (rc = ck_prod3(p->k, &d->KK)) || (rc = ck_mul(d->cig, d->KK, &d->Kc)))
        return rc;
    d->is1x1 = d->KK == 1;
    d->unit_stride = p->stride[0] == 1 && p->stride[1] == 1 && p->stride[2] == 1;
    for (int i = 0; i < 3; i++)
        d->is1x1 &= p->stride[i] == 1 && p->pad_lo[i] == 0 && p->pad_hi[i] == 0;
    return CK_OK;
}

/* Expected lengths of x, w and y. */
static int ck_conv_lengths(const ck_conv_params *p, const ck_conv_dims *d, int64_t *xl,
                           int64_t *wl, int64_t *yl)
{
    int64_t t;
    if (ck_mul(p->n, p->c_in, &t) || ck_mul(t, d->X, xl) || ck_mul(p->c_out, d->Kc, wl)
        || ck_mul(p->n, p->c_out, &t) || ck_mul(t, d->P, yl))
        return CK_ERR_OVERFLOW;
    return CK_OK;
}

/* Taps t in [0, k) with lo_b <= start + t*dl < hi_b. */
static int64_t ck_count_taps(int64_t start, int64_t k, int64_t dl, int64_t lo_b, int64_t hi_b)
{
    int64_t a, b;
    ck_valid_range(hi_b - lo_b, dl, start - lo_b, k, &a, &b);
    return b - a;
}

static void ck_pool_dims_free(ck_pool_dims *d)
{
    free(d->store);
    d->store = NULL;
}

static int ck_pool_check(const ck_pool_params *p, ck_pool_dims *d)
{
    int rc;
    d->store = NULL;
    d->div[0] = d->div[1] = d->div[2] = NULL;
    if (!p)
        return CK_ERR_NULL;
    if (p->n < 0 || p->c < 0 || p->kind < CK_POOL_MAX || p->kind > CK_POOL_LP
        || p->divisor_override < 0)
        return CK_ERR_PARAM;
    if (p->kind == CK_POOL_LP && !(p->p > 0 && p->p < HUGE_VAL))
        return CK_ERR_PARAM;
    if ((rc = ck_check_dims(p->in, p->k, p->stride, p->dil, p->pad_lo, p->pad_hi, p->out)))
        return rc;
    /* Every window must hold an input element in every dim (no empty max,
     * no zero divisor); the ceil_mode overhang may pass the right pad. */
    for (int i = 0; i < 3; i++)
        for (int64_t o = 0; o < p->out[i]; o++)
            if (ck_count_taps(o * p->stride[i] - p->pad_lo[i], p->k[i], p->dil[i], 0, p->in[i]) < 1)
                return CK_ERR_PARAM;
    if ((rc = ck_prod3(p->in, &d->X)) || (rc = ck_prod3(p->out, &d->P)))
        return rc;
    if (p->kind == CK_POOL_AVG && p->divisor_override == 0) {
        /* The divisors come from the core (one definition for every backend);
         * only their count and sign are checked here. */
        const int64_t *q = p->div_factors;
        if (!q)
            return CK_ERR_NULL;
        for (int i = 0; i < 3; i++) {
            for (int64_t o = 0; o < p->out[i]; o++)
                if (q[o] < 1)
                    return CK_ERR_PARAM;
            d->div[i] = (int64_t *)q;
            q += p->out[i];
        }
    }
    return CK_OK;
}

/* ---- kernels, once per type ------------------------------------------------ */

#define CK_CAT_(a, b) a##_##b
#define CK_CAT(a, b) CK_CAT_(a, b)
#define FN(name) CK_CAT(name, SFX)

#define T float
#define TI int32_t /* the integer of T's width (vector shuffle masks) */
#define SFX f32
#include "ck_gemm_impl.h"
#include "ck_winograd_impl.h"
#include "ck_conv_impl.h"
#include "ck_pool_impl.h"
#undef T
#undef TI
#undef SFX

#define T double
#define TI int64_t
#define SFX f64
#include "ck_gemm_impl.h"
#include "ck_winograd_impl.h"
#include "ck_conv_impl.h"
#include "ck_pool_impl.h"
#undef T
#undef TI
#undef SFX

/* Whether every element is finite: no exponent field all ones (inf, NaN).
 * On the bits, so the loop vectorizes; a float sum of x - x would not (its
 * adds may not be reordered) and took 16% of a 2048->512 1x1 forward. */
#define CK_DEFINE_ALL_FINITE(T, U, EXP, SFX)                                  \
    CK_CLONES static int ck_all_finite_##SFX(const T *a, int64_t n)           \
    {                                                                         \
        const U *u = (const U *)a;                                            \
        U bad = 0;                                                            \
        for (int64_t i = 0; i < n; i++)                                       \
            bad |= (U)((u[i] & (EXP)) == (EXP));                              \
        return bad == 0;                                                      \
    }
CK_DEFINE_ALL_FINITE(float, uint32_t, 0x7f800000u, f32)
CK_DEFINE_ALL_FINITE(double, uint64_t, 0x7ff0000000000000ull, f64)

/* Whether every element is finite and at most lim in magnitude: on the
 * bits with the sign cleared, whose integer order is that of |a| (NaN and
 * inf above every finite value); an integer max vectorizes. */
#define CK_DEFINE_BOUNDED(T, U, MASK, SFX)                                       \
    CK_CLONES static int ck_bounded_##SFX(const T *a, int64_t n, double lim)     \
    {                                                                            \
        const U *u = (const U *)a;                                               \
        const T l = (T)lim;                                                      \
        U m = 0, lb;                                                             \
        memcpy(&lb, &l, sizeof(lb));                                             \
        for (int64_t i = 0; i < n; i++) {                                        \
            const U v = u[i] & (MASK);                                           \
            m = v > m ? v : m;                                                   \
        }                                                                        \
        return m <= lb;                                                          \
    }
CK_DEFINE_BOUNDED(float, uint32_t, 0x7fffffffu, f32)
CK_DEFINE_BOUNDED(double, uint64_t, 0x7fffffffffffffffull, f64)

/* Winograd mixes a whole 6x6 patch into each output, so a non-finite input
 * would spread to its neighbours, and its transforms amplify magnitudes (by
 * <= 100 in B^T d B, <= 2304 in A^T m A), so inputs that are not finite or
 * whose products could overflow go to the direct kernels, which match the
 * reference there: |x| and |w| at most sqrt(max / (1e7 * C)) each. */
static double ck_wino_limit(double tmax, int64_t C) { return sqrt(tmax / (1e7 * (double)(C > 0 ? C : 1))); }

/* A kernel that stopped for the cancellation flag must not report success. */
static int ck_finish(int rc)
{
    return rc == CK_OK && CK_CANCELLED() ? CK_ERR_CANCELLED : rc;
}

/* ---- exported entry points ------------------------------------------------- */

#define CK_TMAX_f32 3.4028234663852886e38
#define CK_TMAX_f64 1.7976931348623157e308

#define CK_TRY(expr)          \
    do {                      \
        int rc_ = (expr);     \
        if (rc_ != CK_OK)     \
            return rc_;       \
    } while (0)

#define CK_DEFINE_ENTRY_POINTS(T, SFX)                                                            \
    int ck_conv_forward_##SFX(const ck_conv_params *p, const T *x, int64_t x_len, const T *w,     \
                              int64_t w_len, const T *bias, int64_t bias_len, T *y, int64_t y_len, \
                              int nthreads)                                   \
    {                                                                                             \
        ck_conv_dims d;                                                                           \
        int64_t xl, wl, yl;                                                                       \
        CK_TRY(ck_conv_check(p, &d));                                                             \
        CK_TRY(ck_conv_lengths(p, &d, &xl, &wl, &yl));                                            \
        CK_TRY(ck_check_buf(x, x_len, xl));                                                       \
        CK_TRY(ck_check_buf(w, w_len, wl));                                                       \
        CK_TRY(ck_check_buf(y, y_len, yl));                                                       \
        if (bias || bias_len)                                                                     \
            CK_TRY(ck_check_buf(bias, bias_len, p->c_out));                                       \
        if (yl == 0)                                                                              \
            return CK_OK;                                                                         \
        if (!ck_all_finite_##SFX(w, wl))                                                   \
            return CK_ERR_NONFINITE;                                                              \
        return ck_finish(conv_forward_impl_##SFX(p, &d, x, w, bias, y, nthreads));                     \
    }                                                                                             \
    int ck_conv_forward_winograd_##SFX(const ck_conv_params *p, const T *x, int64_t x_len,        \
                                       const T *w, int64_t w_len, const T *bias, int64_t bias_len, \
                                       T *y, int64_t y_len, int nthreads)                         \
    {                                                                                             \
        ck_conv_dims d;                                                                           \
        int64_t xl, wl, yl;                                                                       \
        CK_TRY(ck_conv_check(p, &d));                                                             \
        CK_TRY(ck_conv_lengths(p, &d, &xl, &wl, &yl));                                            \
        CK_TRY(ck_check_buf(x, x_len, xl));                                                       \
        CK_TRY(ck_check_buf(w, w_len, wl));                                                       \
        CK_TRY(ck_check_buf(y, y_len, yl));                                                       \
        if (bias || bias_len)                                                                     \
            CK_TRY(ck_check_buf(bias, bias_len, p->c_out));                                       \
        if (!ck_wino_applies(p))                                                                  \
            return CK_ERR_PARAM;                                                                  \
        if (yl == 0)                                                                              \
            return CK_OK;                                                                         \
        if (!ck_all_finite_##SFX(w, wl))                                                          \
            return CK_ERR_NONFINITE;                                                              \
        if (!ck_bounded_##SFX(x, xl, ck_wino_limit(CK_TMAX_##SFX, p->c_in))                           \
            || !ck_bounded_##SFX(w, wl, ck_wino_limit(CK_TMAX_##SFX, p->c_in)))                       \
            return ck_finish(conv_forward_impl_##SFX(p, &d, x, w, bias, y, nthreads));             \
        return ck_finish(wino_forward_impl_##SFX(p, x, w, bias, y, nthreads));                    \
    }                                                                                             \
    int ck_conv_backward_input_##SFX(const ck_conv_params *p, const T *gy, int64_t gy_len,        \
                                     const T *w, int64_t w_len, T *gx, int64_t gx_len,            \
                                     int nthreads)                           \
    {                                                                                             \
        ck_conv_dims d;                                                                           \
        int64_t xl, wl, yl;                                                                       \
        CK_TRY(ck_conv_check(p, &d));                                                             \
        CK_TRY(ck_conv_lengths(p, &d, &xl, &wl, &yl));                                            \
        CK_TRY(ck_check_buf(gy, gy_len, yl));                                                     \
        CK_TRY(ck_check_buf(w, w_len, wl));                                                       \
        CK_TRY(ck_check_buf(gx, gx_len, xl));                                                     \
        if (xl == 0)                                                                              \
            return CK_OK;                                                                         \
        if (!ck_all_finite_##SFX(w, wl))                                                   \
            return CK_ERR_NONFINITE;                                                              \
        return ck_finish(conv_backward_input_impl_##SFX(p, &d, gy, w, gx, nthreads));                  \
    }                                                                                             \
    int ck_conv_backward_input_winograd_##SFX(const ck_conv_params *p, const T *gy, int64_t gy_len, \
                                              const T *w, int64_t w_len, T *gx, int64_t gx_len,   \
                                              int nthreads)                                       \
    {                                                                                             \
        ck_conv_dims d;                                                                           \
        int64_t xl, wl, yl;                                                                       \
        CK_TRY(ck_conv_check(p, &d));                                                             \
        CK_TRY(ck_conv_lengths(p, &d, &xl, &wl, &yl));                                            \
        CK_TRY(ck_check_buf(gy, gy_len, yl));                                                     \
        CK_TRY(ck_check_buf(w, w_len, wl));                                                       \
        CK_TRY(ck_check_buf(gx, gx_len, xl));                                                     \
        if (!ck_wino_applies_bwi(p))                                                              \
            return CK_ERR_PARAM;                                                                  \
        if (xl == 0)                                                                              \
            return CK_OK;                                                                         \
        if (!ck_all_finite_##SFX(w, wl))                                                          \
            return CK_ERR_NONFINITE;                                                              \
        if (!ck_bounded_##SFX(gy, yl, ck_wino_limit(CK_TMAX_##SFX, p->c_out))                         \
            || !ck_bounded_##SFX(w, wl, ck_wino_limit(CK_TMAX_##SFX, p->c_out)))                      \
            return ck_finish(conv_backward_input_impl_##SFX(p, &d, gy, w, gx, nthreads));          \
        return ck_finish(conv_bwi_as_forward_##SFX(p, gy, w, gx, nthreads, 1));                   \
    }                                                                                             \
    int ck_conv_backward_weight_##SFX(const ck_conv_params *p, const T *gy, int64_t gy_len,       \
                                      const T *x, int64_t x_len, T *gw, int64_t gw_len,           \
                                      int nthreads)                          \
    {                                                                                             \
        ck_conv_dims d;                                                                           \
        int64_t xl, wl, yl;                                                                       \
        CK_TRY(ck_conv_check(p, &d));                                                             \
        CK_TRY(ck_conv_lengths(p, &d, &xl, &wl, &yl));                                            \
        CK_TRY(ck_check_buf(gy, gy_len, yl));                                                     \
        CK_TRY(ck_check_buf(x, x_len, xl));                                                       \
        CK_TRY(ck_check_buf(gw, gw_len, wl));                                                     \
        if (wl == 0)                                                                              \
            return CK_OK;                                                                         \
        if (yl == 0 || xl == 0) {                                                                 \
            memset(gw, 0, (size_t)wl * sizeof(T));                                                \
            return CK_OK;                                                                         \
        }                                                                                         \
        int rc_ = ck_finish(conv_backward_weight_impl_##SFX(p, &d, gy, x, gw, nthreads));               \
        if (rc_ == CK_OK && !ck_all_finite_##SFX(gw, wl) && !ck_all_finite_##SFX(gy, yl))                  \
            return CK_ERR_NONFINITE;                                                              \
        return rc_;                 \
    }                                                                                             \
    int ck_pool_forward_##SFX(const ck_pool_params *p, const T *x, int64_t x_len, T *y,          \
                              int64_t y_len, int64_t *ind, int64_t ind_len, int nthreads)         \
    {                                                                                             \
        ck_pool_dims d;                                                                           \
        int64_t xl, yl, t;                                                                        \
        CK_TRY(ck_pool_check(p, &d));                                                             \
        int rc = CK_OK;                                                                           \
        if (ck_mul(p->n, p->c, &t) || ck_mul(t, d.X, &xl) || ck_mul(t, d.P, &yl))                 \
            rc = CK_ERR_OVERFLOW;                                                                 \
        if (!rc)                                                                                  \
            rc = ck_check_buf(x, x_len, xl);                                                      \
        if (!rc)                                                                                  \
            rc = ck_check_buf(y, y_len, yl);                                                      \
        if (!rc && (ind || ind_len))                                                              \
            rc = p->kind != CK_POOL_MAX ? CK_ERR_PARAM : ck_check_buf(ind, ind_len, yl);          \
        if (!rc && yl > 0)                                                                        \
            rc = ck_finish(pool_forward_impl_##SFX(p, &d, x, y, ind, nthreads));                             \
        ck_pool_dims_free(&d);                                                                    \
        return rc;                                                                                \
    }                                                                                             \
    int ck_pool_backward_##SFX(const ck_pool_params *p, const T *gy, int64_t gy_len, const T *x,  \
                               int64_t x_len, const T *y, int64_t y_len, const int64_t *ind,      \
                               int64_t ind_len, T *gx, int64_t gx_len, int nthreads)              \
    {                                                                                             \
        ck_pool_dims d;                                                                           \
        int64_t xl, yl, t;                                                                        \
        CK_TRY(ck_pool_check(p, &d));                                                             \
        int rc = CK_OK;                                                                           \
        if (ck_mul(p->n, p->c, &t) || ck_mul(t, d.X, &xl) || ck_mul(t, d.P, &yl))                 \
            rc = CK_ERR_OVERFLOW;                                                                 \
        if (!rc)                                                                                  \
            rc = ck_check_buf(gy, gy_len, yl);                                                    \
        if (!rc)                                                                                  \
            rc = ck_check_buf(gx, gx_len, xl);                                                    \
        if (!rc && p->kind == CK_POOL_MAX)                                                        \
            rc = ck_check_buf(ind, ind_len, yl);                                                  \
        if (!rc && p->kind == CK_POOL_LP)                                                         \
            rc = ck_check_buf(x, x_len, xl);                                                      \
        if (!rc && p->kind == CK_POOL_LP)                                                         \
            rc = ck_check_buf(y, y_len, yl);                                                      \
        if (!rc && xl > 0)                                                                        \
            rc = ck_finish(pool_backward_impl_##SFX(p, &d, gy, x, y, ind, gx, nthreads));                  \
        ck_pool_dims_free(&d);                                                                    \
        return rc;                                                                                \
    }

CK_DEFINE_ENTRY_POINTS(float, f32)
CK_DEFINE_ENTRY_POINTS(double, f64)

int ck_conv_winograd_applies(const ck_conv_params *p, int kernel)
{
    ck_conv_dims d;
    if (!p || ck_conv_check(p, &d) != CK_OK)
        return 0;
    return kernel == 0 ? ck_wino_applies(p) : kernel == 1 ? ck_wino_applies_bwi(p) : 0;
}

void ck_set_cancel_flag(const int32_t *flag)
{
    ck_cancel_flag = flag ? (const volatile int32_t *)flag : &ck_never_cancelled;
}

const char *ck_strerror(int code)
{
    switch (code) {
    case CK_OK: return "ok";
    case CK_ERR_NULL: return "a required buffer or the params pointer is NULL";
    case CK_ERR_PARAM: return "invalid params (sizes, strides, pads, groups or output shape inconsistent)";
    case CK_ERR_LENGTH: return "a buffer length does not match the shapes in the params";
    case CK_ERR_NOMEM: return "out of memory for scratch buffers";
    case CK_ERR_INDEX: return "a max-pool index lies outside its (n, c) plane";
    case CK_ERR_OVERFLOW: return "a size product overflows int64";
    case CK_ERR_CANCELLED: return "cancelled (Ctrl-C)";
    case CK_ERR_NONFINITE: return "non-finite values next to the zero padding: needs the tap-by-tap path";
    default: return "unknown error";
    }
}

const char *ck_build_info(void)
{
    return "convkit C kernels"
#ifdef _OPENMP
           "; OpenMP"
#endif
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(CK_NO_CLONES)
           "; target_clones x86-64/v3/v4"
#endif
#if defined(__SANITIZE_ADDRESS__)
           "; AddressSanitizer"
#endif
        ;
}
