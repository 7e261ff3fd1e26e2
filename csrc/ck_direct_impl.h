/* ck_direct_impl.h - the vector loops of the direct kernels (depthwise and
 * tiny channel counts), included once per type (T, SFX) and per ISA:
 * CK_DFN(name) names this instantiation, CK_DATTR is its target attribute
 * and CK_DVBYTES the width of its vector block, that of the ISA's registers
 * (64 AVX-512, 32 AVX2, 16 baseline).  A block wider than the registers is
 * lowered through the stack: the AVX2 clone of one 64-byte source spent
 * its time in stack stores and ran the 112x112 depthwise layer 2.6x slower
 * than cython's loops. */

/* NB consecutive blocks of B outputs of one row (stride 1),
 * every tap accumulated in registers; the last block may run past OW (its
 * extra lanes are computed from in-bounds padding/slack and not stored). */
CK_DATTR static inline __attribute__((always_inline)) void CK_DFN(dw_blocks)(const ck_conv_dims *d, const FN(padgeo) *pg, const T *xp,
                             const T *wk, T bv, int64_t rowbase, int64_t ow0, int64_t OW,
                             T *yrow, const int NB)
{
    enum { B = CK_DVBYTES / sizeof(T) };
    typedef T vb __attribute__((vector_size(CK_DVBYTES), aligned(sizeof(T))));
    vb a[8];
    for (int j = 0; j < NB; j++)
        a[j] = bv - (vb){0};
    for (int64_t icl = 0; icl < d->cig; icl++) {
        const T *xb = xp + icl * pg->plane + rowbase + ow0;
        const T *wr = wk + icl * d->KK;
        for (int64_t t = 0; t < d->KK; t++) {
            const T wv = wr[t], *xt = xb + pg->toff[t];
            for (int j = 0; j < NB; j++)
                a[j] += wv * *(const vb *)(xt + j * B);
        }
    }
    for (int j = 0; j < NB; j++) {
        const int64_t o = ow0 + j * B;
        if (o + B <= OW)
            *(vb *)(yrow + o) = a[j];
        else
            memcpy(yrow + o, &a[j], (size_t)(OW - o) * sizeof(T));
    }
}

/* Forward of one output channel from padded planes: blocks of
 * B outputs accumulate every tap in vector registers. */
CK_DATTR static void CK_DFN(conv_fwd_direct)(const ck_conv_params *p, const ck_conv_dims *d,
                                          const FN(padgeo) *pg, const T *xp, const T *wk, T bv,
                                          T *yp)
{
    enum { B = CK_DVBYTES / sizeof(T) };
    typedef T vb __attribute__((vector_size(CK_DVBYTES), aligned(sizeof(T))));
    const int64_t OW = p->out[2], s2 = p->stride[2], KK = d->KK;
    for (int64_t od = 0; od < p->out[0]; od++)
        for (int64_t oh = 0; oh < p->out[1]; oh++) {
            T *yrow = yp + (od * p->out[1] + oh) * OW;
            const int64_t rowbase = (od * p->stride[0] * pg->Hp + oh * p->stride[1]) * pg->Wp;
            int64_t ow0 = 0;
            if (s2 == 1) /* up to eight independent accumulators hide the FMA latency */
                for (; ow0 < OW; ow0 += 8 * B) {
                    const int64_t nb = ck_min(8, (OW - ow0 + B - 1) / B);
                    switch (nb) {
                    case 8: CK_DFN(dw_blocks)(d, pg, xp, wk, bv, rowbase, ow0, OW, yrow, 8); break;
                    case 7: CK_DFN(dw_blocks)(d, pg, xp, wk, bv, rowbase, ow0, OW, yrow, 7); break;
                    case 6: CK_DFN(dw_blocks)(d, pg, xp, wk, bv, rowbase, ow0, OW, yrow, 6); break;
                    case 5: CK_DFN(dw_blocks)(d, pg, xp, wk, bv, rowbase, ow0, OW, yrow, 5); break;
                    case 4: CK_DFN(dw_blocks)(d, pg, xp, wk, bv, rowbase, ow0, OW, yrow, 4); break;
                    case 3: CK_DFN(dw_blocks)(d, pg, xp, wk, bv, rowbase, ow0, OW, yrow, 3); break;
                    case 2: CK_DFN(dw_blocks)(d, pg, xp, wk, bv, rowbase, ow0, OW, yrow, 2); break;
                    default: CK_DFN(dw_blocks)(d, pg, xp, wk, bv, rowbase, ow0, OW, yrow, 1); break;
                    }
                }
            for (; ow0 < OW; ow0 += B) {
                vb acc = bv - (vb){0};
                for (int64_t icl = 0; icl < d->cig; icl++) {
                    const T *xb = xp + icl * pg->plane + rowbase + ow0 * s2;
                    const T *wr = wk + icl * KK;
                    if (s2 == 1) {
                        for (int64_t t = 0; t < KK; t++)
                            acc += wr[t] * *(const vb *)(xb + pg->toff[t]);
                    } else {
                        for (int64_t t = 0; t < KK; t++) {
                            const T *xt = xb + pg->toff[t];
                            vb v;
                            for (int j = 0; j < B; j++)
                                v[j] = xt[j * s2];
                            acc += wr[t] * v;
                        }
                    }
                }
                if (ow0 + B <= OW)
                    *(vb *)(yrow + ow0) = acc;
                else
                    memcpy(yrow + ow0, &acc, (size_t)(OW - ow0) * sizeof(T));
            }
        }
}

/* Weight gradient of one output channel for one image, from padded planes:
 * per tap, vector partial sums over rows (acc: KK x B scratch), flushed into
 * double every few thousand columns so a long plane keeps double accuracy;
 * the row tails past the last full block go through exact scalar loops. */
CK_DATTR static void CK_DFN(conv_bww_direct)(const ck_conv_params *p, const ck_conv_dims *d,
                                          const FN(padgeo) *pg, const T *xp, const T *gyp, T *wk,
                                          T *acc)
{
    enum { B = CK_DVBYTES / sizeof(T) };
    typedef T vb __attribute__((vector_size(CK_DVBYTES), aligned(sizeof(T))));
    const int64_t OW = p->out[2], s2 = p->stride[2], KK = d->KK, full = OW / B * B;
    const int64_t flush = ck_max(1, 4096 / ck_max(OW, 1)); /* rows between flushes */
    if (KK == 9 && s2 == 1) {
        /* 3x3 taps, stride 1 (depthwise 3x3): nine accumulators stay in
         * registers across the whole plane. */
        int64_t to[9];
        for (int t = 0; t < 9; t++)
            to[t] = pg->toff[t];
        for (int64_t icl = 0; icl < d->cig; icl++) {
            vb a9[9];
            T tail[9];
            double s9[9];
            int64_t rows = 0;
            for (int t = 0; t < 9; t++) {
                a9[t] = (vb){0};
                tail[t] = 0;
                s9[t] = 0;
            }
            for (int64_t od = 0; od < p->out[0]; od++)
                for (int64_t oh = 0; oh < p->out[1]; oh++) {
                    const T *gyrow = gyp + (od * p->out[1] + oh) * OW;
                    const T *xb = xp + icl * pg->plane
                                  + (od * p->stride[0] * pg->Hp + oh * p->stride[1]) * pg->Wp;
                    for (int64_t ow0 = 0; ow0 < full; ow0 += B) {
                        const vb g = *(const vb *)(gyrow + ow0);
                        for (int t = 0; t < 9; t++)
                            a9[t] += g * *(const vb *)(xb + to[t] + ow0);
                    }
                    for (int64_t ow = full; ow < OW; ow++)
                        for (int t = 0; t < 9; t++)
                            tail[t] += gyrow[ow] * xb[to[t] + ow];
                    if (++rows == flush) {
                        rows = 0;
                        for (int t = 0; t < 9; t++) {
                            double sum = (double)tail[t];
                            for (int j = 0; j < B; j++)
                                sum += (double)a9[t][j];
                            s9[t] += sum;
                            a9[t] = (vb){0};
                            tail[t] = 0;
                        }
                    }
                }
            for (int t = 0; t < 9; t++) {
                double sum = s9[t] + (double)tail[t];
                for (int j = 0; j < B; j++)
                    sum += (double)a9[t][j];
                wk[icl * 9 + t] += (T)sum;
            }
        }
        return;
    }
    double sums[KK];
    for (int64_t icl = 0; icl < d->cig; icl++) {
        int64_t rows = 0;
        memset(acc, 0, (size_t)(KK * B) * sizeof(T));
        for (int64_t t = 0; t < KK; t++)
            sums[t] = 0;
        for (int64_t od = 0; od < p->out[0]; od++)
            for (int64_t oh = 0; oh < p->out[1]; oh++) {
                const T *gyrow = gyp + (od * p->out[1] + oh) * OW;
                const T *xb = xp + icl * pg->plane
                              + (od * p->stride[0] * pg->Hp + oh * p->stride[1]) * pg->Wp;
                for (int64_t t = 0; t < KK; t++) {
                    const T *xt = xb + pg->toff[t];
                    vb a = *(vb *)(acc + t * B);
                    for (int64_t ow0 = 0; ow0 < full; ow0 += B) {
                        if (s2 == 1) {
                            a += *(const vb *)(gyrow + ow0) * *(const vb *)(xt + ow0);
                        } else {
                            vb v;
                            for (int j = 0; j < B; j++)
                                v[j] = xt[(ow0 + j) * s2];
                            a += *(const vb *)(gyrow + ow0) * v;
                        }
                    }
                    for (int64_t ow = full; ow < OW; ow++)
                        a[ow - full] += gyrow[ow] * xt[ow * s2];
                    *(vb *)(acc + t * B) = a;
                }
                if (++rows == flush) {
                    rows = 0;
                    for (int64_t i = 0; i < KK * B; i++)
                        sums[i / B] += (double)acc[i];
                    memset(acc, 0, (size_t)(KK * B) * sizeof(T));
                }
            }
        for (int64_t i = 0; i < KK * B; i++)
            sums[i / B] += (double)acc[i];
        for (int64_t t = 0; t < KK; t++)
            wk[icl * KK + t] += (T)sums[t];
    }
}
