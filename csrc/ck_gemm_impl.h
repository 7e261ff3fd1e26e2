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
