/* ck_gemm_impl.h - the GEMM micro-kernels, included once per type (T, SFX). */

/* ---- packed micro-kernel GEMM (the convolution engine) -------------------
 * C[m x n] (+)= Ap * Bp for one MR x NR register tile, where Ap holds K
 * groups of MR weights ([k][MR]) and Bp K groups of NR columns ([k][NR]),
 * both zero padded.  Packing B straight from the input (im2col into
 * micro-panels) is the only copy of the data.  Variants picked at run
 * time: AVX-512 (8 x 3 vectors), AVX2+FMA (6 x 2, or 4 x 3 for float on AMD
 * Zen 1, ck_avx2_block_4x3), portable (6 x 2). */
#define CK_DEFINE_KERNEL(NAME, ATTR, VBYTES, MR_, NV_, BROW, KEEP)                            \
    ATTR static void NAME(int64_t K, const T *restrict A, const T *restrict B,                \
                          const int64_t *restrict offs, T *restrict C, int64_t ldc, int64_t m,\
                          int64_t n, int acc_c, const T *cb, T *restrict bp)                  \
    {                                                                                         \
        typedef T vt __attribute__((vector_size(VBYTES), aligned(sizeof(T))));               \
        enum { VL = VBYTES / sizeof(T), NR = NV_ * VL };                                      \
        vt acc[MR_][NV_];                                                                     \
        (void)offs;                                                                           \
        (void)bp;                                                                             \
        for (int i = 0; i < MR_; i++)                                                         \
            for (int v = 0; v < NV_; v++)                                                     \
                acc[i][v] = (vt){0};                                                          \
        for (int64_t k = 0; k < K; k++) {                                                     \
            vt b[NV_];                                                                        \
            for (int v = 0; v < NV_; v++)                                                     \
                b[v] = *(const vt *)(B + (BROW) + v * VL);                                    \
            if (KEEP) /* the rows read in place, packed for the next row blocks */            \
                for (int v = 0; v < NV_; v++)                                                 \
                    *(vt *)(bp + k * NR + v * VL) = b[v];                                     \
            for (int i = 0; i < MR_; i++) {                                                   \
                const vt a = A[k * MR_ + i] - (vt){0}; /* a broadcast, no add */       \
                for (int v = 0; v < NV_; v++)                                                 \
                    acc[i][v] += a * b[v];                                                    \
            }                                                                                 \
        }                                                                                     \
        if (m == MR_ && n == NR) {                                                            \
            for (int i = 0; i < MR_; i++)                                                     \
                for (int v = 0; v < NV_; v++) {                                               \
                    vt *c = (vt *)(C + i * ldc + v * VL);                                     \
                    vt r = acc[i][v];                                                         \
                    if (acc_c)                                                                \
                        r += *c;                                                              \
                    if (cb)                                                                   \
                        r += cb[i];                                                           \
                    *c = r;                                                                   \
                }                                                                             \
            return;                                                                           \
        }                                                                                     \
        T tmp[MR_ * NR];                                                                      \
        memcpy(tmp, acc, sizeof(tmp));                                                        \
        for (int64_t i = 0; i < m; i++)                                                       \
            for (int64_t j = 0; j < n; j++)                                                   \
                C[i * ldc + j] = (acc_c ? C[i * ldc + j] : (T)0) + tmp[i * NR + j]            \
                                 + (cb ? cb[i] : (T)0);                                       \
    }

typedef void (*FN(kern_fn))(int64_t, const T *, const T *, const int64_t *, T *, int64_t, int64_t,
                            int64_t, int, const T *, T *);
typedef struct {
    FN(kern_fn) fn;    /* B packed: row k at B + k*NR */
    FN(kern_fn) fn_t;  /* B a shifted view of the input: row k at B + offs[k] */
    FN(kern_fn) fn_tp; /* as fn_t, and stores each B row it reads at bp + k*NR */
    int64_t mr, nr;
    int64_t kc; /* K block of the shifted-B GEMM (0: whole K, B read in place) */
} FN(kernel);

#define CK_AVX2 __attribute__((target("avx2,fma")))
#define CK_AVX512 __attribute__((target("avx512f,avx512vl,avx2,fma")))
CK_DEFINE_KERNEL(FN(kern_portable), , 32, 6, 2, k * NR, 0)
CK_DEFINE_KERNEL(FN(kernt_portable), , 32, 6, 2, offs[k], 0)
CK_DEFINE_KERNEL(FN(kerntp_portable), , 32, 6, 2, offs[k], 1)
#if CK_X86_DISPATCH
CK_DEFINE_KERNEL(FN(kern_avx2), CK_AVX2, 32, 6, 2, k * NR, 0)
CK_DEFINE_KERNEL(FN(kernt_avx2), CK_AVX2, 32, 6, 2, offs[k], 0)
CK_DEFINE_KERNEL(FN(kerntp_avx2), CK_AVX2, 32, 6, 2, offs[k], 1)
CK_DEFINE_KERNEL(FN(kern_avx2n), CK_AVX2, 32, 4, 3, k * NR, 0)
CK_DEFINE_KERNEL(FN(kernt_avx2n), CK_AVX2, 32, 4, 3, offs[k], 0)
CK_DEFINE_KERNEL(FN(kerntp_avx2n), CK_AVX2, 32, 4, 3, offs[k], 1)
CK_DEFINE_KERNEL(FN(kern_avx512), CK_AVX512, 64, 8, 3, k * NR, 0)
CK_DEFINE_KERNEL(FN(kernt_avx512), CK_AVX512, 64, 8, 3, offs[k], 0)
CK_DEFINE_KERNEL(FN(kerntp_avx512), CK_AVX512, 64, 8, 3, offs[k], 1)
#endif
#undef CK_AVX2
#undef CK_AVX512

static FN(kernel) FN(pick_kernel)(void)
{
    FN(kernel) k = {FN(kern_portable), FN(kernt_portable), FN(kerntp_portable), 6, 2 * 32 / (int64_t)sizeof(T),
                    CK_KC};
#if CK_X86_DISPATCH
    if (ck_cpu_level() >= 2) {
        k.fn = FN(kern_avx512);
        k.fn_t = FN(kernt_avx512);
        k.fn_tp = FN(kerntp_avx512);
        k.mr = 8;
        k.nr = 3 * 64 / (int64_t)sizeof(T);
        k.kc = 0;
    } else if (ck_cpu_level() == 1) {
        /* (float only: Winograd's blocks of tiles need nr a multiple of 8) */
        const int narrow = sizeof(T) == 4 && ck_avx2_block_4x3();
        k.fn = narrow ? FN(kern_avx2n) : FN(kern_avx2);
        k.fn_t = narrow ? FN(kernt_avx2n) : FN(kernt_avx2);
        k.fn_tp = narrow ? FN(kerntp_avx2n) : FN(kerntp_avx2);
        k.mr = narrow ? 4 : 6;
        k.nr = (narrow ? 3 : 2) * 32 / (int64_t)sizeof(T);
    }
#endif
    return k;
}

/* Ap[ib][k][i] = A(ib*mr + i, k) with A(i, k) = A[i*rsa + k*csa]; rows past
 * M are zero. */
static void FN(pack_a)(int64_t M, int64_t K, const T *A, int64_t rsa, int64_t csa, T *Ap,
                       int64_t mr)
{
    for (int64_t ib = 0; ib < M; ib += mr)
        for (int64_t k = 0; k < K; k++) {
            T *dst = Ap + ib * K + k * mr;
            for (int64_t i = 0; i < mr; i++)
                dst[i] = ib + i < M ? A[(ib + i) * rsa + k * csa] : (T)0;
        }
}

/* Bp[jb][k][j] = B[k*ldb + jb*nr + j] for a row-major K x N block; columns
 * past N are zero. */
static void FN(pack_b_rows)(int64_t K, int64_t N, const T *B, int64_t ldb, T *Bp, int64_t nr)
{
    for (int64_t jb = 0; jb < N; jb += nr) {
        const int64_t w = ck_min(nr, N - jb);
        for (int64_t k = 0; k < K; k++) {
            T *dst = Bp + jb * K + k * nr;
            memcpy(dst, B + k * ldb + jb, (size_t)w * sizeof(T));
            for (int64_t j = w; j < nr; j++)
                dst[j] = 0;
        }
    }
}

/* C[M x N] (+)= Ap * Bp over whole packed operands; cb: per-row bias or NULL. */
static void FN(packed_gemm)(const FN(kernel) *kn, int64_t M, int64_t N, int64_t K, const T *Ap,
                            const T *Bp, T *C, int64_t ldc, int acc_c, const T *cb)
{
    for (int64_t jb = 0; jb < N; jb += kn->nr)
        for (int64_t ib = 0; ib < M; ib += kn->mr)
            kn->fn(K, Ap + ib * K, Bp + jb * K, NULL, C + ib * ldc + jb, ldc, ck_min(kn->mr, M - ib),
                   ck_min(kn->nr, N - jb), acc_c, cb ? cb + ib : NULL, NULL);
}

/* C[m x n] = A * B (+ bias) with A packed ([ib][k][mr], row stride K) and
 * B's row k at xb + offs[k].  The micro-kernels read B rows up to nr - 1
 * columns past n, except with exact (B is the caller's array): then a
 * partial last panel is copied first.
 * kc == 0: the micro-kernel reads B in place over the whole K.  Else K is
 * walked in blocks of kc rows; the first row block reads each B
 * micro-panel in place and keeps a packed copy in bp (kc x nr, contiguous,
 * stays in L1) that the other row blocks read, while A's block (m x kc)
 * stays in L2 across the panels.  In place, one panel's rows are kc
 * far-apart lines in few cache sets, and all of A streams past every
 * panel. */
static void FN(gemm_shifted)(const FN(kernel) *kn, int64_t K, int64_t m, const T *ag, const T *xb,
                             const int64_t *offs, int64_t n, T *c, int64_t ldc, const T *bias, T *bp,
                             int exact)
{
    const int64_t mr = kn->mr, nr = kn->nr, kcb = kn->kc > 0 && m > mr ? kn->kc : K;
    const int64_t nfull = exact ? n / nr * nr : n;
    for (int64_t k0 = 0; k0 < K; k0 += kcb) {
        const int64_t kc = ck_min(kcb, K - k0);
        for (int64_t jb = 0; jb < nfull; jb += nr) {
            const int64_t w = ck_min(nr, n - jb);
            for (int64_t ib = 0; ib < m; ib += mr) {
                const T *a = ag + ib * K + k0 * mr, *cb = k0 == 0 && bias ? bias + ib : NULL;
                T *cc = c + ib * ldc + jb;
                if (kn->kc == 0 || m <= mr)
                    kn->fn_t(kc, a, xb + jb, offs + k0, cc, ldc, ck_min(mr, m - ib), w, k0 > 0, cb, NULL);
                else if (ib == 0)
                    kn->fn_tp(kc, a, xb + jb, offs + k0, cc, ldc, ck_min(mr, m - ib), w, k0 > 0, cb, bp);
                else
                    kn->fn(kc, a, bp, NULL, cc, ldc, ck_min(mr, m - ib), w, k0 > 0, cb, NULL);
            }
        }
    }
    if (nfull == n)
        return;
    const int64_t w = n - nfull;
    for (int64_t k0 = 0; k0 < K; k0 += CK_KC) {
        const int64_t kc = ck_min(CK_KC, K - k0);
        for (int64_t k = 0; k < kc; k++) {
            T *dst = bp + k * nr;
            memcpy(dst, xb + offs[k0 + k] + nfull, (size_t)w * sizeof(T));
            for (int64_t j = w; j < nr; j++)
                dst[j] = 0;
        }
        for (int64_t ib = 0; ib < m; ib += mr)
            kn->fn(kc, ag + ib * K + k0 * mr, bp, NULL, c + ib * ldc + nfull, ldc, ck_min(mr, m - ib), w,
                   k0 > 0, k0 == 0 && bias ? bias + ib : NULL, NULL);
    }
}

/* Scratch gemm_shifted needs for its packed B panel, in elements. */
static int64_t FN(gemm_shifted_scratch)(const FN(kernel) *kn) { return ck_max(kn->kc, CK_KC) * kn->nr + 16; }

/* ---- dot-product micro-kernel (the weight gradient) ---------------------
 * W[i][j] += sum_{q < L} G[i*ldg + q] * X[xoffs[j] + q] for an MO x NJ
 * block; whole vectors first, then an exact scalar tail.  Rows past mo / nj
 * read row 0 and are dropped. */
#define CK_DEFINE_DOT(NAME, ATTR, VBYTES, MO_, NJ_)                                         \
    ATTR static void NAME(int64_t L, const T *G, int64_t ldg, const T *X,                   \
                          const int64_t *xoffs, T *W, int64_t ldw, int64_t mo, int64_t nj)   \
    {                                                                                       \
        typedef T vt __attribute__((vector_size(VBYTES), aligned(sizeof(T))));             \
        enum { VL = VBYTES / sizeof(T) };                                                   \
        const T *gp[MO_], *xp[NJ_];                                                         \
        vt acc[MO_][NJ_];                                                                   \
        const int64_t Lv = L / VL * VL;                                                     \
        for (int i = 0; i < MO_; i++)                                                       \
            gp[i] = G + (i < mo ? i : 0) * ldg;                                             \
        for (int j = 0; j < NJ_; j++)                                                       \
            xp[j] = X + xoffs[j < nj ? j : 0];                                              \
        for (int i = 0; i < MO_; i++)                                                       \
            for (int j = 0; j < NJ_; j++)                                                   \
                acc[i][j] = (vt){0};                                                        \
        for (int64_t q = 0; q < Lv; q += VL) {                                              \
            vt g[MO_];                                                                      \
            for (int i = 0; i < MO_; i++)                                                   \
                g[i] = *(const vt *)(gp[i] + q);                                            \
            for (int j = 0; j < NJ_; j++) {                                                 \
                const vt xv = *(const vt *)(xp[j] + q);                                     \
                for (int i = 0; i < MO_; i++)                                               \
                    acc[i][j] += g[i] * xv;                                                 \
            }                                                                               \
        }                                                                                   \
        for (int64_t i = 0; i < mo; i++)                                                    \
            for (int64_t j = 0; j < nj; j++) {                                              \
                T s = 0;                                                                    \
                for (int v = 0; v < VL; v++)                                                \
                    s += acc[i][j][v];                                                      \
                for (int64_t q = Lv; q < L; q++)                                            \
                    s += gp[i][q] * xp[j][q];                                               \
                W[i * ldw + j] += s;                                                        \
            }                                                                               \
    }

typedef void (*FN(dot_fn))(int64_t, const T *, int64_t, const T *, const int64_t *, T *, int64_t,
                           int64_t, int64_t);
typedef struct {
    FN(dot_fn) fn;
    int64_t mo, nj, vl;
} FN(dotk);

CK_DEFINE_DOT(FN(dot_portable), , 32, 3, 4)
#if CK_X86_DISPATCH
CK_DEFINE_DOT(FN(dot_avx2), __attribute__((target("avx2,fma"))), 32, 3, 4)
CK_DEFINE_DOT(FN(dot_avx512), __attribute__((target("avx512f,avx512vl,avx2,fma"))), 64, 4, 6)
#endif

static FN(dotk) FN(pick_dot)(void)
{
    FN(dotk) k = {FN(dot_portable), 3, 4, 32 / (int64_t)sizeof(T)};
#if CK_X86_DISPATCH
    if (ck_cpu_level() >= 2) {
        k.fn = FN(dot_avx512);
        k.mo = 4;
        k.nj = 6;
        k.vl = 64 / (int64_t)sizeof(T);
    } else if (ck_cpu_level() == 1) {
        k.fn = FN(dot_avx2);
    }
#endif
    return k;
}
