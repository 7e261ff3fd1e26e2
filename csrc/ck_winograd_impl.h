/* ck_winograd_impl.h - Winograd F(4x4,3x3) convolution, included once per type (T, SFX).
 *
 * The c backend's second algorithm for 2-D 3x3 stride-1 problems
 * (ck_wino_applies): every 4x4 block of outputs ("tile") of an output
 * channel is A^T [sum_c (G g G^T) .* (B^T d B)] A, with d the 6x6 input
 * patch of channel c under the tile and g the 3x3 weight of (oc, c), on
 * Lavin's points 0, +-1, +-2, inf.  That is 36 products per tile and
 * channel pair instead of 144: per block of nr tiles, 36 GEMMs
 * (C_out x C_in) x (C_in x nr) on the micro-kernels of ck_gemm_impl.h,
 * between an input transform written straight into the packed B layout
 * and an output transform that writes y.  The error bound this costs is
 * derived in docs/c_backend.md. */

/* The transforms run across the tiles of a block at once, 8 per vector:
 * s[k*ss + j] is element k of tile j's 6-vector; n is rounded up to 8
 * (buffers are nr wide, a multiple of 8).  B^T's constants are 1, 2, 4, 5;
 * A^T's are powers of two (exact multiplications). */
typedef T FN(v8) __attribute__((vector_size(8 * sizeof(T)), aligned(sizeof(T))));
typedef TI FN(i8) __attribute__((vector_size(8 * sizeof(T))));
#define V8 FN(v8)
#define LD8(p) (*(const V8 *)(p))
#define ST8(p, v) (*(V8 *)(p) = (v))

#define CK_WINO_BT(s0, s1, s2, s3, s4, s5, o, os)           \
    do {                                                    \
        ST8((o), 4 * (s0) - 5 * (s2) + (s4));               \
        ST8((o) + (os), (s3) + (s4) - 4 * ((s1) + (s2)));   \
        ST8((o) + 2 * (os), (s4) - (s3) + 4 * ((s1) - (s2))); \
        ST8((o) + 3 * (os), (s4) - (s2) + 2 * ((s3) - (s1))); \
        ST8((o) + 4 * (os), (s4) - (s2) + 2 * ((s1) - (s3))); \
        ST8((o) + 5 * (os), 4 * (s1) - 5 * (s3) + (s5));    \
    } while (0)

CK_INLINE void FN(wino_bt)(const T *restrict s, int64_t ss, T *restrict o, int64_t os, int64_t n)
{
    for (int64_t j = 0; j < n; j += 8)
        CK_WINO_BT(LD8(s + j), LD8(s + ss + j), LD8(s + 2 * ss + j), LD8(s + 3 * ss + j),
                   LD8(s + 4 * ss + j), LD8(s + 5 * ss + j), o + j, os);
}

/* e[k][t] = s[4t + k] for t < 8, k < 4: de-interleave 32 values. */
CK_INLINE void FN(deint4)(const T *s, V8 e[4])
{
    const V8 a = LD8(s), b = LD8(s + 8), c = LD8(s + 16), d = LD8(s + 24);
    const FN(i8) lo = {0, 1, 2, 3, 8, 9, 10, 11};
#define CK_DEINT(k)                                                                 \
    {                                                                               \
        const FN(i8) m = {k, k + 4, k + 8, k + 12, k, k + 4, k + 8, k + 12};          \
        e[k] = __builtin_shuffle(__builtin_shuffle(a, b, m), __builtin_shuffle(c, d, m), lo); \
    }
    CK_DEINT(0) CK_DEINT(1) CK_DEINT(2) CK_DEINT(3)
#undef CK_DEINT
}

/* The same with element k of tile j at s[4*j + k]: tile j's 6 columns of
 * one padded input row (consecutive tiles overlap by 2; reads up to 40
 * values past the start of the last group). */
CK_INLINE void FN(wino_bt_row)(const T *restrict s, T *restrict o, int64_t os, int64_t n)
{
    for (int64_t j = 0; j < n; j += 8) {
        V8 e[4], f[4];
        FN(deint4)(s + 4 * j, e);
        FN(deint4)(s + 4 * j + 4, f); /* elements 4 and 5 are the next tile's 0 and 1 */
        CK_WINO_BT(e[0], e[1], e[2], e[3], f[0], f[1], o + j, os);
    }
}

CK_INLINE void FN(wino_at)(const T *restrict m, int64_t ms, T *restrict o, int64_t os, int64_t n)
{
    for (int64_t j = 0; j < n; j += 8) {
        const V8 m0 = LD8(m + j), m1 = LD8(m + ms + j), m2 = LD8(m + 2 * ms + j);
        const V8 m3 = LD8(m + 3 * ms + j), m4 = LD8(m + 4 * ms + j), m5 = LD8(m + 5 * ms + j);
        const V8 a = m1 + m2, b = m1 - m2, c = m3 + m4, e = m3 - m4;
        ST8(o + j, m0 + a + c);
        ST8(o + os + j, b + 2 * e);
        ST8(o + 2 * os + j, a + 4 * c);
        ST8(o + 3 * os + j, b + 8 * e + m5);
    }
}

/* s[4t + q] = o[q][t] + bv for t < 8, q < 4: interleave 4 vectors into 32 values. */
CK_INLINE void FN(int4)(const V8 o0, const V8 o1, const V8 o2, const V8 o3, T bv, T *s)
{
    const FN(i8) m01 = {0, 8, 1, 9, 2, 10, 3, 11}, m23 = {4, 12, 5, 13, 6, 14, 7, 15};
    const V8 a = __builtin_shuffle(o0, o1, m01), b = __builtin_shuffle(o0, o1, m23); /* q0 q1 pairs */
    const V8 c = __builtin_shuffle(o2, o3, m01), d = __builtin_shuffle(o2, o3, m23); /* q2 q3 pairs */
    typedef TI FN(i8b) __attribute__((vector_size(8 * sizeof(T))));
    const FN(i8b) p0 = {0, 1, 8, 9, 2, 3, 10, 11}, p1 = {4, 5, 12, 13, 6, 7, 14, 15};
    ST8(s, __builtin_shuffle(a, c, p0) + bv);
    ST8(s + 8, __builtin_shuffle(a, c, p1) + bv);
    ST8(s + 16, __builtin_shuffle(b, d, p0) + bv);
    ST8(s + 24, __builtin_shuffle(b, d, p1) + bv);
}

/* (G g)[0..6) of three weights, in double: U is rounded once. */
static inline void FN(wino_g)(const double *g, int64_t gs, double *o, int64_t os)
{
    const double g0 = g[0], g1 = g[gs], g2 = g[2 * gs];
    const double r6 = 1.0 / 6, r12 = 1.0 / 12, r24 = 1.0 / 24; /* in double: far below T's rounding */
    o[0] = g0 * 0.25;
    o[os] = -(g0 + g1 + g2) * r6;
    o[2 * os] = -(g0 - g1 + g2) * r6;
    o[3 * os] = g0 * r24 + g1 * r12 + g2 * r6;
    o[4 * os] = g0 * r24 - g1 * r12 + g2 * r6;
    o[5 * os] = g2;
}

/* U = G g G^T of every (oc, c) into the packed A operand of each of the 36
 * GEMMs: Ap[xi * as + ib*C + c*mr + i] = U_xi(ib + i, c); rows past K are
 * zero.  One task per block of mr output channels writes mr contiguous
 * values per row xi (as is padded against L1 set aliasing). */
static void FN(wino_weights)(int64_t K, int64_t C, const T *w, T *Ap, int64_t as, int64_t mpad,
                             int64_t mr, int nt)
{
    const int64_t mblocks = mpad / mr;
#pragma omp parallel for schedule(static) num_threads(ck_threads(nt, mblocks))
    for (int64_t b = 0; b < mblocks; b++)
        for (int64_t c = 0; c < C; c++) {
            double u[36 * 16];
            T *dst = Ap + b * mr * C + c * mr;
            for (int64_t i = 0; i < mr && i < 16; i++) {
                const int64_t oc = b * mr + i;
                double g[9], t[18];
                for (int k = 0; k < 9; k++)
                    g[k] = oc < K ? (double)w[(oc * C + c) * 9 + k] : 0.0;
                for (int r = 0; r < 3; r++) /* t[r][a] = (G g[r])_a: rows of g */
                    FN(wino_g)(g + 3 * r, 1, t + 6 * r, 1);
                for (int a = 0; a < 6; a++) /* u[xi = b*6 + a]: columns of t */
                    FN(wino_g)(t + a, 6, u + i * 36 + a, 6);
            }
            for (int xi = 0; xi < 36; xi++)
                for (int64_t i = 0; i < mr && i < 16; i++)
                    dst[xi * as + i] = (T)u[i * 36 + xi];
        }
}

/* One problem's tiling: tiles of 4x4 outputs, blocks of nr tiles; vs and
 * ms, the strides between the 36 rows of V and M, are padded by a cache
 * line so that they do not alias in the L1 sets (multiples of 4 KiB). */
typedef struct {
    int64_t C, K, H, W, OH, OW, pt, pl, th, tw, tpi, ntiles, mpad, msz, as, vs, ms;
    int64_t Hp, Wp; /* the zero-padded copy of the input: every tile's 6x6 patch lies inside */
} FN(wgeo);

/* Runs of a block: tiles [j, j+len) are tiles tx0.. of tile row ty of image n. */
#define CK_WINO_RUNS(g, j0, nj, BODY)                                                   \
    for (int64_t j_ = 0; j_ < (nj);) {                                                \
        const int64_t tile_ = (j0) + j_, n_ = tile_ / (g)->tpi;                       \
        const int64_t ty_ = (tile_ % (g)->tpi) / (g)->tw, tx0_ = tile_ % (g)->tw;     \
        const int64_t len_ = ck_min((nj) - j_, (g)->tw - tx0_);                       \
        BODY(n_, ty_, tx0_, j_, len_);                                                \
        j_ += len_;                                                                   \
    }

/* One task: the input transform of block blk (nr tiles, every channel) into
 * V, its 36 GEMMs for output channels [m0, m1) into M, the output transform
 * into y.  xp is the zero-padded input; E (36 x nr) holds one channel's
 * half-transformed patches, D (16 x nr) a block of outputs. */
CK_CLONES static void FN(wino_task)(const FN(wgeo) *g, const FN(kernel) *kn, const T *xp, const T *Ap,
                                    const T *bias, T *y, int64_t blk, int64_t m0, int64_t m1, T *V, T *M,
                                    T *D, T *E)
{
    const int64_t C = g->C, Hp = g->Hp, Wp = g->Wp, nr = kn->nr, mr = kn->mr, vs = g->vs, ms = g->ms;
    /* E's rows hold nr + 8 lanes: a run's last group of 8 may end past nr. */
    const int64_t j0 = blk * nr, nj = ck_min(nr, g->ntiles - j0), er = nr + 8;
    if (nj < nr) /* a partial block's spare columns stay 0 */
        memset(E, 0, (size_t)(36 * er) * sizeof(T));
    for (int64_t c = 0; c < C; c++) {
        /* E[r*6 + b][j] = (row r of tile j's patch) B */
#define CK_ROWS(n, ty, tx0, j, len)                                                            \
    {                                                                                          \
        const T *src = xp + (((n) * C + c) * Hp + (ty) * 4) * Wp + (tx0) * 4;                 \
        for (int r = 0; r < 6; r++)                                                            \
            FN(wino_bt_row)(src + r * Wp, E + r * 6 * er + (j), er, (len));                    \
    }
        CK_WINO_RUNS(g, j0, nj, CK_ROWS);
#undef CK_ROWS
        for (int b = 0; b < 6; b++) /* V[a*6 + b][c] = B^T (column b) */
            FN(wino_bt)(E + b * er, 6 * er, V + b * vs + c * nr, 6 * vs, nr);
    }
    /* Whole mr x nr tiles: Ap's and M's rows past K are padding. */
    for (int xi = 0; xi < 36; xi++)
        for (int64_t ib = m0; ib < m1; ib += mr)
            kn->fn(C, Ap + xi * g->as + ib * C, V + xi * vs, NULL, M + xi * ms + (ib - m0) * nr,
                   nr, mr, nr, 0, NULL, NULL);
    const int64_t OH = g->OH, OW = g->OW;
    for (int64_t oc = m0; oc < m1; oc++) {
        const T *mo = M + (oc - m0) * nr;
        const T bv = bias ? bias[oc] : (T)0;
        for (int a = 0; a < 6; a++) /* E[q*6 + a] = A^T (row a of m) */
            FN(wino_at)(mo + a * 6 * ms, ms, E + a * er, 6 * er, nj);
        for (int q = 0; q < 4; q++) /* D[i*4 + q] = A^T (column q) */
            FN(wino_at)(E + q * 6 * er, er, D + q * nr, 4 * nr, nj);
#define CK_SCATTER(n, ty, tx0, j, len)                                                        \
    {                                                                                         \
        T *yp = y + ((n) * g->K + oc) * OH * OW;                                              \
        const int64_t nfull = ck_max(0, ck_min((len), OW / 4 - (tx0)));                      \
        for (int64_t i = 0; i < 4 && (ty) * 4 + i < OH; i++) {                                \
            T *yrow = yp + ((ty) * 4 + i) * OW + (tx0) * 4;                                   \
            const T *o = D + i * 4 * nr + (j);                                                \
            int64_t k = 0;                                                                    \
            for (; k + 8 <= nfull; k += 8)                                                    \
                FN(int4)(LD8(o + k), LD8(o + nr + k), LD8(o + 2 * nr + k), LD8(o + 3 * nr + k), \
                         bv, yrow + 4 * k);                                                   \
            for (; k < nfull; k++)                                                            \
                for (int q = 0; q < 4; q++)                                                   \
                    yrow[4 * k + q] = o[q * nr + k] + bv;                                     \
            for (k = nfull; k < (len); k++)                                                   \
                for (int q = 0; q < 4 && ((tx0) + k) * 4 + q < OW; q++)                       \
                    yrow[4 * k + q] = o[q * nr + k] + bv;                                     \
        }                                                                                     \
    }
        CK_WINO_RUNS(g, j0, nj, CK_SCATTER);
#undef CK_SCATTER
    }
}

/* Forward Winograd F(4x4,3x3) of an undilated problem ck_wino_applies accepts. */
static int FN(wino_forward_dense)(const ck_conv_params *p, const T *x, const T *w, const T *bias, T *y,
                                  int nt)
{
    const FN(kernel) kn = FN(pick_kernel)();
    FN(wgeo) g;
    g.C = p->c_in, g.K = p->c_out, g.H = p->in[1], g.W = p->in[2], g.OH = p->out[1], g.OW = p->out[2];
    g.pt = p->pad_lo[1], g.pl = p->pad_lo[2], g.th = (g.OH + 3) / 4, g.tw = (g.OW + 3) / 4;
    g.tpi = g.th * g.tw, g.ntiles = p->n * g.tpi;
    const int64_t mr = kn.mr, nr = kn.nr, mblocks = (g.K + mr - 1) / mr;
    g.mpad = mblocks * mr;
    /* Blocks of nr tiles (the micro-kernel's width); with fewer blocks than
     * ~4 per thread the output channels are split too (each part repeats
     * the block's input transform, a small fraction of its GEMMs). */
    const int64_t nblk = (g.ntiles + nr - 1) / nr, want = nt > 1 ? 4 * (int64_t)nt : 1;
    const int64_t msplit = ck_max(1, ck_min(mblocks, (want + nblk - 1) / nblk));
    g.msz = (mblocks + msplit - 1) / msplit * mr;
    const int64_t tasks = nblk * msplit, line = 64 / (int64_t)sizeof(T);
    int64_t alen, vlen, mlen;
    if (ck_mul(g.mpad, g.C, &g.as) || ck_mul(nr, g.C, &g.vs) || ck_mul(nr, g.msz, &g.ms))
        return CK_ERR_OVERFLOW;
    g.as += line;
    g.vs += line;
    g.ms += line;
    alen = 36 * g.as;
    vlen = 36 * g.vs + 16 * nr + 36 * (nr + 8); /* then D (16 x nr) and E (36 x (nr + 8)) */
    mlen = 36 * g.ms;
    g.Hp = 4 * g.th + 2;
    g.Wp = 4 * g.tw + 2;
    int64_t planes, hw, xplen;
    if (ck_mul(p->n, g.C, &planes) || ck_mul(g.Hp, g.Wp, &hw) || ck_mul(planes, hw, &xplen))
        return CK_ERR_OVERFLOW;
    T *Ap = (T *)ck_alloc((size_t)alen * sizeof(T));
    T *xp = (T *)ck_alloc((size_t)(xplen + 128) * sizeof(T)); /* + the last group's overread */
    if (!Ap || !xp) {
        ck_free(Ap);
        ck_free(xp);
        return CK_ERR_NOMEM;
    }
    memset(xp + xplen, 0, 128 * sizeof(T));
    FN(wino_weights)(g.K, g.C, w, Ap, g.as, g.mpad, mr, nt);
    /* Pads: pt rows / pl columns before the input, the rest after; tiles
     * past the output read only zeros here. */
#pragma omp parallel for schedule(static) num_threads(ck_threads(nt, planes))
    for (int64_t t = 0; t < planes; t++) {
        const T *src = x + t * g.H * g.W;
        T *dst = xp + t * g.Hp * g.Wp;
        const int64_t rows = ck_min(g.H, g.Hp - g.pt), cols = ck_min(g.W, g.Wp - g.pl);
        memset(dst, 0, (size_t)(g.pt * g.Wp) * sizeof(T));
        for (int64_t i = 0; i < rows; i++) {
            T *row = dst + (g.pt + i) * g.Wp;
            for (int64_t q = 0; q < g.pl; q++)
                row[q] = 0;
            memcpy(row + g.pl, src + i * g.W, (size_t)cols * sizeof(T));
            for (int64_t q = g.pl + cols; q < g.Wp; q++)
                row[q] = 0;
        }
        memset(dst + (g.pt + rows) * g.Wp, 0, (size_t)((g.Hp - g.pt - rows) * g.Wp) * sizeof(T));
    }
    int err = CK_OK;
#pragma omp parallel num_threads(ck_threads(nt, tasks))
    {
        T *V = (T *)ck_alloc((size_t)vlen * sizeof(T)); /* [xi][c][nr]: packed B operands */
        T *M = (T *)ck_alloc((size_t)mlen * sizeof(T)); /* [xi][oc][nr]: GEMM results */
        if (!V || !M) {
#pragma omp atomic write
            err = CK_ERR_NOMEM;
        }
#pragma omp for schedule(dynamic, 1)
        for (int64_t t = 0; t < tasks; t++) {
            if (CK_CANCELLED() || !V || !M) continue; /* Ctrl-C: skip the remaining tasks */
            const int64_t m0 = (t % msplit) * g.msz, m1 = ck_min(g.K, m0 + g.msz);
            if (m0 < m1)
                FN(wino_task)(&g, &kn, xp, Ap, bias, y, t / msplit, m0, m1, V, M, V + 36 * g.vs,
                              V + 36 * g.vs + 16 * nr);
        }
        ck_free(V);
        ck_free(M);
    }
    ck_free(Ap);
    ck_free(xp);
    return err;
}

/* Between a plane of one image and dh x dw phase planes, phase (a, b)
 * holding positions (a + dh*i, b + dw*j): gather (to_phases) or scatter. */
static void FN(wino_phases)(const T *src, T *dst, int64_t n, int64_t C, int64_t H, int64_t W,
                            int64_t dh, int64_t dw, int to_phases, int nt)
{
    const int64_t Hq = H / dh, Wq = W / dw, planes = n * C;
#pragma omp parallel for schedule(static) num_threads(ck_threads(nt, planes))
    for (int64_t t = 0; t < planes; t++)
        for (int64_t a = 0; a < dh; a++)
            for (int64_t b = 0; b < dw; b++) {
                T *full = (T *)(to_phases ? src : dst) + t * H * W;
                T *ph = (T *)(to_phases ? dst : src) + ((a * dw + b) * planes + t) * Hq * Wq;
                for (int64_t i = 0; i < Hq; i++) {
                    T *row = full + (a + dh * i) * W + b, *prow = ph + i * Wq;
                    if (to_phases)
                        for (int64_t j = 0; j < Wq; j++)
                            prow[j] = row[dw * j];
                    else
                        for (int64_t j = 0; j < Wq; j++)
                            row[dw * j] = prow[j];
                }
            }
}

/* Winograd forward.  A dilated conv is dh x dw undilated ones: with pads
 * and sizes multiples of the dilation (ck_wino_applies), output rows
 * a, a + dh, ... read only input rows a, a + dh, ... (a 3x3 conv with pads
 * pad / dh).  The phases are gathered as a batch of dh*dw*n images,
 * computed together, and scattered back. */
static int FN(wino_forward_impl)(const ck_conv_params *p, const T *x, const T *w, const T *bias, T *y,
                                 int nt)
{
    const int64_t dh = p->dil[1], dw = p->dil[2];
    if (dh == 1 && dw == 1)
        return FN(wino_forward_dense)(p, x, w, bias, y, nt);
    ck_conv_params q = *p;
    q.n = p->n * dh * dw;
    q.in[1] /= dh, q.out[1] /= dh, q.pad_lo[1] /= dh, q.pad_hi[1] /= dh, q.dil[1] = 1;
    q.in[2] /= dw, q.out[2] /= dw, q.pad_lo[2] /= dw, q.pad_hi[2] /= dw, q.dil[2] = 1;
    const int64_t xl = p->n * p->c_in * p->in[1] * p->in[2], yl = p->n * p->c_out * p->out[1] * p->out[2];
    T *xq = (T *)ck_alloc((size_t)xl * sizeof(T)), *yq = (T *)ck_alloc((size_t)yl * sizeof(T));
    int err = CK_ERR_NOMEM;
    if (xq && yq) {
        FN(wino_phases)(x, xq, p->n, p->c_in, p->in[1], p->in[2], dh, dw, 1, nt);
        err = FN(wino_forward_dense)(&q, xq, w, bias, yq, nt);
        if (err == CK_OK)
            FN(wino_phases)(yq, y, p->n, p->c_out, p->out[1], p->out[2], dh, dw, 0, nt);
    }
    ck_free(xq);
    ck_free(yq);
    return err;
}

#undef V8
#undef LD8
#undef ST8
#undef CK_WINO_BT
