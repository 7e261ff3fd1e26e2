/* ck_internal.h - helpers shared by the kernels (not part of the ABI). */
#ifndef CK_INTERNAL_H
#define CK_INTERNAL_H

#if !defined(_POSIX_C_SOURCE) || _POSIX_C_SOURCE < 200112L
#  undef _POSIX_C_SOURCE
#  define _POSIX_C_SOURCE 200112L /* posix_memalign under -std=c11 */
#endif

#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <pthread.h>

#include "convkit.h"

/* The cancellation flag (convkit.interrupt.FLAG), read by every kernel between tiles. */
static const volatile int32_t ck_never_cancelled = 0;
static const volatile int32_t *ck_cancel_flag = &ck_never_cancelled;
#define CK_CANCELLED() (*ck_cancel_flag != 0)

/* Multiversion the hot loops so one portable binary uses AVX2/AVX-512 where
 * the CPU has them (no -march=native at build time). */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && !defined(CK_NO_CLONES)
#  if __GNUC__ >= 11
#    define CK_CLONES __attribute__((target_clones("default", "arch=x86-64-v3", "arch=x86-64-v4")))
#  else
#    define CK_CLONES __attribute__((target_clones("default", "avx2", "avx512f")))
#  endif
#else
#  define CK_CLONES
#endif

/* Run-time choice of the GEMM micro-kernel (x86-64 with GCC or clang). */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(CK_NO_CLONES)
#  define CK_X86_DISPATCH 1
/* 2: AVX-512F, 1: AVX2 + FMA, 0: baseline. */
static inline int ck_cpu_level(void)
{
    /* CONVKIT_C_ISA=portable|avx2 caps the choice (tests cover every kernel). */
    const char *cap = getenv("CONVKIT_C_ISA");
    if (cap && strcmp(cap, "portable") == 0)
        return 0;
    if (cap && strcmp(cap, "avx2") == 0)
        return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") ? 1 : 0;
    if (__builtin_cpu_supports("avx512f"))
        return 2;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
        return 1;
    return 0;
}
/* The AVX2 float micro-kernel's register block: 4 rows x 3 vectors instead
 * of 6 x 2 on AMD Zen 1 (family 17h, models below 30h), whose FP units run
 * each 256-bit FMA as two 128-bit halves: fewer broadcasts per FMA there,
 * 7-28% less time on 1 thread over eight layers (docs/performance.md).
 * CONVKIT_C_AVX2_BLOCK=6x2 or 4x3 forces one (tests cover both). */
static inline int ck_avx2_block_4x3(void)
{
    const char *v = getenv("CONVKIT_C_AVX2_BLOCK");
    if (v && strcmp(v, "4x3") == 0)
        return 1;
    if (v && strcmp(v, "6x2") == 0)
        return 0;
    return __builtin_cpu_is("znver1");
}
#else
#  define CK_X86_DISPATCH 0
#endif

#if defined(__GNUC__)
#  define CK_INLINE static inline __attribute__((always_inline))
#else
#  define CK_INLINE static inline
#endif

/* Outputs per register block of the direct (depthwise) kernels, at most (AVX-512 float; sizes slack). */
#define CK_DIRECT_BLOCK 16

/* K block of the AVX2 and portable forward GEMMs (ck_gemm_impl.h's
 * gemm_shifted): a 256-row float B panel is 16 KB (6x2 block) or 24 KB
 * (4x3), within a Zen 1's 32 KB L1. */
#ifndef CK_KC
#  define CK_KC 256
#endif


/* Tile of output columns packed at once: keeps the packed panel near L2. */
#define CK_PANEL_BYTES (384 * 1024)
/* Weight-gradient rows longer than this are summed tile by tile into double accumulators. */
#define CK_WGRAD_ROW_MAX 16384


static inline int64_t ck_roundup(int64_t a, int64_t m) { return (a + m - 1) / m * m; }
static inline int64_t ck_min(int64_t a, int64_t b) { return a < b ? a : b; }
static inline int64_t ck_max(int64_t a, int64_t b) { return a > b ? a : b; }

/* floor(a / b) for b > 0 and any sign of a. */
static inline int64_t ck_floordiv(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && a < 0) ? q - 1 : q;
}

/* Outputs o in [0, nout) whose tap o*s + off lands inside [0, n): [*lo, *hi). */
static inline void ck_valid_range(int64_t n, int64_t s, int64_t off, int64_t nout,
                                  int64_t *lo, int64_t *hi)
{
    int64_t a = off >= 0 ? 0 : ck_floordiv(-off + s - 1, s);
    int64_t b = ck_floordiv(n - 1 - off, s) + 1;
    a = ck_max(0, ck_min(a, nout));
    b = ck_max(a, ck_min(b, nout));
    *lo = a;
    *hi = b;
}

/* ---- scratch memory ------------------------------------------------------
 * ck_alloc / ck_free: 64-byte aligned scratch with a small per-thread cache
 * of freed blocks.  Big per-call buffers (tap planes, ...) would otherwise be
 * mmap'ed, faulted in and zeroed by the kernel on every call, which costs as
 * much as the convolution for small problems.  The cache is thread-local
 * (no shared mutable state) and freed when its thread exits. */
#define CK_CACHE_SLOTS 8
#define CK_CACHE_BYTES ((size_t)64 << 20) /* at most this much kept per thread */
#define CK_HEADER 64                       /* keeps the block 64-byte aligned */

typedef struct {
    void *blk[CK_CACHE_SLOTS];
    size_t total;
} ck_cache;

static pthread_key_t ck_cache_key;
static pthread_once_t ck_cache_once = PTHREAD_ONCE_INIT;

static void ck_cache_destroy(void *v)
{
    ck_cache *c = (ck_cache *)v;
    for (int i = 0; i < CK_CACHE_SLOTS; i++)
        free(c->blk[i]);
    free(c);
}

static void ck_cache_init(void) { (void)pthread_key_create(&ck_cache_key, ck_cache_destroy); }

static ck_cache *ck_cache_get(void)
{
    pthread_once(&ck_cache_once, ck_cache_init);
    ck_cache *c = (ck_cache *)pthread_getspecific(ck_cache_key);
    if (!c) {
        c = (ck_cache *)calloc(1, sizeof(ck_cache));
        if (c && pthread_setspecific(ck_cache_key, c) != 0) {
            free(c);
            c = NULL;
        }
    }
    return c;
}

static inline size_t ck_blk_size(void *blk) { return *(size_t *)blk; }

/* NULL on failure; release with ck_free (never free). */
static void *ck_alloc(size_t bytes)
{
    ck_cache *c = ck_cache_get();
    if (c) { /* the smallest cached block that fits and wastes at most half */
        int best = -1;
        for (int i = 0; i < CK_CACHE_SLOTS; i++)
            if (c->blk[i] && ck_blk_size(c->blk[i]) >= bytes && ck_blk_size(c->blk[i]) / 2 <= bytes
                && (best < 0 || ck_blk_size(c->blk[i]) < ck_blk_size(c->blk[best])))
                best = i;
        if (best >= 0) {
            void *blk = c->blk[best];
            c->blk[best] = NULL;
            c->total -= ck_blk_size(blk);
            return (char *)blk + CK_HEADER;
        }
    }
    void *blk = NULL;
    if (bytes > SIZE_MAX - CK_HEADER || posix_memalign(&blk, 64, CK_HEADER + (bytes ? bytes : 1)) != 0)
        return NULL;
    *(size_t *)blk = bytes;
    return (char *)blk + CK_HEADER;
}

static void ck_free(void *ptr)
{
    if (!ptr)
        return;
    void *blk = (char *)ptr - CK_HEADER;
    const size_t size = ck_blk_size(blk);
    ck_cache *c = ck_cache_get();
    if (c && size <= CK_CACHE_BYTES) {
        int slot = -1;
        for (int i = 0; i < CK_CACHE_SLOTS && slot < 0; i++)
            if (!c->blk[i])
                slot = i;
        if (slot < 0) { /* full: evict the smallest if this one is bigger */
            slot = 0;
            for (int i = 1; i < CK_CACHE_SLOTS; i++)
                if (ck_blk_size(c->blk[i]) < ck_blk_size(c->blk[slot]))
                    slot = i;
            if (ck_blk_size(c->blk[slot]) >= size) {
                free(blk);
                return;
            }
            c->total -= ck_blk_size(c->blk[slot]);
            free(c->blk[slot]);
            c->blk[slot] = NULL;
        }
        /* Over budget: drop the largest cached blocks first. */
        while (c->total + size > CK_CACHE_BYTES) {
            int big = -1;
            for (int i = 0; i < CK_CACHE_SLOTS; i++)
                if (c->blk[i] && (big < 0 || ck_blk_size(c->blk[i]) > ck_blk_size(c->blk[big])))
                    big = i;
            if (big < 0)
                break;
            c->total -= ck_blk_size(c->blk[big]);
            free(c->blk[big]);
            c->blk[big] = NULL;
            if (slot < 0 || c->blk[slot])
                slot = big;
        }
        if (c->total + size <= CK_CACHE_BYTES) {
            c->blk[slot] = blk;
            c->total += size;
            return;
        }
    }
    free(blk);
}

/* a * b into *r, failing instead of wrapping. */
static inline int ck_mul(int64_t a, int64_t b, int64_t *r)
{
    return __builtin_mul_overflow(a, b, r) ? CK_ERR_OVERFLOW : CK_OK;
}

static inline int ck_prod3(const int64_t v[3], int64_t *r)
{
    int64_t t;
    if (ck_mul(v[0], v[1], &t) || ck_mul(t, v[2], r))
        return CK_ERR_OVERFLOW;
    return CK_OK;
}

#endif /* CK_INTERNAL_H */
