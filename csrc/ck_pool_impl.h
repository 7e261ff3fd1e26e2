/* ck_pool_impl.h - pooling kernels, included once per type (T, SFX).
 *
 * One task per (n, c) plane.  Forward passes work on output rows: columns
 * whose whole window lies inside the input ("interior") run as vector loops
 * over the output row, the few edge columns take the checked scalar path.
 * Average and Lp sums accumulate in double whatever T is: a float running
 * sum stops growing at 2^24 times its terms, and |x|^p overflows or
 * underflows float long before the p-th root brings it back. */

/* Max-pool update: strictly greater wins (ties keep the first); the first
 * NaN wins and then holds, so NaN propagates with the index of the first. */
#define CK_MAX_WINS(v, m) ((v) > (m) || ((v) != (v) && (m) == (m)))

CK_INLINE void FN(max_row)(T *y, int64_t *ix, const T *xrow, int64_t base, int64_t a, int64_t b,
                           int64_t s, int64_t off, int first)
{
    if (first) {
        for (int64_t o = a; o < b; o++)
            y[o] = xrow[o * s + off];
        if (ix)
            for (int64_t o = a; o < b; o++)
                ix[o] = base + o * s + off;
    } else if (ix) {
        for (int64_t o = a; o < b; o++) {
            const T v = xrow[o * s + off];
            const int u = CK_MAX_WINS(v, y[o]);
            y[o] = u ? v : y[o];
            ix[o] = u ? base + o * s + off : ix[o];
        }
    } else {
        for (int64_t o = a; o < b; o++) {
            const T v = xrow[o * s + off];
            y[o] = CK_MAX_WINS(v, y[o]) ? v : y[o];
        }
    }
}

/* Sum of f(x) over a row segment into the double row y: f = identity, |x|, x^2 or |x|^p. */
CK_INLINE double FN(lp_term)(T v, int mode, double pw)
{
    const double u = (double)v;
    switch (mode) {
    case 0: return u;
    case 1: return u < 0 ? -u : u;
    case 2: return u * u;
    default: return pow(u < 0 ? -u : u, pw);
    }
}

CK_INLINE void FN(sum_row)(double *y, const T *xrow, int64_t a, int64_t b, int64_t s, int64_t off,
                           int mode, double pw)
{
    if (mode == 0)
        for (int64_t o = a; o < b; o++)
            y[o] += (double)xrow[o * s + off];
    else if (mode == 2)
        for (int64_t o = a; o < b; o++)
            y[o] += (double)xrow[o * s + off] * (double)xrow[o * s + off];
    else
        for (int64_t o = a; o < b; o++)
            y[o] += FN(lp_term)(xrow[o * s + off], mode, pw);
}

/* All KW taps of one input row per output in registers: the same order as
 * tap by tap, one pass over y instead of KW (KW is 2 or 3 after inlining). */
CK_INLINE void FN(sum_row_fused)(double *y, const T *xrow, int64_t a, int64_t b, int64_t s, int64_t off,
                                 int64_t dl, const int KW)
{
    for (int64_t o = a; o < b; o++) {
        double acc = y[o];
        for (int kw = 0; kw < KW; kw++)
            acc += (double)xrow[o * s + off + kw * dl];
        y[o] = acc;
    }
}

CK_INLINE void FN(max_row_fused)(T *y, int64_t *ix, const T *xrow, int64_t base, int64_t a,
                                 int64_t b, int64_t s, int64_t off, int64_t dl, int first,
                                 const int KW)
{
    if (first) { /* seed with tap 0 so no -inf or index sentinel is needed */
        for (int64_t o = a; o < b; o++)
            y[o] = xrow[o * s + off];
        if (ix)
            for (int64_t o = a; o < b; o++)
                ix[o] = base + o * s + off;
    }
    const int k0 = first ? 1 : 0;
    if (ix) {
        for (int kw = k0; kw < KW; kw++) {
            const int64_t o2 = off + kw * dl;
            for (int64_t o = a; o < b; o++) {
                const T v = xrow[o * s + o2];
                const int u = CK_MAX_WINS(v, y[o]);
                y[o] = u ? v : y[o];
                ix[o] = u ? base + o * s + o2 : ix[o];
            }
        }
        return;
    }
    if (k0 == 0)
        for (int64_t o = a; o < b; o++) {
            T m = y[o];
            for (int kw = 0; kw < KW; kw++) {
                const T v = xrow[o * s + off + kw * dl];
                m = CK_MAX_WINS(v, m) ? v : m;
            }
            y[o] = m;
        }
    else
        for (int64_t o = a; o < b; o++) {
            T m = y[o];
            for (int kw = 1; kw < KW; kw++) {
                const T v = xrow[o * s + off + kw * dl];
                m = CK_MAX_WINS(v, m) ? v : m;
            }
            y[o] = m;
        }
}

/* Calls BODY(s) with a compile-time stride for the common 1 and 2. */
#define CK_STRIDE_SWITCH(s, BODY) \
    do {                          \
        if ((s) == 1) {           \
            BODY(1);              \
        } else if ((s) == 2) {    \
            BODY(2);              \
        } else {                  \
            BODY(s);              \
        }                         \
    } while (0)

/* Reduce one output position's whole window with bounds checks (edges):
 * max into out (and out_ix), sums into acc_out. */
static void FN(pool_window)(const ck_pool_params *p, const T *xp, int64_t od, int64_t oh, int64_t ow,
                            int mode, double pw, T *out, double *acc_out, int64_t *out_ix)
{
    T m = 0;
    double acc = 0;
    int64_t mi = -1;
    for (int64_t kd = 0; kd < p->k[0]; kd++) {
        const int64_t id = od * p->stride[0] + kd * p->dil[0] - p->pad_lo[0];
        if (id < 0 || id >= p->in[0])
            continue;
        for (int64_t kh = 0; kh < p->k[1]; kh++) {
            const int64_t ih = oh * p->stride[1] + kh * p->dil[1] - p->pad_lo[1];
            if (ih < 0 || ih >= p->in[1])
                continue;
            for (int64_t kw = 0; kw < p->k[2]; kw++) {
                const int64_t iw = ow * p->stride[2] + kw * p->dil[2] - p->pad_lo[2];
                if (iw < 0 || iw >= p->in[2])
                    continue;
                const int64_t pos = (id * p->in[1] + ih) * p->in[2] + iw;
                const T v = xp[pos];
                if (p->kind == CK_POOL_MAX) {
                    if (mi < 0 || CK_MAX_WINS(v, m)) {
                        m = v;
                        mi = pos;
                    }
                } else {
                    acc += FN(lp_term)(v, mode, pw);
                }
            }
        }
    }
    if (p->kind == CK_POOL_MAX) {
        *out = m;
        if (out_ix)
            *out_ix = mi;
    } else {
        *acc_out = acc;
    }
}

/* One (n, c) plane of any pool forward.  dtab: the avg divisor of every
 * output position (NULL with divisor_override); acc: a row of out[2]
 * doubles for the sums (avg, Lp), NULL for max. */
CK_CLONES static void FN(pool_fwd_plane)(const ck_pool_params *p, const T *xp, T *yp, int64_t *ip,
                                         const double *dtab, double *acc)
{
    const int64_t o2 = p->out[2], s2 = p->stride[2];
    const int mode = p->kind == CK_POOL_AVG ? 0 : (p->p == 1.0 ? 1 : (p->p == 2.0 ? 2 : 3));
    const double pw = p->p;
    int64_t A, B, tmp;
    /* Interior: the first and the last tap of the window both inside. */
    ck_valid_range(p->in[2], s2, -p->pad_lo[2], o2, &A, &tmp);
    ck_valid_range(p->in[2], s2, (p->k[2] - 1) * p->dil[2] - p->pad_lo[2], o2, &tmp, &B);
    if (B < A)
        B = A;
    for (int64_t od = 0; od < p->out[0]; od++)
        for (int64_t oh = 0; oh < p->out[1]; oh++) {
            const int64_t ro = (od * p->out[1] + oh) * o2;
            T *y = yp + ro;
            int64_t *ix = ip ? ip + ro : NULL;
            for (int64_t ow = 0; ow < A; ow++)
                FN(pool_window)(p, xp, od, oh, ow, mode, pw, y + ow, acc + ow, ix ? ix + ow : NULL);
            for (int64_t ow = B; ow < o2; ow++)
                FN(pool_window)(p, xp, od, oh, ow, mode, pw, y + ow, acc + ow, ix ? ix + ow : NULL);
            if (p->kind != CK_POOL_MAX)
                for (int64_t ow = A; ow < B; ow++)
                    acc[ow] = 0;
            int first = 1;
            for (int64_t kd = 0; kd < p->k[0]; kd++) {
                const int64_t id = od * p->stride[0] + kd * p->dil[0] - p->pad_lo[0];
                if (id < 0 || id >= p->in[0])
                    continue;
                for (int64_t kh = 0; kh < p->k[1]; kh++) {
                    const int64_t ih = oh * p->stride[1] + kh * p->dil[1] - p->pad_lo[1];
                    if (ih < 0 || ih >= p->in[1])
                        continue;
                    const int64_t base = (id * p->in[1] + ih) * p->in[2];
                    const T *xrow = xp + base;
                    const int64_t off0 = -p->pad_lo[2], dl = p->dil[2];
                    if ((p->k[2] == 2 || p->k[2] == 3) && p->kind != CK_POOL_LP) {
                        if (p->kind == CK_POOL_MAX) {
#define CK_BODY(S)                                                                         \
    (p->k[2] == 2 ? FN(max_row_fused)(y, ix, xrow, base, A, B, S, off0, dl, first, 2)      \
                  : FN(max_row_fused)(y, ix, xrow, base, A, B, S, off0, dl, first, 3))
                            CK_STRIDE_SWITCH(s2, CK_BODY);
#undef CK_BODY
                        } else {
#define CK_BODY(S)                                                          \
    (p->k[2] == 2 ? FN(sum_row_fused)(acc, xrow, A, B, S, off0, dl, 2)      \
                  : FN(sum_row_fused)(acc, xrow, A, B, S, off0, dl, 3))
                            CK_STRIDE_SWITCH(s2, CK_BODY);
#undef CK_BODY
                        }
                        first = 0;
                        continue;
                    }
                    for (int64_t kw = 0; kw < p->k[2]; kw++) {
                        const int64_t off = kw * p->dil[2] - p->pad_lo[2];
                        if (p->kind == CK_POOL_MAX) {
#define CK_BODY(S) FN(max_row)(y, ix, xrow, base, A, B, S, off, first)
                            CK_STRIDE_SWITCH(s2, CK_BODY);
#undef CK_BODY
                        } else {
#define CK_BODY(S) FN(sum_row)(acc, xrow, A, B, S, off, mode, pw)
                            CK_STRIDE_SWITCH(s2, CK_BODY);
#undef CK_BODY
                        }
                        first = 0;
                    }
                }
            }
            if (p->kind == CK_POOL_AVG) {
                if (dtab) {
                    const double *dv = dtab + ro;
                    for (int64_t ow = 0; ow < o2; ow++)
                        y[ow] = (T)(acc[ow] / dv[ow]);
                } else {
                    const double dv = (double)p->divisor_override;
                    for (int64_t ow = 0; ow < o2; ow++)
                        y[ow] = (T)(acc[ow] / dv);
                }
            } else if (p->kind == CK_POOL_LP) {
                for (int64_t ow = 0; ow < o2; ow++)
                    y[ow] = (T)(mode == 1 ? acc[ow] : mode == 2 ? sqrt(acc[ow]) : pow(acc[ow], 1.0 / p->p));
            }
        }
}

/* d/dx of one window term for Lp: sign(x) |x|^(p-1) (0 at x = 0), in double. */
CK_INLINE double FN(lp_grad_term)(T v, double pp)
{
    const double u = (double)v;
    if (pp == 2.0)
        return u;
    if (u == 0)
        return 0;
    if (pp == 1.0)
        return u > 0 ? 1.0 : u < 0 ? -1.0 : u; /* NaN stays NaN */
    return u > 0 ? pow(u, pp - 1.0) : u < 0 ? -pow(-u, pp - 1.0) : u;
}

/* One (n, c) plane of the avg or Lp backward: spread each output's gradient
 * over its window (checked scalar loops; not a benchmarked path). */
CK_CLONES static void FN(pool_bwd_plane)(const ck_pool_params *p, const T *gyp, const T *xp,
                                         const T *yp, T *gxp, const int64_t *div0,
                                         const int64_t *div1, const int64_t *div2)
{
    if (!p->gx_zeroed)
        memset(gxp, 0, (size_t)(p->in[0] * p->in[1] * p->in[2]) * sizeof(T));
    for (int64_t od = 0; od < p->out[0]; od++)
        for (int64_t oh = 0; oh < p->out[1]; oh++)
            for (int64_t ow = 0; ow < p->out[2]; ow++) {
                const int64_t o = (od * p->out[1] + oh) * p->out[2] + ow;
                double coef;
                if (p->kind == CK_POOL_AVG) {
                    const int64_t dv = p->divisor_override > 0 ? p->divisor_override
                                                               : div0[od] * div1[oh] * div2[ow];
                    coef = (double)gyp[o] / (double)dv;
                    if (coef == 0)
                        continue;
                } else {
                    /* y^(1-p) in double: for float it overflows or underflows
                     * (y = 5e-25, p = 3) where the product with x's term does not. */
                    const double out = (double)yp[o];
                    coef = out == 0 ? 0.0 : (double)gyp[o] * pow(out, 1.0 - p->p);
                }
                for (int64_t kd = 0; kd < p->k[0]; kd++) {
                    const int64_t id = od * p->stride[0] + kd * p->dil[0] - p->pad_lo[0];
                    if (id < 0 || id >= p->in[0])
                        continue;
                    for (int64_t kh = 0; kh < p->k[1]; kh++) {
                        const int64_t ih = oh * p->stride[1] + kh * p->dil[1] - p->pad_lo[1];
                        if (ih < 0 || ih >= p->in[1])
                            continue;
                        for (int64_t kw = 0; kw < p->k[2]; kw++) {
                            const int64_t iw = ow * p->stride[2] + kw * p->dil[2] - p->pad_lo[2];
                            if (iw < 0 || iw >= p->in[2])
                                continue;
                            const int64_t pos = (id * p->in[1] + ih) * p->in[2] + iw;
                            gxp[pos] += (T)(p->kind == CK_POOL_AVG
                                                ? coef
                                                : coef * FN(lp_grad_term)(xp[pos], p->p));
                        }
                    }
                }
            }
}

static int FN(pool_forward_impl)(const ck_pool_params *p, const ck_pool_dims *d, const T *x,
                                 T *y, int64_t *ind, int nt)
{
    const int64_t planes = p->n * p->c;
    int err = CK_OK;
    double *dtab = NULL;
    if (d->div[0]) { /* avg divisors, once for every plane */
        dtab = (double *)ck_alloc((size_t)d->P * sizeof(double));
        if (!dtab)
            return CK_ERR_NOMEM;
        for (int64_t od = 0, o = 0; od < p->out[0]; od++)
            for (int64_t oh = 0; oh < p->out[1]; oh++)
                for (int64_t ow = 0; ow < p->out[2]; ow++, o++)
                    dtab[o] = (double)(d->div[0][od] * d->div[1][oh] * d->div[2][ow]);
    }
#pragma omp parallel num_threads(ck_threads(nt, planes))
    {
        double *acc = NULL;
        if (p->kind != CK_POOL_MAX && !(acc = (double *)ck_alloc((size_t)p->out[2] * sizeof(double)))) {
#pragma omp atomic write
            err = CK_ERR_NOMEM;
        }
#pragma omp for schedule(dynamic, 4)
        for (int64_t t = 0; t < planes; t++)
            if ((p->kind == CK_POOL_MAX || acc) && !CK_CANCELLED())
                FN(pool_fwd_plane)(p, x + t * d->X, y + t * d->P, ind ? ind + t * d->P : NULL, dtab, acc);
        ck_free(acc);
    }
    ck_free(dtab);
    return err;
}

/* One (n, c) plane of the avg backward, row by row: each output row's
 * gradient / divisor (coef) is added to every input row its windows touch,
 * interior columns as vector loops, edge columns checked. */
CK_CLONES static void FN(avg_bwd_plane)(const ck_pool_params *p, const T *gyp, T *gxp,
                                        const T *dtab, T *coef)
{
    const int64_t o2 = p->out[2], s2 = p->stride[2], k2 = p->k[2];
    int64_t A, B, tmp;
    ck_valid_range(p->in[2], s2, -p->pad_lo[2], o2, &A, &tmp);
    ck_valid_range(p->in[2], s2, (k2 - 1) * p->dil[2] - p->pad_lo[2], o2, &tmp, &B);
    if (B < A)
        B = A;
    if (!p->gx_zeroed)
        memset(gxp, 0, (size_t)(p->in[0] * p->in[1] * p->in[2]) * sizeof(T));
    for (int64_t od = 0; od < p->out[0]; od++)
        for (int64_t oh = 0; oh < p->out[1]; oh++) {
            const int64_t ro = (od * p->out[1] + oh) * o2;
            if (dtab)
                for (int64_t ow = 0; ow < o2; ow++)
                    coef[ow] = gyp[ro + ow] / dtab[ro + ow];
            else
                for (int64_t ow = 0; ow < o2; ow++)
                    coef[ow] = gyp[ro + ow] / (T)p->divisor_override;
            for (int64_t kd = 0; kd < p->k[0]; kd++) {
                const int64_t id = od * p->stride[0] + kd * p->dil[0] - p->pad_lo[0];
                if (id < 0 || id >= p->in[0])
                    continue;
                for (int64_t kh = 0; kh < p->k[1]; kh++) {
                    const int64_t ih = oh * p->stride[1] + kh * p->dil[1] - p->pad_lo[1];
                    if (ih < 0 || ih >= p->in[1])
                        continue;
                    T *gxrow = gxp + (id * p->in[1] + ih) * p->in[2];
                    for (int64_t kw = 0; kw < k2; kw++) {
                        const int64_t off = kw * p->dil[2] - p->pad_lo[2];
                        for (int64_t ow = 0; ow < A; ow++) {
                            const int64_t iw = ow * s2 + off;
                            if (iw >= 0 && iw < p->in[2])
                                gxrow[iw] += coef[ow];
                        }
                        if (s2 == 1)
                            for (int64_t ow = A; ow < B; ow++)
                                gxrow[ow + off] += coef[ow];
                        else if (s2 == 2)
                            for (int64_t ow = A; ow < B; ow++)
                                gxrow[ow * 2 + off] += coef[ow];
                        else
                            for (int64_t ow = A; ow < B; ow++)
                                gxrow[ow * s2 + off] += coef[ow];
                        for (int64_t ow = B; ow < o2; ow++) {
                            const int64_t iw = ow * s2 + off;
                            if (iw >= 0 && iw < p->in[2])
                                gxrow[iw] += coef[ow];
                        }
                    }
                }
            }
        }
}

static int FN(pool_backward_impl)(const ck_pool_params *p, const ck_pool_dims *d, const T *gy,
                                  const T *x, const T *y, const int64_t *ind, T *gx, int nt)
{
    const int64_t planes = p->n * p->c;
    int err = CK_OK;
    T *dtab = NULL;
    if (p->kind == CK_POOL_AVG && d->div[0]) { /* avg divisors as T, once for every plane */
        dtab = (T *)ck_alloc((size_t)d->P * sizeof(T));
        if (!dtab)
            return CK_ERR_NOMEM;
        for (int64_t od = 0, o = 0; od < p->out[0]; od++)
            for (int64_t oh = 0; oh < p->out[1]; oh++)
                for (int64_t ow = 0; ow < p->out[2]; ow++, o++)
                    dtab[o] = (T)(d->div[0][od] * d->div[1][oh] * d->div[2][ow]);
    }
#pragma omp parallel num_threads(ck_threads(nt, planes))
    {
        T *coef = p->kind == CK_POOL_AVG ? (T *)ck_alloc((size_t)p->out[2] * sizeof(T)) : NULL;
        if (p->kind == CK_POOL_AVG && !coef) {
#pragma omp atomic write
            err = CK_ERR_NOMEM;
        }
#pragma omp for schedule(dynamic, 4)
        for (int64_t t = 0; t < planes; t++) {
            if (CK_CANCELLED())
                continue;
            T *gxp = gx + t * d->X;
            const T *gyp = gy + t * d->P;
            if (p->kind == CK_POOL_AVG) {
                if (coef)
                    FN(avg_bwd_plane)(p, gyp, gxp, dtab, coef);
                continue;
            }
            if (p->kind == CK_POOL_LP) {
                FN(pool_bwd_plane)(p, gyp, x + t * d->X, y + t * d->P, gxp, d->div[0], d->div[1],
                                   d->div[2]);
                continue;
            }
            const int64_t *ip = ind + t * d->P;
            if (!p->gx_zeroed)
                memset(gxp, 0, (size_t)d->X * sizeof(T));
            for (int64_t o = 0; o < d->P; o++) {
                const int64_t i = ip[o];
                if (i < 0 || i >= d->X) {
#pragma omp atomic write
                    err = CK_ERR_INDEX;
                    continue;
                }
                gxp[i] += gyp[o];
            }
        }
        ck_free(coef);
    }
    ck_free(dtab);
    return err;
}
