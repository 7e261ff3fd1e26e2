/* ck_conv_impl.h - convolution kernels, included once per type (T, SFX).
 *
 * Two algorithms, picked per problem by ck_conv_use_direct():
 * - GEMM (micro-kernels of ck_gemm_impl.h).  Forward: the padded input is
 *   rebuilt as tap planes (or phase planes for long rows), every im2col row
 *   is then a shifted plane and the kernel reads it in place.  Input gradient:
 *   with stride 1 a forward conv with flipped weights, else W^T * gy per
 *   tile followed by col2im.  Weight gradient: dot products of gy rows with
 *   tap-plane rows, tile by tile;
 * - direct: vector loops over padded planes for depthwise and tiny channel
 *   counts, where a GEMM would have a 1-row operand.
 * Work is split into independent tasks so no two threads write one element
 * (the weight gradient sums per-thread copies in a fixed order).  Tasks
 * that write disjoint outputs are scheduled dynamically: a thread the OS
 * preempts then delays a call by one task, not by its whole share. */

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

/* Geometry of zero-padded input planes for the direct kernels: tap t reads
 * plane + rowbase(od, oh) + ow*s2 + toff[t], never out of bounds. */
typedef struct {
    int64_t Hp, Wp, plane, len; /* len: cig planes plus slack for vector overreads */
    int64_t *toff;              /* KK tap offsets */
} FN(padgeo);

static int FN(padgeo_init)(const ck_conv_params *p, const ck_conv_dims *d, FN(padgeo) *g)
{
    const int64_t Dp = p->in[0] + p->pad_lo[0] + p->pad_hi[0];
    g->Hp = p->in[1] + p->pad_lo[1] + p->pad_hi[1];
    g->Wp = p->in[2] + p->pad_lo[2] + p->pad_hi[2];
    g->plane = Dp * g->Hp * g->Wp;
    g->len = d->cig * g->plane + CK_DIRECT_BLOCK * p->stride[2] + 64;
    g->toff = (int64_t *)malloc((size_t)d->KK * sizeof(int64_t));
    if (!g->toff)
        return CK_ERR_NOMEM;
    for (int64_t t = 0; t < d->KK; t++) {
        const int64_t kd = t / (p->k[1] * p->k[2]), kh = (t / p->k[2]) % p->k[1], kw = t % p->k[2];
        g->toff[t] = (kd * p->dil[0] * g->Hp + kh * p->dil[1]) * g->Wp + kw * p->dil[2];
    }
    return CK_OK;
}

/* Zero-padded copies of the cig input planes of group g of image n; only
 * the pad borders and the slack are zeroed. */
static void FN(pad_group)(const ck_conv_params *p, const ck_conv_dims *d, const FN(padgeo) *pg,
                          const T *x, int64_t n, int64_t g, T *xp)
{
    const int64_t Hp = pg->Hp, Wp = pg->Wp, lo1 = p->pad_lo[1], lo2 = p->pad_lo[2];
    const int64_t hi2 = Wp - lo2 - p->in[2];
    const int64_t body = d->cig * pg->plane;
    memset(xp + body, 0, (size_t)(pg->len - body) * sizeof(T));
    for (int64_t ic = 0; ic < d->cig; ic++) {
        const T *src = x + (n * p->c_in + g * d->cig + ic) * d->X;
        T *dst = xp + ic * pg->plane;
        for (int64_t dd = 0; dd < pg->plane / (Hp * Wp); dd++) {
            T *sl = dst + dd * Hp * Wp;
            const int64_t id = dd - p->pad_lo[0];
            if (id < 0 || id >= p->in[0]) {
                memset(sl, 0, (size_t)(Hp * Wp) * sizeof(T));
                continue;
            }
            memset(sl, 0, (size_t)(lo1 * Wp) * sizeof(T));
            for (int64_t ih = 0; ih < p->in[1]; ih++) {
                T *row = sl + (ih + lo1) * Wp;
                for (int64_t j = 0; j < lo2; j++)
                    row[j] = 0;
                memcpy(row + lo2, src + (id * p->in[1] + ih) * p->in[2], (size_t)p->in[2] * sizeof(T));
                for (int64_t j = 0; j < hi2; j++)
                    row[lo2 + p->in[2] + j] = 0;
            }
            memset(sl + (lo1 + p->in[1]) * Wp, 0, (size_t)((Hp - lo1 - p->in[1]) * Wp) * sizeof(T));
        }
    }
}

/* The direct kernels' vector loops, one copy per ISA (ck_direct_impl.h),
 * picked at run time like the GEMM micro-kernels. */
#if CK_X86_DISPATCH
#  define CK_DFN(name) CK_CAT(FN(name), avx512)
#  define CK_DATTR __attribute__((target("avx512f,avx512vl,avx2,fma")))
#  define CK_DVBYTES 64
#  include "ck_direct_impl.h"
#  undef CK_DFN
#  undef CK_DATTR
#  undef CK_DVBYTES
#  define CK_DFN(name) CK_CAT(FN(name), avx2)
#  define CK_DATTR __attribute__((target("avx2,fma")))
#  define CK_DVBYTES 32
#  include "ck_direct_impl.h"
#  undef CK_DFN
#  undef CK_DATTR
#  undef CK_DVBYTES
#endif
#define CK_DFN(name) CK_CAT(FN(name), base)
#define CK_DATTR
#define CK_DVBYTES 16
#include "ck_direct_impl.h"
#undef CK_DFN
#undef CK_DATTR
#undef CK_DVBYTES

typedef void (*FN(fwd_direct_fn))(const ck_conv_params *, const ck_conv_dims *, const FN(padgeo) *,
                                  const T *, const T *, T, T *);
typedef void (*FN(bww_direct_fn))(const ck_conv_params *, const ck_conv_dims *, const FN(padgeo) *,
                                  const T *, const T *, T *, T *);
typedef struct {
    FN(fwd_direct_fn) fwd;
    FN(bww_direct_fn) bww;
} FN(direct);

static FN(direct) FN(pick_direct)(void)
{
    FN(direct) k = {CK_CAT(FN(conv_fwd_direct), base), CK_CAT(FN(conv_bww_direct), base)};
#if CK_X86_DISPATCH
    const int level = ck_cpu_level();
    if (level >= 2) {
        k.fwd = CK_CAT(FN(conv_fwd_direct), avx512);
        k.bww = CK_CAT(FN(conv_bww_direct), avx512);
    } else if (level == 1) {
        k.fwd = CK_CAT(FN(conv_fwd_direct), avx2);
        k.bww = CK_CAT(FN(conv_bww_direct), avx2);
    }
#endif
    return k;
}

/* "Tap planes" of the zero-padded input: for every channel, (depth,
 * height) stride phase and kernel column kw, a plane of Dph x Hph rows of
 * OW values holding xpad[dph*s0 + phd][hph*s1 + phh][ow*s2 + kw*d2].  Row
 * r = (ic, kd, kh, kw) of the im2col matrix of output slice od is then
 * xp + offs[r] + od*Hph*OW, with columns q = oh*OW + ow in output order.
 * Building them costs k2 passes over the input, far less than im2col. */
typedef struct {
    T *xp;
    int64_t *offs;          /* Kc row offsets within one image-group */
    int64_t Hph, cplane, Q; /* rows per phase plane, per-channel stride, OH*OW */
    int borrowed;           /* xp is the input itself (read only, no slack) */
} FN(taps);

static void FN(taps_free)(FN(taps) *tp)
{
    if (!tp->borrowed)
        ck_free(tp->xp);
    free(tp->offs);
}

static int FN(taps_build)(const ck_conv_params *p, const ck_conv_dims *d, const T *x, int nt,
                          int64_t slack, FN(taps) *tp)
{
    const int64_t s0 = p->stride[0], s1 = p->stride[1], s2 = p->stride[2], k2 = p->k[2];
    const int64_t Dph = ck_roundup(p->in[0] + p->pad_lo[0] + p->pad_hi[0], s0) / s0;
    const int64_t Hph = ck_roundup(p->in[1] + p->pad_lo[1] + p->pad_hi[1], s1) / s1;
    const int64_t OW = p->out[2], plane = Dph * Hph * OW, cplane = s0 * s1 * k2 * plane;
    const int64_t K = d->Kc, nplanes = p->n * p->c_in, xlen = nplanes * cplane + slack;
    /* A 1x1, stride-1, unpadded conv's one tap plane per channel is the
     * input itself: read it in place. */
    const int pointwise = ck_conv_pointwise(p);
    tp->Hph = Hph;
    tp->cplane = cplane;
    tp->Q = p->out[1] * OW;
    tp->borrowed = pointwise;
    tp->xp = pointwise ? (T *)x : (T *)ck_alloc((size_t)xlen * sizeof(T));
    tp->offs = (int64_t *)malloc((size_t)(K ? K : 1) * sizeof(int64_t));
    if (!tp->xp || !tp->offs) {
        FN(taps_free)(tp);
        return CK_ERR_NOMEM;
    }
    for (int64_t r = 0; r < K; r++) {
        const int64_t ic = r / d->KK, kr = r % d->KK;
        const int64_t kd = kr / (p->k[1] * k2), kh = (kr / k2) % p->k[1], kw = kr % k2;
        const int64_t od_ = kd * p->dil[0], oh_ = kh * p->dil[1];
        const int64_t phase = (od_ % s0) * s1 + oh_ % s1;
        tp->offs[r] = ic * cplane + (phase * k2 + kw) * plane + ((od_ / s0) * Hph + oh_ / s1) * OW;
    }
    if (pointwise)
        return CK_OK;
    T *xp = tp->xp;
    memset(xp + nplanes * cplane, 0, (size_t)(xlen - nplanes * cplane) * sizeof(T));
    /* Every destination row is written once: a shifted copy of an input
     * row with zero edges, or zeros where it falls in the pads. One task per
     * (channel, phase, kernel column) plane, not per channel: a 3-channel
     * stem gave 2 threads 3 tasks. */
    const int64_t tasks = nplanes * s0 * s1 * k2;
#pragma omp parallel for schedule(dynamic, 1) num_threads(ck_threads(nt, tasks))
    for (int64_t u = 0; u < tasks; u++) {
        const int64_t t = u / (s0 * s1 * k2), pk = u % (s0 * s1 * k2), phase = pk / k2, kw = pk % k2;
        T *drow = xp + t * cplane + pk * plane;
        const T *src = x + t * d->X;
        const int64_t off = kw * p->dil[2] - p->pad_lo[2];
        int64_t a, b;
        ck_valid_range(p->in[2], s2, off, OW, &a, &b);
        for (int64_t dph = 0; dph < Dph; dph++)
            for (int64_t hph = 0; hph < Hph; hph++, drow += OW) {
                const int64_t id = dph * s0 + phase / s1 - p->pad_lo[0];
                const int64_t ih = hph * s1 + phase % s1 - p->pad_lo[1];
                if (id < 0 || id >= p->in[0] || ih < 0 || ih >= p->in[1]) {
                    memset(drow, 0, (size_t)OW * sizeof(T));
                    continue;
                }
                const T *srow = src + (id * p->in[1] + ih) * p->in[2] + off;
                for (int64_t ow = 0; ow < a; ow++)
                    drow[ow] = 0;
                if (s2 == 1)
                    memcpy(drow + a, srow + a, (size_t)(b - a) * sizeof(T));
                else if (s2 == 2)
                    for (int64_t ow = a; ow < b; ow++)
                        drow[ow] = srow[ow * 2];
                else
                    for (int64_t ow = a; ow < b; ow++)
                        drow[ow] = srow[ow * s2];
                for (int64_t ow = b; ow < OW; ow++)
                    drow[ow] = 0;
            }
    }
    return CK_OK;
}

/* Forward on tap planes (a 1x1 conv's are x itself): gemm_shifted reads
 * B from them and writes y directly, nothing wasted. */
static int FN(conv_fwd_shifted)(const ck_conv_params *p, const ck_conv_dims *d, const T *x,
                                const T *Ap, int64_t mpad, const T *bias, T *y, int nt,
                                const FN(kernel) *kn)
{
    FN(taps) tp;
    const int64_t OD = p->out[0], K = d->Kc;
    /* The last, partial micro-panel reads up to nr columns past the end. */
    int err = FN(taps_build)(p, d, x, nt, kn->nr + 64, &tp);
    if (err)
        return err;
    const int64_t Q = tp.Q, Hph = tp.Hph, OW = p->out[2], jobs = p->n * d->G * OD;
    /* Tiles serve the balance between threads: aim at >= 4 tasks per
     * thread, splitting each (image, group, slice) into column tiles x
     * row parts.  B read in place (kc == 0): split the columns first, the
     * output channels only for small problems.  K-blocked: the split that
     * reads the least, each task reading its rows of A and its columns of B
     * (rows x tiles + columns x parts), so a 7x7 layer with 512 channels
     * splits its rows and a 56x56 one its columns. */
    const int64_t want = 4 * (int64_t)(nt > 0 ? nt : 1), panels = (Q + kn->nr - 1) / kn->nr;
    const int64_t per_job = (want + jobs - 1) / jobs, mblocks = mpad / kn->mr;
    int64_t tile_panels = ck_max(1, panels / per_job), msplit = 1;
    if (kn->kc > 0) {
        int64_t best = -1, ntile_ = 1;
        for (int64_t ms = 1; ms <= mblocks; ms++) {
            const int64_t nt_ = ck_max(1, ck_min(panels, (per_job + ms - 1) / ms));
            const int64_t cost = mpad * nt_ + panels * kn->nr * ms;
            if (best < 0 || cost < best)
                best = cost, msplit = ms, ntile_ = nt_;
            if (nt_ == 1)
                break;
        }
        tile_panels = ck_max(1, panels / ntile_);
    }
    const int64_t width = tile_panels * kn->nr, ntile = (panels + tile_panels - 1) / tile_panels;
    if (kn->kc == 0)
        msplit = ck_max(1, ck_min(mblocks, (want + jobs * ntile - 1) / (jobs * ntile)));
    const int64_t msz = (mblocks + msplit - 1) / msplit * kn->mr;
    const int64_t tasks = jobs * ntile * msplit;
#pragma omp parallel num_threads(ck_threads(nt, tasks))
    {
    T *bp = (T *)ck_alloc((size_t)FN(gemm_shifted_scratch)(kn) * sizeof(T));
    if (!bp) {
#pragma omp atomic write
        err = CK_ERR_NOMEM;
    }
#pragma omp for schedule(dynamic, 1)
    for (int64_t t = 0; t < tasks; t++) {
        if (CK_CANCELLED() || !bp) continue; /* Ctrl-C: skip the remaining tasks */
        const int64_t ms = t % msplit, tile = (t / msplit) % ntile, job = t / (msplit * ntile);
        const int64_t od = job % OD, g = (job / OD) % d->G, n = job / (OD * d->G);
        const int64_t q0 = tile * width, qn = ck_min(width, Q - q0);
        const int64_t m0 = ms * msz, m1 = ck_min(d->cog, m0 + msz);
        if (qn <= 0 || m0 >= m1)
            continue;
        const T *xb = tp.xp + (n * p->c_in + g * d->cig) * tp.cplane + od * Hph * OW + q0;
        const T *ag = Ap + g * mpad * K;
        T *yc = y + (n * p->c_out + g * d->cog) * d->P + od * Q + q0;
        FN(gemm_shifted)(kn, K, m1 - m0, ag + m0 * K, xb, tp.offs, qn, yc + m0 * d->P, d->P,
                         bias ? bias + g * d->cog + m0 : NULL, bp, tp.borrowed);
    }
    ck_free(bp);
    }
    FN(taps_free)(&tp);
    return err;
}

/* Forward without im2col, variant for long rows (little waste).  The
 * zero-padded input is split into stride
 * phases (plane (ph) holds positions ph + s*i per dim); then row r of the
 * im2col matrix is one phase plane shifted by offs[r], so the micro-kernel
 * reads B in place.  Columns run over phase-plane positions
 * q = (od*Hph + oh)*Wph + ow; the few with oh >= OH or ow >= OW are
 * computed into the tile and dropped on the way out. */
static int FN(conv_fwd_phased)(const ck_conv_params *p, const ck_conv_dims *d, const T *x,
                                const T *Ap, int64_t mpad, const T *bias, T *y, int nt,
                                const FN(kernel) *kn)
{
    int64_t ph[3]; /* phase-plane extents */
    for (int i = 0; i < 3; i++)
        ph[i] = ck_roundup(p->in[i] + p->pad_lo[i] + p->pad_hi[i], p->stride[i]) / p->stride[i];
    const int64_t S = p->stride[0] * p->stride[1] * p->stride[2];
    const int64_t Hp = ph[1], Wp = ph[2], HW = Hp * Wp, plane = ph[0] * HW, cplane = S * plane;
    const int64_t K = d->Kc, nplanes = p->n * p->c_in;
    const int64_t OH = p->out[1], OW = p->out[2];
    const int64_t Q = (p->out[0] - 1) * HW + (OH - 1) * Wp + OW;
    const ck_tiling tl = ck_tile_nr(Q, mpad * (int64_t)sizeof(T), p->n * d->G, nt, kn->nr);
    const int64_t wpad = ck_roundup(tl.width, kn->nr), tasks = p->n * d->G * tl.ntile;
    /* Garbage columns of the last plane read at most wpad past its end. */
    const int64_t xlen = nplanes * cplane + wpad + 64;
    T *xp = (T *)ck_alloc((size_t)xlen * sizeof(T));
    int64_t *offs = (int64_t *)malloc((size_t)K * sizeof(int64_t));
    int err = CK_OK;
    if (!xp || !offs) {
        ck_free(xp);
        free(offs);
        return CK_ERR_NOMEM;
    }
    for (int64_t r = 0; r < K; r++) {
        const int64_t ic = r / d->KK, kr = r % d->KK;
        const int64_t k3[3] = {kr / (p->k[1] * p->k[2]), (kr / p->k[2]) % p->k[1], kr % p->k[2]};
        int64_t phase = 0, shift = 0;
        for (int i = 0; i < 3; i++) {
            const int64_t o = k3[i] * p->dil[i];
            phase = phase * p->stride[i] + o % p->stride[i];
            shift = shift * ph[i] + o / p->stride[i];
        }
        offs[r] = ic * cplane + phase * plane + shift;
    }
    memset(xp + nplanes * cplane, 0, (size_t)(xlen - nplanes * cplane) * sizeof(T));
#pragma omp parallel for schedule(dynamic, 1) num_threads(ck_threads(nt, nplanes))
    for (int64_t t = 0; t < nplanes; t++) {
        T *dst = xp + t * cplane;
        const T *src = x + t * d->X;
        const int64_t s0 = p->stride[0], s1 = p->stride[1], s2 = p->stride[2];
        memset(dst, 0, (size_t)cplane * sizeof(T));
        for (int64_t id = 0; id < p->in[0]; id++)
            for (int64_t ih = 0; ih < p->in[1]; ih++) {
                const int64_t dp = id + p->pad_lo[0], hp = ih + p->pad_lo[1];
                const T *srow = src + (id * p->in[1] + ih) * p->in[2];
                T *drow = dst + ((dp % s0) * s1 + hp % s1) * s2 * plane + ((dp / s0) * Hp + hp / s1) * Wp;
                if (s2 == 1) {
                    memcpy(drow + p->pad_lo[2], srow, (size_t)p->in[2] * sizeof(T));
                } else {
                    /* De-interleave the row: phase pw gets iw0, iw0 + s2, ... */
                    for (int64_t pw = 0; pw < s2; pw++) {
                        const int64_t iw0 = ((pw - p->pad_lo[2]) % s2 + s2) % s2;
                        T *dp_ = drow + pw * plane + (iw0 + p->pad_lo[2]) / s2;
                        for (int64_t j = 0, iw = iw0; iw < p->in[2]; j++, iw += s2)
                            dp_[j] = srow[iw];
                    }
                }
            }
    }
#pragma omp parallel num_threads(ck_threads(nt, tasks))
    {
        T *ct = (T *)ck_alloc((size_t)(mpad * wpad + FN(gemm_shifted_scratch)(kn)) * sizeof(T));
        if (!ct) {
#pragma omp atomic write
            err = CK_ERR_NOMEM;
        }
#pragma omp for schedule(dynamic, 1)
        for (int64_t t = 0; t < tasks; t++) {
            if (CK_CANCELLED()) continue; /* Ctrl-C: skip the remaining tasks */
            const int64_t n = t / (d->G * tl.ntile), g = (t / tl.ntile) % d->G;
            const int64_t q0 = (t % tl.ntile) * tl.width, qn = ck_min(tl.width, Q - q0);
            if (qn <= 0 || !ct)
                continue;
            const T *xb = xp + (n * p->c_in + g * d->cig) * cplane + q0;
            const T *ag = Ap + g * mpad * K;
            FN(gemm_shifted)(kn, K, d->cog, ag, xb, offs, qn, ct, wpad, bias ? bias + g * d->cog : NULL,
                             ct + mpad * wpad, 0);
            for (int64_t oc = 0; oc < d->cog; oc++) {
                T *yo = y + (n * p->c_out + g * d->cog + oc) * d->P;
                const T *src = ct + oc * wpad - q0;
                int64_t q = q0, od = q0 / HW, oh = (q0 % HW) / Wp, ow = q0 % Wp;
                while (q < q0 + qn) {
                    const int64_t e = ck_min(Wp, ow + q0 + qn - q);
                    if (oh < OH && ow < OW)
                        memcpy(yo + (od * OH + oh) * OW + ow, src + q,
                               (size_t)(ck_min(e, OW) - ow) * sizeof(T));
                    q += e - ow;
                    ow = 0;
                    if (++oh == Hp) {
                        oh = 0;
                        od++;
                    }
                }
            }
        }
        ck_free(ct);
    }
    ck_free(xp);
    free(offs);
    return err;
}

/* ---- drivers ------------------------------------------------------------ */

static int FN(conv_forward_impl)(const ck_conv_params *p, const ck_conv_dims *d, const T *x,
                                 const T *w, const T *bias, T *y, int nt)
{
    int err = CK_OK;
    if (ck_conv_use_direct(d)) {
        FN(padgeo) pg;
        const FN(direct) dk = FN(pick_direct)();
        const int64_t tasks = p->n * d->G;
        if (FN(padgeo_init)(p, d, &pg))
            return CK_ERR_NOMEM;
#pragma omp parallel num_threads(ck_threads(nt, tasks))
        {
            T *xp = (T *)ck_alloc((size_t)pg.len * sizeof(T));
            if (!xp) {
#pragma omp atomic write
                err = CK_ERR_NOMEM;
            }
#pragma omp for schedule(dynamic, 1)
            for (int64_t t = 0; t < tasks; t++) {
                if (CK_CANCELLED()) continue; /* Ctrl-C: skip the remaining tasks */
                const int64_t n = t / d->G, g = t % d->G;
                if (!xp)
                    continue;
                FN(pad_group)(p, d, &pg, x, n, g, xp);
                for (int64_t oc = g * d->cog; oc < (g + 1) * d->cog; oc++)
                    dk.fwd(p, d, &pg, xp, w + oc * d->Kc, bias ? bias[oc] : (T)0,
                           y + (n * p->c_out + oc) * d->P);
            }
            ck_free(xp);
        }
        free(pg.toff);
        return err;
    }
    const FN(kernel) kn = FN(pick_kernel)();
    const int64_t mpad = (d->cog + kn.mr - 1) / kn.mr * kn.mr, K = d->Kc;
    if (K == 0) { /* no input channels: y is the bias */
        for (int64_t t = 0; t < p->n * p->c_out; t++)
            for (int64_t j = 0; j < d->P; j++)
                y[t * d->P + j] = bias ? bias[t % p->c_out] : (T)0;
        return err;
    }
    T *Ap = (T *)ck_alloc((size_t)(d->G * mpad * K) * sizeof(T));
    if (!Ap)
        return CK_ERR_NOMEM;
    const int64_t mblocks = mpad / kn.mr;
#pragma omp parallel for schedule(static) num_threads(ck_threads(nt, d->G * mblocks))
    for (int64_t gb = 0; gb < d->G * mblocks; gb++) {
        const int64_t g = gb / mblocks, ib = (gb % mblocks) * kn.mr;
        FN(pack_a)(ck_min(kn.mr, d->cog - ib), K, w + (g * d->cog + ib) * K, K, 1,
                   Ap + (g * mpad + ib) * K, kn.mr);
    }
    /* Phase planes cost only the wasted columns ow in [OW, Wph): use them
     * when that is under ~3% of a row (long rows, 1-D), else tap planes. */
    const int64_t wph = ck_roundup(p->in[2] + p->pad_lo[2] + p->pad_hi[2], p->stride[2]) / p->stride[2];
    /* ... and only while each stride fits in its padded extent: stride**d
     * phase planes of a tiny input would be mostly empty scratch. */
    int phases_fit = 1;
    for (int i = 0; i < 3; i++)
        phases_fit &= p->stride[i] <= p->in[i] + p->pad_lo[i] + p->pad_hi[i];
    /* ... and not for 1x1 convs with stride 1 and no pads: tap planes read
     * those in place. */
    if (p->out[0] == 1 && phases_fit && !ck_conv_pointwise(p) && (wph - p->out[2]) * 32 <= wph)
        err = FN(conv_fwd_phased)(p, d, x, Ap, mpad, bias, y, nt, &kn);
    else
        err = FN(conv_fwd_shifted)(p, d, x, Ap, mpad, bias, y, nt, &kn);
    ck_free(Ap);
    return err;
}


/* With stride 1 the input gradient is itself a stride-1 convolution: of gy
 * with the spatially flipped, in/out-swapped weights and pads
 * (k-1)*dil - pad.  Returns CK_ERR_PARAM when a pad would be negative
 * (pad > dilated kernel extent), leaving the caller to use col2im.
 * wino: run that forward conv as Winograd (the caller checked it applies). */
static int FN(conv_bwi_as_forward)(const ck_conv_params *p, const T *gy, const T *w, T *gx, int nt,
                                   int wino)
{
    ck_conv_params q = *p;
    ck_conv_dims dq;
    for (int i = 0; i < 3; i++) {
        const int64_t ext = (p->k[i] - 1) * p->dil[i];
        if (p->pad_lo[i] > ext || p->pad_hi[i] > ext)
            return CK_ERR_PARAM;
        q.in[i] = p->out[i];
        q.out[i] = p->in[i];
        q.pad_lo[i] = ext - p->pad_lo[i];
        q.pad_hi[i] = ext - p->pad_hi[i];
    }
    q.c_in = p->c_out;
    q.c_out = p->c_in;
    int rc = ck_conv_check(&q, &dq);
    if (rc)
        return rc;
    const int64_t G = p->groups, cig = p->c_in / G, cog = p->c_out / G, KK = dq.KK;
    T *wt = (T *)ck_alloc((size_t)(p->c_in * cog * KK) * sizeof(T));
    if (!wt)
        return CK_ERR_NOMEM;
    /* wt[g*cig + ic][oc][t] = w[g*cog + oc][ic][KK-1-t]: flipping every dim
     * reverses the flat tap index. */
#pragma omp parallel for schedule(static) num_threads(ck_threads(nt, G * cig))
    for (int64_t gi = 0; gi < G * cig; gi++)
        for (int64_t oc = 0; oc < cog; oc++) {
            const int64_t g = gi / cig, ic = gi % cig;
            const T *src = w + ((g * cog + oc) * cig + ic) * KK;
            T *dst = wt + (gi * cog + oc) * KK;
            for (int64_t t = 0; t < KK; t++)
                dst[t] = src[KK - 1 - t];
        }
    rc = wino ? FN(wino_forward_impl)(&q, gy, wt, NULL, gx, nt)
              : FN(conv_forward_impl)(&q, &dq, gy, wt, NULL, gx, nt);
    ck_free(wt);
    return rc;
}

/* Strided input gradient by stride phases.  The input positions
 * i = c + s*i' of one phase class c (per dim) receive only the taps k with
 * k*dil = c + lo (mod s), and as a function of i' that is a stride-1
 * correlation of gy with those taps flipped, dilation dil/gcd(s, dil).
 * Each class runs as a forward conv into scratch, then is scattered into
 * gx (every input position is in exactly one class).  Returns CK_ERR_PARAM
 * when a class would need a negative pad (the caller uses col2im). */
static int FN(conv_bwi_phases)(const ck_conv_params *p, const T *gy, const T *w, T *gx, int nt)
{
    const int64_t S = p->stride[0] * p->stride[1] * p->stride[2];
    const int64_t G = p->groups, cig = p->c_in / G, cog = p->c_out / G;
    const int64_t X = p->in[0] * p->in[1] * p->in[2], KK = p->k[0] * p->k[1] * p->k[2];
    ck_conv_params *qs = (ck_conv_params *)malloc((size_t)S * sizeof(ck_conv_params));
    int64_t *taps = (int64_t *)malloc((size_t)(S * 3 * KK + 1) * sizeof(int64_t));
    int rc = qs && taps ? CK_OK : CK_ERR_NOMEM;
    /* Pass 1: the sub-problem of every class, refusing negative pads. */
    for (int64_t cls = 0; cls < S && rc == CK_OK; cls++) {
        ck_conv_params *q = qs + cls;
        int64_t rem = cls;
        *q = *p;
        q->c_in = p->c_out;
        q->c_out = p->c_in;
        for (int i = 2; i >= 0; i--) {
            const int64_t s = p->stride[i], dl = p->dil[i], c = rem % s;
            int64_t *kk = taps + (cls * 3 + i) * KK, M = 0, g = s, b = dl;
            rem /= s;
            while (b) { /* g = gcd(s, dl) */
                const int64_t t = g % b;
                g = b;
                b = t;
            }
            for (int64_t k = 0; k < p->k[i]; k++)
                if (((k * dl - c - p->pad_lo[i]) % s + s) % s == 0)
                    kk[M++] = k;
            const int64_t nc = c < p->in[i] ? (p->in[i] - c + s - 1) / s : 0, D = dl / g;
            q->in[i] = p->out[i];
            q->out[i] = nc;
            q->k[i] = M;
            q->stride[i] = 1;
            q->dil[i] = D;
            if (M == 0 || nc == 0) { /* nothing reaches this class: gx stays 0 */
                q->out[i] = 0;
                continue;
            }
            q->pad_lo[i] = (kk[0] * dl - c - p->pad_lo[i]) / s + (M - 1) * D;
            q->pad_hi[i] = nc - p->out[i] - q->pad_lo[i] + D * (M - 1);
            if (q->pad_lo[i] < 0 || q->pad_hi[i] < 0)
                rc = CK_ERR_PARAM;
        }
    }
    /* Zero gx only if some non-empty class gets no tap (the rest is overwritten). */
    int holes = 0;
    for (int64_t cls = 0; cls < S && rc == CK_OK; cls++)
        holes |= qs[cls].out[0] == 0 || qs[cls].out[1] == 0 || qs[cls].out[2] == 0;
    if (rc == CK_OK && holes)
        memset(gx, 0, (size_t)(p->n * p->c_in * X) * sizeof(T));
    /* Pass 2: run and scatter each class. */
    for (int64_t cls = 0; cls < S && rc == CK_OK; cls++) {
        const ck_conv_params *q = qs + cls;
        const int64_t *k0 = taps + cls * 3 * KK, *k1 = k0 + KK, *k2 = k1 + KK;
        ck_conv_dims dq;
        if (q->out[0] == 0 || q->out[1] == 0 || q->out[2] == 0)
            continue;
        if ((rc = ck_conv_check(q, &dq)))
            break;
        T *wt = (T *)ck_alloc((size_t)(p->c_in * cog * dq.KK) * sizeof(T));
        T *tmp = (T *)ck_alloc((size_t)(p->n * p->c_in * dq.P) * sizeof(T));
        if (!wt || !tmp) {
            ck_free(wt);
            ck_free(tmp);
            rc = CK_ERR_NOMEM;
            break;
        }
        /* wt[g*cig + ic][oc][m] = w[g*cog + oc][ic][taps of the class, reversed]. */
#pragma omp parallel for schedule(static) num_threads(ck_threads(nt, G * cig))
        for (int64_t gi = 0; gi < G * cig; gi++)
            for (int64_t oc = 0; oc < cog; oc++) {
                const int64_t g = gi / cig, ic = gi % cig;
                const T *src = w + ((g * cog + oc) * cig + ic) * KK;
                T *dst = wt + (gi * cog + oc) * dq.KK;
                for (int64_t m0 = 0; m0 < q->k[0]; m0++)
                    for (int64_t m1 = 0; m1 < q->k[1]; m1++)
                        for (int64_t m2 = 0; m2 < q->k[2]; m2++)
                            *dst++ = src[(k0[q->k[0] - 1 - m0] * p->k[1] + k1[q->k[1] - 1 - m1]) * p->k[2]
                                         + k2[q->k[2] - 1 - m2]];
            }
        rc = FN(conv_forward_impl)(q, &dq, gy, wt, NULL, tmp, nt);
        if (rc == CK_OK) {
            const int64_t c2 = cls % p->stride[2], c1 = (cls / p->stride[2]) % p->stride[1];
            const int64_t c0 = cls / (p->stride[2] * p->stride[1]);
            const int64_t planes = p->n * p->c_in;
#pragma omp parallel for schedule(static) num_threads(ck_threads(nt, planes))
            for (int64_t t = 0; t < planes; t++) {
                const T *src = tmp + t * dq.P;
                T *dst = gx + t * X;
                for (int64_t a = 0; a < q->out[0]; a++)
                    for (int64_t b = 0; b < q->out[1]; b++) {
                        T *row = dst + ((c0 + a * p->stride[0]) * p->in[1] + c1 + b * p->stride[1]) * p->in[2] + c2;
                        for (int64_t e = 0; e < q->out[2]; e++)
                            row[e * p->stride[2]] = *src++;
                    }
            }
        }
        ck_free(wt);
        ck_free(tmp);
    }
    free(qs);
    free(taps);
    return rc;
}

static int FN(conv_backward_input_impl)(const ck_conv_params *p, const ck_conv_dims *d,
                                        const T *gy, const T *w, T *gx, int nt)
{
    int err = CK_OK;
    if (ck_conv_use_direct(d)) {
        int rc = d->unit_stride ? FN(conv_bwi_as_forward)(p, gy, w, gx, nt, 0)
                                : FN(conv_bwi_phases)(p, gy, w, gx, nt);
        if (rc != CK_ERR_PARAM)
            return rc;
    }
    if (ck_conv_use_direct(d)) {
        const int64_t tasks = p->n * p->c_in;
#pragma omp parallel for schedule(dynamic, 1) num_threads(ck_threads(nt, tasks))
        for (int64_t t = 0; t < tasks; t++) {
            if (CK_CANCELLED()) continue; /* Ctrl-C: skip the remaining tasks */
            FN(conv_bwi_direct_plane)(p, d, gy, w, gx, t / p->c_in, t % p->c_in);
        }
        return err;
    }
    /* As a forward conv its output channels are our cig: worth it when they
     * fill most of a micro-kernel tile. */
    if (2 * d->cig >= FN(pick_kernel)().mr) {
        int rc = d->unit_stride ? FN(conv_bwi_as_forward)(p, gy, w, gx, nt, 0)
                                : FN(conv_bwi_phases)(p, gy, w, gx, nt);
        if (rc != CK_ERR_PARAM)
            return rc;
    }
    /* Tasks own disjoint input-channel blocks, so col2im never races. */
    const FN(kernel) kn = FN(pick_kernel)();
    const int64_t ng = p->n * d->G;
    int64_t nblk = ng >= 2 * nt ? 1 : ck_min(d->cig, (2 * nt + ng - 1) / ng);
    const int64_t bsz = (d->cig + nblk - 1) / nblk, mrows = bsz * d->KK;
    nblk = (d->cig + bsz - 1) / bsz;
    ck_tiling tl = ck_tile_nr(d->P, (mrows + d->cog) * (int64_t)sizeof(T), 1, 1, kn.nr);
    const int64_t tasks = ng * nblk;
    const int64_t apad = (mrows + kn.mr - 1) / kn.mr * kn.mr;
    if (d->cog == 0) {
        memset(gx, 0, (size_t)(p->n * p->c_in * d->X) * sizeof(T));
        return err;
    }
#pragma omp parallel num_threads(ck_threads(nt, tasks))
    {
        T *Ap = (T *)ck_alloc((size_t)(apad * d->cog) * sizeof(T));
        T *Bp = (T *)ck_alloc((size_t)(d->cog * ck_roundup(tl.width, kn.nr)) * sizeof(T));
        T *col = d->is1x1 ? NULL : (T *)ck_alloc((size_t)(mrows * tl.width) * sizeof(T));
        const int ok = Ap && Bp && (d->is1x1 || col);
        if (!ok) {
#pragma omp atomic write
            err = CK_ERR_NOMEM;
        }
#pragma omp for schedule(dynamic, 1)
        for (int64_t t = 0; t < tasks; t++) {
            if (CK_CANCELLED()) continue; /* Ctrl-C: skip the remaining tasks */
            const int64_t n = t / (d->G * nblk), g = (t / nblk) % d->G;
            const int64_t ic0 = (t % nblk) * bsz, ic1 = ck_min(d->cig, ic0 + bsz);
            const int64_t r0 = ic0 * d->KK, r1 = ic1 * d->KK;
            if (ic0 >= ic1 || !ok)
                continue;
            T *gxg = gx + (n * p->c_in + g * d->cig) * d->X;
            const T *gyg = gy + (n * p->c_out + g * d->cog) * d->P;
            /* A = the rows [r0, r1) of W^T: A(i, k) = w[g][k][r0 + i]. */
            FN(pack_a)(r1 - r0, d->cog, w + g * d->cog * d->Kc + r0, 1, d->Kc, Ap, kn.mr);
            if (!d->is1x1)
                memset(gxg + ic0 * d->X, 0, (size_t)((ic1 - ic0) * d->X) * sizeof(T));
            for (int64_t p0 = 0; p0 < d->P; p0 += tl.width) {
                const int64_t pn = ck_min(tl.width, d->P - p0);
                FN(pack_b_rows)(d->cog, pn, gyg + p0, d->P, Bp, kn.nr);
                if (d->is1x1) {
                    FN(packed_gemm)(&kn, r1 - r0, pn, d->cog, Ap, Bp, gxg + ic0 * d->X + p0, d->X, 0,
                                    NULL);
                } else {
                    FN(packed_gemm)(&kn, r1 - r0, pn, d->cog, Ap, Bp, col, pn, 0, NULL);
                    FN(col2im)(p, d, gxg, r0, r1, p0, pn, col);
                }
            }
        }
        ck_free(Ap);
        ck_free(Bp);
        ck_free(col);
    }
    return err;
}

static int FN(conv_backward_weight_impl)(const ck_conv_params *p, const ck_conv_dims *d,
                                         const T *gy, const T *x, T *gw, int nt)
{
    const int64_t wlen = p->c_out * d->Kc;
    int err = CK_OK;
    if (ck_conv_use_direct(d)) {
        /* One task per group: it owns the weight rows of its channels. */
        FN(padgeo) pg;
        const FN(direct) dk = FN(pick_direct)();
        if (FN(padgeo_init)(p, d, &pg))
            return CK_ERR_NOMEM;
        memset(gw, 0, (size_t)wlen * sizeof(T));
#pragma omp parallel num_threads(ck_threads(nt, d->G))
        {
            T *xp = (T *)ck_alloc((size_t)(pg.len + d->KK * CK_DIRECT_BLOCK) * sizeof(T));
            if (!xp) {
#pragma omp atomic write
                err = CK_ERR_NOMEM;
            }
#pragma omp for schedule(dynamic, 1)
            for (int64_t g = 0; g < d->G; g++) {
                if (CK_CANCELLED()) continue; /* Ctrl-C: skip the remaining tasks */
                if (!xp)
                    continue;
                for (int64_t n = 0; n < p->n; n++) {
                    FN(pad_group)(p, d, &pg, x, n, g, xp);
                    for (int64_t oc = g * d->cog; oc < (g + 1) * d->cog; oc++)
                        dk.bww(p, d, &pg, xp, gy + (n * p->c_out + oc) * d->P, gw + oc * d->Kc,
                               xp + pg.len);
                }
            }
            ck_free(xp);
        }
        free(pg.toff);
        return err;
    }
    /* Dot products of gy rows with tap-plane rows (both in output order,
     * no copies of gy, no im2col), tile by tile over each output slice. */
    const FN(dotk) dk = FN(pick_dot)();
    FN(taps) tp;
    const int64_t OD = p->out[0];
    if (FN(taps_build)(p, d, x, nt, 64, &tp))
        return CK_ERR_NOMEM;
    const int64_t Q = tp.Q, OW = p->out[2], jobs = p->n * d->G * OD;
    /* (Rows short enough that one dot product's float sums stay accurate.) */
    if (jobs < 2 * (int64_t)nt && d->Kc >= 4 * dk.nj * (int64_t)nt && Q <= CK_WGRAD_ROW_MAX) {
        /* Few (image, group, slice) jobs: split the weight rows instead, so
         * every dot product runs over whole rows and each task owns its
         * slice of gw (no private copies, no reduction). */
        const int64_t nrb = (d->Kc + dk.nj - 1) / dk.nj, per = (nrb + 4 * nt - 1) / (4 * nt);
        const int64_t chunks = (nrb + per - 1) / per;
        memset(gw, 0, (size_t)wlen * sizeof(T));
#pragma omp parallel for schedule(dynamic, 1) num_threads(ck_threads(nt, d->G * chunks))
        for (int64_t t = 0; t < d->G * chunks; t++) {
            if (CK_CANCELLED()) continue; /* Ctrl-C: skip the remaining tasks */
            const int64_t g = t / chunks, r0 = (t % chunks) * per * dk.nj;
            const int64_t r1 = ck_min(d->Kc, r0 + per * dk.nj);
            T *ag = gw + g * d->cog * d->Kc;
            for (int64_t n = 0; n < p->n; n++)
                for (int64_t od = 0; od < OD; od++) {
                    const T *xb = tp.xp + (n * p->c_in + g * d->cig) * tp.cplane + od * tp.Hph * OW;
                    const T *gyc = gy + (n * p->c_out + g * d->cog) * d->P + od * Q;
                    for (int64_t r = r0; r < r1; r += dk.nj)
                        for (int64_t oc = 0; oc < d->cog; oc += dk.mo)
                            dk.fn(Q, gyc + oc * d->P, d->P, xb, tp.offs + r, ag + oc * d->Kc + r,
                                  d->Kc, ck_min(dk.mo, d->cog - oc), ck_min(dk.nj, r1 - r));
                }
        }
        FN(taps_free)(&tp);
        return err;
    }
    /* Long rows (up to ~4096 columns) amortize the horizontal sums. */
    ck_tiling tl = ck_tile(Q, CK_PANEL_BYTES / 4096, jobs, nt);
    if (tl.width < Q) { /* whole vectors per tile, the tail only in the last */
        tl.width = ck_roundup(tl.width, dk.vl);
        tl.ntile = (Q + tl.width - 1) / tl.width;
    }
    const int64_t tasks = p->n * d->G * OD * tl.ntile;
    const int nth = ck_threads(nt, tasks);
    /* Each task's dot products run over one tile (at most a few thousand
     * columns). A short reduction (N x spatial up to CK_WGRAD_ROW_MAX) sums
     * the tiles in T into per-thread copies of gw (thread 0 uses gw itself).
     * A long one collects the tiles of a thread in a T block and flushes it
     * into a private double copy every CK_WGRAD_ROW_MAX / 4 columns or so, so
     * millions of terms keep double accuracy. The copies are summed in
     * thread order: a static schedule keeps the result reproducible. */
    const int64_t glen = d->cog * d->Kc; /* one group's rows of gw */
    const int wide = p->n * OD * Q > CK_WGRAD_ROW_MAX;
    const int64_t flush_cols = CK_WGRAD_ROW_MAX / 4;
    const size_t esz = wide ? sizeof(double) : sizeof(T);
    void *copies = NULL; /* (nth - 1) copies of gw in T, or nth in double */
    const int64_t ncopies = wide ? nth : nth - 1;
    if (ncopies > 0) {
        copies = ck_alloc((size_t)(ncopies * wlen) * esz);
        if (!copies) {
            FN(taps_free)(&tp);
            return CK_ERR_NOMEM;
        }
        memset(copies, 0, (size_t)(ncopies * wlen) * esz);
    }
    memset(gw, 0, (size_t)wlen * sizeof(T));
#pragma omp parallel num_threads(nth)
    {
        const int tid = ck_thread_id();
        T *acc = !wide && tid > 0 ? (T *)copies + (int64_t)(tid - 1) * wlen : gw;
        double *acc64 = wide ? (double *)copies + (int64_t)tid * wlen : NULL;
        T *part = wide ? (T *)ck_alloc((size_t)glen * sizeof(T)) : NULL;
        int64_t part_g = -1, part_cols = 0;
        if (wide && !part) {
#pragma omp atomic write
            err = CK_ERR_NOMEM;
        }
#pragma omp for schedule(static)
        for (int64_t t = 0; t < tasks; t++) {
            if (CK_CANCELLED() || (wide && !part)) continue; /* Ctrl-C: skip the remaining tasks */
            const int64_t tile = t % tl.ntile, od = (t / tl.ntile) % OD;
            const int64_t g = (t / (tl.ntile * OD)) % d->G, n = t / (tl.ntile * OD * d->G);
            const int64_t q0 = tile * tl.width, qn = ck_min(tl.width, Q - q0);
            if (qn <= 0)
                continue;
            const T *xb = tp.xp + (n * p->c_in + g * d->cig) * tp.cplane + od * tp.Hph * OW + q0;
            const T *gyc = gy + (n * p->c_out + g * d->cog) * d->P + od * Q + q0;
            T *ag = acc + g * glen;
            if (wide) {
                if (g != part_g || part_cols + qn > flush_cols) {
                    if (part_g >= 0)
                        for (int64_t i = 0; i < glen; i++)
                            acc64[part_g * glen + i] += (double)part[i];
                    memset(part, 0, (size_t)glen * sizeof(T));
                    part_g = g;
                    part_cols = 0;
                }
                part_cols += qn;
                ag = part;
            }
            for (int64_t r = 0; r < d->Kc; r += dk.nj)
                for (int64_t oc = 0; oc < d->cog; oc += dk.mo)
                    dk.fn(qn, gyc + oc * d->P, d->P, xb, tp.offs + r, ag + oc * d->Kc + r, d->Kc,
                          ck_min(dk.mo, d->cog - oc), ck_min(dk.nj, d->Kc - r));
        }
        if (wide && part && part_g >= 0)
            for (int64_t i = 0; i < glen; i++)
                acc64[part_g * glen + i] += (double)part[i];
        ck_free(part);
    }
    FN(taps_free)(&tp);
    if (copies && wide) {
#pragma omp parallel for schedule(static) num_threads(nth)
        for (int64_t i = 0; i < wlen; i++) {
            double sum = 0;
            for (int t = 0; t < nth; t++)
                sum += ((const double *)copies)[(int64_t)t * wlen + i];
            gw[i] = (T)sum;
        }
    } else if (copies) {
#pragma omp parallel for schedule(static) num_threads(nth)
        for (int64_t i = 0; i < wlen; i++)
            for (int t = 0; t < nth - 1; t++)
                gw[i] += ((const T *)copies)[(int64_t)t * wlen + i];
    }
    ck_free(copies);
    return err;
}
