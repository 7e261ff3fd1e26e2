/* ck_gemm_impl.h - GEMM dispatch (BLAS or built-in), included once per type.
 * Expects T, SFX, CK_GEMM_FN (cblas pointer type) and CK_GEMM_MEMBER. */

/* C = A*B + beta*C with A(i,k) = A[i*rsa + k*csa] (covers NN and TN) and B
 * row-major K x N.  4 x 32 register tile; the fallback when no BLAS loads. */
CK_CLONES static void FN(gemm_nn_ref)(int64_t M, int64_t N, int64_t K, const T *A, int64_t rsa,
                                      int64_t csa, const T *B, int64_t ldb, T beta, T *C, int64_t ldc)
{
    enum { MR = 4, NR = 32 };
    int64_t i = 0;
    for (; i + MR <= M; i += MR) {
        int64_t j = 0;
        for (; j + NR <= N; j += NR) {
            T acc[MR][NR];
            for (int r = 0; r < MR; r++)
                for (int c = 0; c < NR; c++)
                    acc[r][c] = beta == 0 ? (T)0 : beta * C[(i + r) * ldc + j + c];
            for (int64_t k = 0; k < K; k++) {
                const T *b = B + k * ldb + j;
                for (int r = 0; r < MR; r++) {
                    T a = A[(i + r) * rsa + k * csa];
                    for (int c = 0; c < NR; c++)
                        acc[r][c] += a * b[c];
                }
            }
            for (int r = 0; r < MR; r++)
                for (int c = 0; c < NR; c++)
                    C[(i + r) * ldc + j + c] = acc[r][c];
        }
        for (; j < N; j++)
            for (int r = 0; r < MR; r++) {
                T s = beta == 0 ? (T)0 : beta * C[(i + r) * ldc + j];
                for (int64_t k = 0; k < K; k++)
                    s += A[(i + r) * rsa + k * csa] * B[k * ldb + j];
                C[(i + r) * ldc + j] = s;
            }
    }
    for (; i < M; i++) {
        T *c = C + i * ldc;
        for (int64_t j = 0; j < N; j++)
            c[j] = beta == 0 ? (T)0 : beta * c[j];
        for (int64_t k = 0; k < K; k++) {
            T a = A[i * rsa + k * csa];
            const T *b = B + k * ldb;
            for (int64_t j = 0; j < N; j++)
                c[j] += a * b[j];
        }
    }
}

/* C = A*B^T + beta*C, A M x K and B N x K row-major: dot products. */
CK_CLONES static void FN(gemm_nt_ref)(int64_t M, int64_t N, int64_t K, const T *A, int64_t lda,
                                      const T *B, int64_t ldb, T beta, T *C, int64_t ldc)
{
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) {
            const T *a = A + i * lda, *b = B + j * ldb;
            T s = 0;
#pragma omp simd reduction(+ : s)
            for (int64_t k = 0; k < K; k++)
                s += a[k] * b[k];
            C[i * ldc + j] = (beta == 0 ? (T)0 : beta * C[i * ldc + j]) + s;
        }
}

/* Row-major C = op(A) op(B) + beta*C; TN and NT are the only transposed uses. */
static void FN(gemm)(const ck_blas *bl, int ta, int tb, int64_t M, int64_t N, int64_t K,
                     const T *A, int64_t lda, const T *B, int64_t ldb, T beta, T *C, int64_t ldc)
{
    if (M <= 0 || N <= 0)
        return;
    CK_GEMM_FN f = bl ? (CK_GEMM_FN)bl->CK_GEMM_MEMBER : NULL;
    if (f && K > 0 && M <= INT32_MAX && N <= INT32_MAX && K <= INT32_MAX && lda <= INT32_MAX
        && ldb <= INT32_MAX && ldc <= INT32_MAX) {
        f(CK_CBLAS_ROW_MAJOR, ta ? CK_CBLAS_TRANS : CK_CBLAS_NO_TRANS,
          tb ? CK_CBLAS_TRANS : CK_CBLAS_NO_TRANS, (int)M, (int)N, (int)K, (T)1, A, (int)lda, B,
          (int)ldb, beta, C, (int)ldc);
        return;
    }
    if (tb)
        FN(gemm_nt_ref)(M, N, K, A, lda, B, ldb, beta, C, ldc);
    else if (ta)
        FN(gemm_nn_ref)(M, N, K, A, 1, lda, B, ldb, beta, C, ldc);
    else
        FN(gemm_nn_ref)(M, N, K, A, lda, 1, B, ldb, beta, C, ldc);
}

/* ---- packed micro-kernel GEMM (the convolution engine) -------------------
 * C[m x n] (+)= Ap * Bp for one MR x NR register tile, where Ap holds K
 * groups of MR weights ([k][MR]) and Bp K groups of NR columns ([k][NR]),
 * both zero padded.  Packing B straight from the input (im2col into
 * micro-panels) is the only copy of the data.  Three variants, picked at run
 * time: AVX-512 (8 x 3 vectors), AVX2+FMA (6 x 2), portable (6 x 2). */
#define CK_DEFINE_KERNEL(NAME, ATTR, VBYTES, MR_, NV_, BROW)                                  \
    ATTR static void NAME(int64_t K, const T *restrict A, const T *restrict B,                \
                          const int64_t *restrict offs, T *restrict C, int64_t ldc, int64_t m,\
                          int64_t n, int acc_c, const T *cb)                                  \
    {                                                                                         \
        typedef T vt __attribute__((vector_size(VBYTES), aligned(sizeof(T))));               \
        enum { VL = VBYTES / sizeof(T), NR = NV_ * VL };                                      \
        vt acc[MR_][NV_];                                                                     \
        for (int i = 0; i < MR_; i++)                                                         \
            for (int v = 0; v < NV_; v++)                                                     \
                acc[i][v] = (vt){0};                                                          \
        for (int64_t k = 0; k < K; k++) {                                                     \
            vt b[NV_];                                                                        \
            for (int v = 0; v < NV_; v++)                                                     \
                b[v] = *(const vt *)(B + (BROW) + v * VL);                                    \
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
                            int64_t, int, const T *);
typedef struct {
    FN(kern_fn) fn;   /* B packed: row k at B + k*NR */
    FN(kern_fn) fn_t; /* B a shifted view of the input: row k at B + offs[k] */
    int64_t mr, nr;
} FN(kernel);

#define CK_AVX2 __attribute__((target("avx2,fma")))
#define CK_AVX512 __attribute__((target("avx512f,avx512vl,avx2,fma")))
CK_DEFINE_KERNEL(FN(kern_portable), , 32, 6, 2, k * NR)
CK_DEFINE_KERNEL(FN(kernt_portable), , 32, 6, 2, offs[k])
#if CK_X86_DISPATCH
CK_DEFINE_KERNEL(FN(kern_avx2), CK_AVX2, 32, 6, 2, k * NR)
CK_DEFINE_KERNEL(FN(kernt_avx2), CK_AVX2, 32, 6, 2, offs[k])
CK_DEFINE_KERNEL(FN(kern_avx512), CK_AVX512, 64, 8, 3, k * NR)
CK_DEFINE_KERNEL(FN(kernt_avx512), CK_AVX512, 64, 8, 3, offs[k])
#endif
#undef CK_AVX2
#undef CK_AVX512

static FN(kernel) FN(pick_kernel)(void)
{
    FN(kernel) k = {FN(kern_portable), FN(kernt_portable), 6, 2 * 32 / (int64_t)sizeof(T)};
#if CK_X86_DISPATCH
    if (ck_cpu_level() >= 2) {
        k.fn = FN(kern_avx512);
        k.fn_t = FN(kernt_avx512);
        k.mr = 8;
        k.nr = 3 * 64 / (int64_t)sizeof(T);
    } else if (ck_cpu_level() == 1) {
        k.fn = FN(kern_avx2);
        k.fn_t = FN(kernt_avx2);
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
                   ck_min(kn->nr, N - jb), acc_c, cb ? cb + ib : NULL);
}
