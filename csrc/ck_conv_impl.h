/* ck_conv_impl.h - convolution kernels, included once per type (T, SFX).
 *
 * Two algorithms, picked per problem by ck_conv_use_direct():
 * - GEMM: per (image, group, tile of output positions) pack the receptive
 *   fields (im2col) into a per-thread panel and multiply; 1x1 stride-1
 *   unpadded convs skip the packing (x already is the column matrix);
 * - direct: row loops for depthwise and tiny channel counts, where a GEMM
 *   would have a 1-row operand.
 * Work is split into independent tasks so no two threads write one element. */

/* Walks the output positions [p0, p0+pn) as runs along the last dim:
 * calls BODY(od, oh, ow0, e, j) for each run [ow0, e) starting at column j.
 * Incremental counters keep divisions out of the loop. */
#define CK_FOR_RUNS(p, p0, pn, BODY)                                                   \
    do {                                                                             \
        const int64_t o1_ = (p)->out[1], o2_ = (p)->out[2];                          \
        int64_t od_ = (p0) / (o1_ * o2_), oh_ = ((p0) / o2_) % o1_, ow_ = (p0) % o2_; \
        for (int64_t j_ = 0; j_ < (pn);) {                                           \
            const int64_t e_ = ck_min(o2_, ow_ + (pn) - j_);                         \
            BODY(od_, oh_, ow_, e_, j_);                                             \
            j_ += e_ - ow_;                                                          \
            ow_ = 0;                                                                 \
            if (++oh_ == o1_) {                                                      \
                oh_ = 0;                                                             \
                od_++;                                                               \
            }                                                                        \
        }                                                                            \
    } while (0)

/* Pack columns [p0, p0+pn) of the im2col matrix of one image and group. */
CK_CLONES static void FN(im2col)(const ck_conv_params *p, const ck_conv_dims *d, const T *xg,
                                 int64_t p0, int64_t pn, T *col)
{
    const int64_t KK = d->KK, s2 = p->stride[2];
    for (int64_t r = 0; r < d->cig * KK; r++) {
        const int64_t ic = r / KK, kr = r % KK;
        const int64_t kd = kr / (p->k[1] * p->k[2]), kh = (kr / p->k[2]) % p->k[1], kw = kr % p->k[2];
        const int64_t offw = kw * p->dil[2] - p->pad_lo[2];
        const T *xc = xg + ic * d->X;
        T *dst = col + r * pn;
        int64_t va, vb;
        ck_valid_range(p->in[2], s2, offw, p->out[2], &va, &vb);
#define CK_RUN(od, oh, ow0, e, j)                                                            \
    {                                                                                        \
        const int64_t id = (od) * p->stride[0] + kd * p->dil[0] - p->pad_lo[0];              \
        const int64_t ih = (oh) * p->stride[1] + kh * p->dil[1] - p->pad_lo[1];              \
        T *dj = dst + (j) - (ow0);                                                           \
        if (id < 0 || id >= p->in[0] || ih < 0 || ih >= p->in[1]) {                          \
            memset(dj + (ow0), 0, (size_t)((e) - (ow0)) * sizeof(T));                        \
        } else {                                                                             \
            const T *xrow = xc + (id * p->in[1] + ih) * p->in[2];                            \
            const int64_t a = ck_max(ck_min(va, e), ow0), b = ck_max(ck_min(vb, e), a);      \
            for (int64_t ow = (ow0); ow < a; ow++)                                           \
                dj[ow] = 0;                                                                  \
            if (s2 == 1)                                                                     \
                memcpy(dj + a, xrow + a + offw, (size_t)(b - a) * sizeof(T));                \
            else                                                                             \
                for (int64_t ow = a; ow < b; ow++)                                           \
                    dj[ow] = xrow[ow * s2 + offw];                                           \
            for (int64_t ow = b; ow < (e); ow++)                                             \
                dj[ow] = 0;                                                                  \
        }                                                                                    \
    }
        CK_FOR_RUNS(p, p0, pn, CK_RUN);
#undef CK_RUN
    }
}

/* Scatter-add rows [r0, r1) x columns [p0, p0+pn) of a column matrix back
 * into one image's group of gx (the adjoint of im2col). */
CK_CLONES static void FN(col2im)(const ck_conv_params *p, const ck_conv_dims *d, T *gxg, int64_t r0,
                                 int64_t r1, int64_t p0, int64_t pn, const T *col)
{
    const int64_t KK = d->KK, s2 = p->stride[2];
    for (int64_t r = r0; r < r1; r++) {
        const int64_t ic = r / KK, kr = r % KK;
        const int64_t kd = kr / (p->k[1] * p->k[2]), kh = (kr / p->k[2]) % p->k[1], kw = kr % p->k[2];
        const int64_t offw = kw * p->dil[2] - p->pad_lo[2];
        T *gxc = gxg + ic * d->X;
        const T *src = col + (r - r0) * pn;
        int64_t va, vb;
        ck_valid_range(p->in[2], s2, offw, p->out[2], &va, &vb);
#define CK_RUN(od, oh, ow0, e, j)                                                            \
    {                                                                                        \
        const int64_t id = (od) * p->stride[0] + kd * p->dil[0] - p->pad_lo[0];              \
        const int64_t ih = (oh) * p->stride[1] + kh * p->dil[1] - p->pad_lo[1];              \
        const T *sj = src + (j) - (ow0);                                                     \
        if (id >= 0 && id < p->in[0] && ih >= 0 && ih < p->in[1]) {                          \
            T *gxrow = gxc + (id * p->in[1] + ih) * p->in[2];                                \
            const int64_t a = ck_max(ck_min(va, e), ow0), b = ck_max(ck_min(vb, e), a);      \
            if (s2 == 1)                                                                     \
                for (int64_t ow = a; ow < b; ow++)                                           \
                    gxrow[ow + offw] += sj[ow];                                              \
            else                                                                             \
                for (int64_t ow = a; ow < b; ow++)                                           \
                    gxrow[ow * s2 + offw] += sj[ow];                                         \
        }                                                                                    \
    }
        CK_FOR_RUNS(p, p0, pn, CK_RUN);
#undef CK_RUN
    }
}

/* ---- direct kernels (depthwise and tiny channel counts) ---------------- */

/* y[ow] += w * x[ow*s + off] over ow in [a, b); stride 1 vectorizes. */
CK_INLINE void FN(axpy_row)(T *y, const T *x, T w, int64_t a, int64_t b, int64_t s, int64_t off)
{
    if (s == 1)
        for (int64_t o = a; o < b; o++)
            y[o] += w * x[o + off];
    else
        for (int64_t o = a; o < b; o++)
            y[o] += w * x[o * s + off];
}

/* One output plane (n, oc) of the forward, row by row so the row stays in L1. */
CK_CLONES static void FN(conv_fwd_direct_plane)(const ck_conv_params *p, const ck_conv_dims *d,
                                                const T *x, const T *w, const T *bias, T *y,
                                                int64_t n, int64_t oc)
{
    const int64_t g = oc / d->cog, o2 = p->out[2];
    T *yp = y + (n * p->c_out + oc) * d->P;
    const T bv = bias ? bias[oc] : (T)0;
    for (int64_t od = 0; od < p->out[0]; od++)
        for (int64_t oh = 0; oh < p->out[1]; oh++) {
            T *yrow = yp + (od * p->out[1] + oh) * o2;
            for (int64_t ow = 0; ow < o2; ow++)
                yrow[ow] = bv;
            for (int64_t icl = 0; icl < d->cig; icl++) {
                const T *xc = x + (n * p->c_in + g * d->cig + icl) * d->X;
                const T *wk = w + (oc * d->cig + icl) * d->KK;
                for (int64_t kd = 0; kd < p->k[0]; kd++) {
                    const int64_t id = od * p->stride[0] + kd * p->dil[0] - p->pad_lo[0];
                    if (id < 0 || id >= p->in[0])
                        continue;
                    for (int64_t kh = 0; kh < p->k[1]; kh++) {
                        const int64_t ih = oh * p->stride[1] + kh * p->dil[1] - p->pad_lo[1];
                        if (ih < 0 || ih >= p->in[1])
                            continue;
                        const T *xrow = xc + (id * p->in[1] + ih) * p->in[2];
                        const T *wr = wk + (kd * p->k[1] + kh) * p->k[2];
                        for (int64_t kw = 0; kw < p->k[2]; kw++) {
                            const int64_t off = kw * p->dil[2] - p->pad_lo[2];
                            int64_t a, b;
                            ck_valid_range(p->in[2], p->stride[2], off, o2, &a, &b);
                            FN(axpy_row)(yrow, xrow, wr[kw], a, b, p->stride[2], off);
                        }
                    }
                }
            }
        }
}

/* One input-gradient plane (n, ic): scatter every output row through w. */
CK_CLONES static void FN(conv_bwi_direct_plane)(const ck_conv_params *p, const ck_conv_dims *d,
                                                const T *gy, const T *w, T *gx, int64_t n,
                                                int64_t ic)
{
    const int64_t g = ic / d->cig, icl = ic % d->cig, o2 = p->out[2], s2 = p->stride[2];
    T *gxp = gx + (n * p->c_in + ic) * d->X;
    memset(gxp, 0, (size_t)d->X * sizeof(T));
    for (int64_t ocl = 0; ocl < d->cog; ocl++) {
        const int64_t oc = g * d->cog + ocl;
        const T *gyp = gy + (n * p->c_out + oc) * d->P;
        const T *wk = w + (oc * d->cig + icl) * d->KK;
        for (int64_t od = 0; od < p->out[0]; od++)
            for (int64_t oh = 0; oh < p->out[1]; oh++) {
                const T *gyrow = gyp + (od * p->out[1] + oh) * o2;
                for (int64_t kd = 0; kd < p->k[0]; kd++) {
                    const int64_t id = od * p->stride[0] + kd * p->dil[0] - p->pad_lo[0];
                    if (id < 0 || id >= p->in[0])
                        continue;
                    for (int64_t kh = 0; kh < p->k[1]; kh++) {
                        const int64_t ih = oh * p->stride[1] + kh * p->dil[1] - p->pad_lo[1];
                        if (ih < 0 || ih >= p->in[1])
                            continue;
                        T *gxrow = gxp + (id * p->in[1] + ih) * p->in[2];
                        const T *wr = wk + (kd * p->k[1] + kh) * p->k[2];
                        for (int64_t kw = 0; kw < p->k[2]; kw++) {
                            const int64_t off = kw * p->dil[2] - p->pad_lo[2];
                            const T wv = wr[kw];
                            int64_t a, b;
                            ck_valid_range(p->in[2], s2, off, o2, &a, &b);
                            if (s2 == 1)
                                for (int64_t ow = a; ow < b; ow++)
                                    gxrow[ow + off] += wv * gyrow[ow];
                            else
                                for (int64_t ow = a; ow < b; ow++)
                                    gxrow[ow * s2 + off] += wv * gyrow[ow];
                        }
                    }
                }
            }
    }
}

/* The weight gradient of one output channel oc, summed over the batch. */
CK_CLONES static void FN(conv_bww_direct_channel)(const ck_conv_params *p, const ck_conv_dims *d,
                                                  const T *gy, const T *x, T *gw, int64_t oc)
{
    const int64_t g = oc / d->cog, o2 = p->out[2], s2 = p->stride[2];
    memset(gw + oc * d->Kc, 0, (size_t)d->Kc * sizeof(T));
    for (int64_t n = 0; n < p->n; n++) {
        const T *gyp = gy + (n * p->c_out + oc) * d->P;
        for (int64_t icl = 0; icl < d->cig; icl++) {
            const T *xc = x + (n * p->c_in + g * d->cig + icl) * d->X;
            T *wk = gw + (oc * d->cig + icl) * d->KK;
            for (int64_t od = 0; od < p->out[0]; od++)
                for (int64_t oh = 0; oh < p->out[1]; oh++) {
                    const T *gyrow = gyp + (od * p->out[1] + oh) * o2;
                    for (int64_t kd = 0; kd < p->k[0]; kd++) {
                        const int64_t id = od * p->stride[0] + kd * p->dil[0] - p->pad_lo[0];
                        if (id < 0 || id >= p->in[0])
                            continue;
                        for (int64_t kh = 0; kh < p->k[1]; kh++) {
                            const int64_t ih = oh * p->stride[1] + kh * p->dil[1] - p->pad_lo[1];
                            if (ih < 0 || ih >= p->in[1])
                                continue;
                            const T *xrow = xc + (id * p->in[1] + ih) * p->in[2];
                            T *wr = wk + (kd * p->k[1] + kh) * p->k[2];
                            for (int64_t kw = 0; kw < p->k[2]; kw++) {
                                const int64_t off = kw * p->dil[2] - p->pad_lo[2];
                                int64_t a, b;
                                T s = 0;
                                ck_valid_range(p->in[2], s2, off, o2, &a, &b);
                                if (s2 == 1) {
#pragma omp simd reduction(+ : s)
                                    for (int64_t ow = a; ow < b; ow++)
                                        s += gyrow[ow] * xrow[ow + off];
                                } else {
#pragma omp simd reduction(+ : s)
                                    for (int64_t ow = a; ow < b; ow++)
                                        s += gyrow[ow] * xrow[ow * s2 + off];
                                }
                                wr[kw] += s;
                            }
                        }
                    }
                }
        }
    }
}

/* ---- drivers ------------------------------------------------------------ */

static int FN(conv_forward_impl)(const ck_conv_params *p, const ck_conv_dims *d, const T *x,
                                 const T *w, const T *bias, T *y, int nt, const ck_blas *blas)
{
    int err = CK_OK;
    if (ck_conv_use_direct(d)) {
        const int64_t tasks = p->n * p->c_out;
#pragma omp parallel for schedule(static) num_threads(ck_threads(nt, tasks))
        for (int64_t t = 0; t < tasks; t++)
            FN(conv_fwd_direct_plane)(p, d, x, w, bias, y, t / p->c_out, t % p->c_out);
        return err;
    }
    ck_tiling tl = ck_tile(d->P, d->is1x1 ? 0 : d->Kc * (int64_t)sizeof(T), p->n * d->G, nt);
    const int64_t tasks = p->n * d->G * tl.ntile;
#pragma omp parallel num_threads(ck_threads(nt, tasks))
    {
        T *col = d->is1x1 ? NULL : (T *)malloc((size_t)(d->Kc * tl.width) * sizeof(T));
        if (!d->is1x1 && !col) {
#pragma omp atomic write
            err = CK_ERR_NOMEM;
        }
#pragma omp for schedule(static)
        for (int64_t t = 0; t < tasks; t++) {
            const int64_t n = t / (d->G * tl.ntile), g = (t / tl.ntile) % d->G;
            const int64_t p0 = (t % tl.ntile) * tl.width, pn = ck_min(tl.width, d->P - p0);
            if (pn <= 0 || (!d->is1x1 && !col))
                continue;
            const T *xg = x + (n * p->c_in + g * d->cig) * d->X;
            T *yc = y + (n * p->c_out + g * d->cog) * d->P + p0;
            if (!d->is1x1)
                FN(im2col)(p, d, xg, p0, pn, col);
            if (bias)
                for (int64_t oc = 0; oc < d->cog; oc++)
                    for (int64_t j = 0; j < pn; j++)
                        yc[oc * d->P + j] = bias[g * d->cog + oc];
            FN(gemm)(blas, 0, 0, d->cog, pn, d->Kc, w + g * d->cog * d->Kc, d->Kc,
                     d->is1x1 ? xg + p0 : col, d->is1x1 ? d->X : pn, bias ? (T)1 : (T)0, yc, d->P);
        }
        free(col);
    }
    return err;
}

static int FN(conv_backward_input_impl)(const ck_conv_params *p, const ck_conv_dims *d,
                                        const T *gy, const T *w, T *gx, int nt, const ck_blas *blas)
{
    int err = CK_OK;
    if (ck_conv_use_direct(d)) {
        const int64_t tasks = p->n * p->c_in;
#pragma omp parallel for schedule(static) num_threads(ck_threads(nt, tasks))
        for (int64_t t = 0; t < tasks; t++)
            FN(conv_bwi_direct_plane)(p, d, gy, w, gx, t / p->c_in, t % p->c_in);
        return err;
    }
    /* Tasks own disjoint input-channel blocks, so col2im never races. */
    const int64_t ng = p->n * d->G;
    int64_t nblk = ng >= 2 * nt ? 1 : ck_min(d->cig, (2 * nt + ng - 1) / ng);
    const int64_t bsz = (d->cig + nblk - 1) / nblk;
    nblk = (d->cig + bsz - 1) / bsz;
    ck_tiling tl = ck_tile(d->P, d->is1x1 ? 0 : bsz * d->KK * (int64_t)sizeof(T), 1, 1);
    const int64_t tasks = ng * nblk;
#pragma omp parallel num_threads(ck_threads(nt, tasks))
    {
        T *col = d->is1x1 ? NULL : (T *)malloc((size_t)(bsz * d->KK * tl.width) * sizeof(T));
        if (!d->is1x1 && !col) {
#pragma omp atomic write
            err = CK_ERR_NOMEM;
        }
#pragma omp for schedule(static)
        for (int64_t t = 0; t < tasks; t++) {
            const int64_t n = t / (d->G * nblk), g = (t / nblk) % d->G;
            const int64_t ic0 = (t % nblk) * bsz, ic1 = ck_min(d->cig, ic0 + bsz);
            const int64_t r0 = ic0 * d->KK, r1 = ic1 * d->KK;
            if (ic0 >= ic1 || (!d->is1x1 && !col))
                continue;
            T *gxg = gx + (n * p->c_in + g * d->cig) * d->X;
            const T *gyg = gy + (n * p->c_out + g * d->cog) * d->P;
            const T *wg = w + g * d->cog * d->Kc;
            if (d->is1x1) {
                FN(gemm)(blas, 1, 0, r1 - r0, d->P, d->cog, wg + r0, d->Kc, gyg, d->P, (T)0,
                         gxg + ic0 * d->X, d->X);
                continue;
            }
            memset(gxg + ic0 * d->X, 0, (size_t)((ic1 - ic0) * d->X) * sizeof(T));
            for (int64_t p0 = 0; p0 < d->P; p0 += tl.width) {
                const int64_t pn = ck_min(tl.width, d->P - p0);
                FN(gemm)(blas, 1, 0, r1 - r0, pn, d->cog, wg + r0, d->Kc, gyg + p0, d->P, (T)0,
                         col, pn);
                FN(col2im)(p, d, gxg, r0, r1, p0, pn, col);
            }
        }
        free(col);
    }
    return err;
}

static int FN(conv_backward_weight_impl)(const ck_conv_params *p, const ck_conv_dims *d,
                                         const T *gy, const T *x, T *gw, int nt, const ck_blas *blas)
{
    const int64_t wlen = p->c_out * d->Kc;
    int err = CK_OK;
    if (ck_conv_use_direct(d)) {
#pragma omp parallel for schedule(static) num_threads(ck_threads(nt, p->c_out))
        for (int64_t oc = 0; oc < p->c_out; oc++)
            FN(conv_bww_direct_channel)(p, d, gy, x, gw, oc);
        return err;
    }
    ck_tiling tl = ck_tile(d->P, d->is1x1 ? 0 : d->Kc * (int64_t)sizeof(T), p->n * d->G, nt);
    const int64_t tasks = p->n * d->G * tl.ntile;
    const int nth = ck_threads(nt, tasks);
    /* Each thread sums its tasks into a private copy of gw (thread 0 uses gw
     * itself); a static schedule keeps the result reproducible. */
    T *priv = NULL;
    if (nth > 1) {
        priv = (T *)calloc((size_t)((nth - 1) * wlen), sizeof(T));
        if (!priv)
            return CK_ERR_NOMEM;
    }
    memset(gw, 0, (size_t)wlen * sizeof(T));
#pragma omp parallel num_threads(nth)
    {
        const int tid = ck_thread_id();
        T *acc = tid == 0 ? gw : priv + (int64_t)(tid - 1) * wlen;
        T *col = d->is1x1 ? NULL : (T *)malloc((size_t)(d->Kc * tl.width) * sizeof(T));
        if (!d->is1x1 && !col) {
#pragma omp atomic write
            err = CK_ERR_NOMEM;
        }
#pragma omp for schedule(static)
        for (int64_t t = 0; t < tasks; t++) {
            const int64_t n = t / (d->G * tl.ntile), g = (t / tl.ntile) % d->G;
            const int64_t p0 = (t % tl.ntile) * tl.width, pn = ck_min(tl.width, d->P - p0);
            if (pn <= 0 || (!d->is1x1 && !col))
                continue;
            const T *xg = x + (n * p->c_in + g * d->cig) * d->X;
            const T *gyc = gy + (n * p->c_out + g * d->cog) * d->P + p0;
            if (!d->is1x1)
                FN(im2col)(p, d, xg, p0, pn, col);
            FN(gemm)(blas, 0, 1, d->cog, d->Kc, pn, gyc, d->P, d->is1x1 ? xg + p0 : col,
                     d->is1x1 ? d->X : pn, (T)1, acc + g * d->cog * d->Kc, d->Kc);
        }
        free(col);
    }
    if (priv) {
#pragma omp parallel for schedule(static) num_threads(nth)
        for (int64_t i = 0; i < wlen; i++)
            for (int t = 0; t < nth - 1; t++)
                gw[i] += priv[(int64_t)t * wlen + i];
        free(priv);
    }
    return err;
}
