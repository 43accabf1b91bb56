/*
 * term_life: the stochastic term-life projection of MODEL.md, one policy × LANES scenarios
 * at a time.
 *
 * Speed comes from doing per-month work only where it varies:
 *  - tl_prepare: tables that depend on the assumptions only (q_mth by sex/age/select
 *    duration, l_base by policy year, DF0(t), maint/12·(1+infl)^(t/12));
 *  - tl_prepare_scenarios: per scenario, once per scenario set, DF_s(t) = DF0(t)·exp(−Σr/12)
 *    and dl(t, s), interleaved LANES scenarios per month so one policy's month reads
 *    consecutive memory;
 *  - tl_run_blocks: per policy, a loop over policy years (q, l_base are constant in a year)
 *    and inside it over months with the LANES scenario states in registers: a few
 *    multiply-adds per policy·scenario·month.
 * Each (policy, scenario) value is computed by the same operations whatever the thread,
 * chunk or scenario grouping, and a block partial is summed in row order: the results are
 * bit-identical for any split of blocks over threads.
 */
#include <math.h>
#include <stdint.h>

#include "livecalc_model.h"

#ifndef LC_LANES
#define LC_LANES 16 /* scenarios per group: the interleave of disc/dlap */
#endif
#define LANES LC_LANES

LC_EXPORT(lc_abi_version) int32_t lc_abi_version(void) { return LC_ABI_VERSION; }

/* Scenarios per group in the disc/dlap workspace layout. */
LC_EXPORT(tl_lanes) int32_t tl_lanes(void) { return LANES; }

static inline uint32_t min_u32(uint32_t a, uint32_t b) { return a < b ? a : b; }

/* q_mth[f][a][d] = 1 − (1 − min(1, q[a][d]·sexfactor))^(1/12); l_base[y] = 1 − (1 − lapse[y])^(1/12);
 * DF0(t) = (1 + ((1 + z[⌊t/12⌋])^(1/12) − 1))^(−t); maint_infl(t) = maint/12·(1 + infl)^(t/12). */
LC_EXPORT(tl_prepare)
int32_t tl_prepare(LC_BASE_ARG uint32_t ctx_off) {
    const lc_tl_ctx *c = LC_AT(const lc_tl_ctx, ctx_off);
    if (c->abi_version != LC_ABI_VERSION) return LC_E_ABI;
    if ((c->n_months + 11) / 12 > c->n_curve) return LC_E_TABLE;
    const double *restrict mort = LC_AT(const double, c->mortality);
    double *restrict q_mth = LC_AT(double, c->q_mth);
    uint32_t cells = c->n_ages * c->n_sel;
    for (uint32_t f = 0; f < 2; f++) {
        double factor = f ? c->female_multiplier : 1.0;
        for (uint32_t i = 0; i < cells; i++) {
            double q = mort[i] * factor;
            q = q < 1.0 ? q : 1.0;
            q_mth[f * cells + i] = 1.0 - pow(1.0 - q, 1.0 / 12.0);
        }
    }
    const double *restrict lapse = LC_AT(const double, c->lapse);
    double *restrict l_base = LC_AT(double, c->l_base);
    for (uint32_t y = 0; y < c->n_lapse; y++) l_base[y] = 1.0 - pow(1.0 - lapse[y], 1.0 / 12.0);
    const double *restrict curve = LC_AT(const double, c->curve);
    double *restrict df0 = LC_AT(double, c->df0);
    double *restrict maint_infl = LC_AT(double, c->maint_infl);
    for (uint32_t t = 0; t < c->n_months; t++) {
        double disc_rate_mth = pow(1.0 + curve[t / 12], 1.0 / 12.0) - 1.0;
        df0[t] = pow(1.0 + disc_rate_mth, -(double)t);
        maint_infl[t] = c->expense_maint / 12.0 * pow(1.0 + c->inflation, (double)t / 12.0);
    }
    return LC_OK;
}

/* For scenario groups [g_begin, g_end): disc = DF0(t)·exp(−Σ_{m<t} r_s(m)/12) (sum in month
 * order), dlap = clamp(1 + β·r_s(t), lo, hi); lanes past N get disc 0, dlap 1. */
LC_EXPORT(tl_prepare_scenarios)
int32_t tl_prepare_scenarios(LC_BASE_ARG uint32_t ctx_off, uint32_t g_begin, uint32_t g_end) {
    const lc_tl_ctx *c = LC_AT(const lc_tl_ctx, ctx_off);
    if (c->abi_version != LC_ABI_VERSION) return LC_E_ABI;
    uint32_t groups = (c->n_scen + LANES - 1) / LANES;
    if (g_begin > g_end || g_end > groups) return LC_E_RANGE;
    if (c->rates_stride < c->n_months) return LC_E_TABLE;
    const double *restrict rates = LC_AT(const double, c->rates);
    const double *restrict df0 = LC_AT(const double, c->df0);
    double *restrict disc = LC_AT(double, c->disc);
    double *restrict dlap = LC_AT(double, c->dlap);
    uint32_t T = c->n_months;
    for (uint32_t g = g_begin; g < g_end; g++) {
        double *restrict dg = disc + (uint64_t)g * T * LANES;
        double *restrict lg = dlap + (uint64_t)g * T * LANES;
        for (uint32_t j = 0; j < LANES; j++) {
            uint32_t s = g * LANES + j;
            if (s >= c->n_scen) {
                for (uint32_t t = 0; t < T; t++) {
                    dg[t * LANES + j] = 0.0;
                    lg[t * LANES + j] = 1.0;
                }
                continue;
            }
            const double *restrict r = rates + (uint64_t)s * c->rates_stride;
            double cum = 0.0;
            for (uint32_t t = 0; t < T; t++) {
                if (t > 0) cum += r[t - 1];
                dg[t * LANES + j] = df0[t] * exp(-cum / 12.0);
                double dl = 1.0 + c->dyn_lapse_beta * r[t];
                dl = dl > c->dyn_lapse_lo ? dl : c->dyn_lapse_lo;
                dl = dl < c->dyn_lapse_hi ? dl : c->dyn_lapse_hi;
                lg[t * LANES + j] = dl;
            }
        }
    }
    return LC_OK;
}

/* Is every attained age of row i inside the mortality table? */
static inline int row_covered(const lc_tl_ctx *c, int32_t age, int32_t term, int32_t dur) {
    if (term < 1 || dur < 0 || dur >= 12 * term) return 0;
    if ((uint32_t)(12 * term - dur) > c->n_months) return 0;
    int64_t first = (int64_t)age + dur / 12 - c->min_age, last = (int64_t)age + term - 1 - c->min_age;
    return first >= 0 && last < (int64_t)c->n_ages;
}

/* premium_eff = premium_pp if > 0, else round(100·((1 + loading)·net))/100 (half to even) with
 * net = Σ_t SA·deaths(t)·DF0(t) / Σ_t pols(t)·DF0(t) for one policy on the base curve, dl ≡ 1. */
LC_EXPORT(tl_premiums)
int32_t tl_premiums(LC_BASE_ARG uint32_t ctx_off, uint32_t r_begin, uint32_t r_end) {
    const lc_tl_ctx *c = LC_AT(const lc_tl_ctx, ctx_off);
    if (c->abi_version != LC_ABI_VERSION) return LC_E_ABI;
    if (r_begin > r_end || r_end > c->n_rows) return LC_E_RANGE;
    const int32_t *age = LC_AT(const int32_t, c->age_at_entry);
    const int32_t *female = LC_AT(const int32_t, c->female);
    const int32_t *term = LC_AT(const int32_t, c->policy_term);
    const int32_t *dur = LC_AT(const int32_t, c->duration_mth);
    const double *sa = LC_AT(const double, c->sum_assured);
    const double *prem_in = LC_AT(const double, c->premium_pp);
    double *prem_out = LC_AT(double, c->premium_eff);
    const double *q_mth = LC_AT(const double, c->q_mth);
    const double *l_base = LC_AT(const double, c->l_base);
    const double *df0 = LC_AT(const double, c->df0);
    uint32_t S = c->n_sel - 1;
    for (uint32_t i = r_begin; i < r_end; i++) {
        if (prem_in[i] > 0.0) {
            prem_out[i] = prem_in[i];
            continue;
        }
        if (!row_covered(c, age[i], term[i], dur[i]) || dur[i] != 0) return LC_E_TABLE;
        const double *qf = q_mth + (female[i] ? c->n_ages * c->n_sel : 0);
        uint32_t M = 12 * (uint32_t)term[i];
        double pols = 1.0, pv_claims = 0.0, pv_pols = 0.0;
        for (uint32_t t = 0; t < M; t++) {
            uint32_t y = t / 12;
            double q = qf[(uint32_t)(age[i] + (int32_t)y - (int32_t)c->min_age) * c->n_sel + min_u32(y, S)];
            double l = l_base[min_u32(y, c->n_lapse - 1)];
            l = l < 1.0 ? l : 1.0;
            double deaths = pols * q;
            double lapses = (pols - deaths) * l;
            pv_claims += sa[i] * deaths * df0[t];
            pv_pols += pols * df0[t];
            pols = pols - deaths - lapses;
        }
        double net = pv_claims / pv_pols;
        prem_out[i] = nearbyint(100.0 * ((1.0 + c->premium_loading) * net)) / 100.0;
    }
    return LC_OK;
}

/* LANES scenarios as NV vectors of VW doubles (GCC/Clang vector extensions: wasm f64x2,
 * native the widest AVX vector). Lane-wise vector arithmetic is IEEE scalar arithmetic, so
 * the lane a scenario sits in does not change its bits. */
#if defined(LC_VW)
#define VW LC_VW
#elif defined(__wasm__) || !defined(__AVX__)
#define VW 2
#else
#define VW 4
#endif
#define NV (LANES / VW)
typedef double vd __attribute__((vector_size(VW * 8)));
typedef double vd_u __attribute__((vector_size(VW * 8), aligned(8))); /* unaligned loads */
typedef int64_t vi __attribute__((vector_size(VW * 8)));
_Static_assert(LANES % VW == 0, "LANES must be a multiple of the vector width");

#if defined(__wasm_simd128__)
#include <wasm_simd128.h>
/* min(x, 1): f64x2.pmin(1, x) = x < 1 ? x : 1 */
static inline vd vmin1(vd x) { return (vd)wasm_f64x2_pmin(wasm_f64x2_splat(1.0), (v128_t)x); }
#else
static inline vd vmin1(vd x) {
    vd one = (vd){0} + 1.0;
    vi lt = (vi)(x < one);
    return (vd)(((vi)x & lt) | ((vi)one & ~lt));
}
#endif

/*
 * One policy under the LANES scenarios of one group, adding its five PVs to acc[5][NV].
 * Per month t and lane: w = pols·DF_s(t); pols ← pols·(1 − q)·(1 − min(1, l_base·dl)) (when
 * l_base·hi ≤ 1 the clamp cannot bind and the factor is computed as p − (p·l_base)·dl).
 * In-year sums W = Σw give PV_premiums/premium_pp and (times q) PV_claims/SA; expenses add
 * maint_infl(t)·w each month.
 */
static void project(vd acc[LC_N_PV][NV], const double *restrict disc, const double *restrict dlap,
                    const double *restrict maint_infl, const double *restrict q_sex, int32_t age_row,
                    uint32_t n_sel, const double *restrict l_base, uint32_t n_lapse, uint32_t dur, uint32_t M,
                    double count, double sa, double prem, double acq, double comm_rate, double hi) {
    vd pols[NV], a0[NV], a1[NV], cl[NV], ex[NV];
    for (uint32_t v = 0; v < NV; v++) {
        pols[v] = (vd){0} + count;
        a0[v] = a1[v] = cl[v] = ex[v] = (vd){0};
    }
    uint32_t S = n_sel - 1;
    for (uint32_t t = 0; t < M;) {
        uint32_t y = (dur + t) / 12;
        uint32_t end = min_u32(M, (y + 1) * 12 - dur);
        double q = q_sex[(uint32_t)(age_row + (int32_t)y) * n_sel + min_u32(y, S)];
        double p = 1.0 - q;
        double lb = l_base[min_u32(y, n_lapse - 1)];
        vd w_year[NV];
        for (uint32_t v = 0; v < NV; v++) w_year[v] = (vd){0};
        if (lb * hi <= 1.0) {
            /* dl ≤ hi, so lb·dl ≤ 1: no clamp; (1 − q)(1 − lb·dl) as p − (p·lb)·dl */
            double plb = p * lb;
            for (; t < end; t++) {
                const double *restrict d = disc + (uint64_t)t * LANES;
                const double *restrict dl = dlap + (uint64_t)t * LANES;
                double e = maint_infl[t];
                for (uint32_t v = 0; v < NV; v++) {
                    vd w = pols[v] * *(const vd_u *)(d + v * VW);
                    w_year[v] += w;
                    ex[v] += e * w;
                    pols[v] *= p - plb * *(const vd_u *)(dl + v * VW);
                }
            }
        } else {
            for (; t < end; t++) {
                const double *restrict d = disc + (uint64_t)t * LANES;
                const double *restrict dl = dlap + (uint64_t)t * LANES;
                double e = maint_infl[t];
                for (uint32_t v = 0; v < NV; v++) {
                    vd w = pols[v] * *(const vd_u *)(d + v * VW);
                    w_year[v] += w;
                    ex[v] += e * w;
                    vd l = vmin1(lb * *(const vd_u *)(dl + v * VW));
                    pols[v] *= p * (1.0 - l);
                }
            }
        }
        for (uint32_t v = 0; v < NV; v++) {
            cl[v] += q * w_year[v];
            if (y == 0)
                a0[v] += w_year[v];
            else
                a1[v] += w_year[v];
        }
    }
    double acq_pv = dur == 0 ? acq * count : 0.0; /* DF_s(0) = 1 */
    for (uint32_t v = 0; v < NV; v++) {
        vd premiums = prem * (a0[v] + a1[v]);
        vd claims = sa * cl[v];
        vd expenses = ex[v] + acq_pv;
        vd commissions = comm_rate * prem * a0[v];
        acc[LC_PV_PREMIUMS][v] += premiums;
        acc[LC_PV_CLAIMS][v] += claims;
        acc[LC_PV_EXPENSES][v] += expenses;
        acc[LC_PV_COMMISSIONS][v] += commissions;
        acc[LC_PV_NET_CF][v] += premiums - claims - expenses - commissions;
    }
}

/* Block partials for blocks [b_begin, b_end): partials[b][k][s] = Σ over the block's rows, in
 * row order from +0.0, of PV_k of that policy under scenario s. Needs tl_prepare,
 * tl_prepare_scenarios (all groups) and tl_premiums (the block's rows) first. */
LC_EXPORT(tl_run_blocks)
int32_t tl_run_blocks(LC_BASE_ARG uint32_t ctx_off, uint32_t b_begin, uint32_t b_end) {
    const lc_tl_ctx *c = LC_AT(const lc_tl_ctx, ctx_off);
    if (c->abi_version != LC_ABI_VERSION) return LC_E_ABI;
    uint32_t blocks = (c->n_rows + LC_BLOCK - 1) / LC_BLOCK;
    if (b_begin > b_end || b_end > blocks) return LC_E_RANGE;
    const int32_t *age = LC_AT(const int32_t, c->age_at_entry);
    const int32_t *female = LC_AT(const int32_t, c->female);
    const int32_t *term = LC_AT(const int32_t, c->policy_term);
    const int32_t *dur = LC_AT(const int32_t, c->duration_mth);
    const double *count = LC_AT(const double, c->policy_count);
    const double *sa = LC_AT(const double, c->sum_assured);
    const double *prem = LC_AT(const double, c->premium_eff);
    const double *q_mth = LC_AT(const double, c->q_mth);
    const double *l_base = LC_AT(const double, c->l_base);
    const double *maint_infl = LC_AT(const double, c->maint_infl);
    const double *disc = LC_AT(const double, c->disc);
    const double *dlap = LC_AT(const double, c->dlap);
    double *partials = LC_AT(double, c->partials);
    uint32_t N = c->n_scen, T = c->n_months, groups = (N + LANES - 1) / LANES;
    for (uint32_t b = b_begin; b < b_end; b++) {
        uint32_t r0 = b * LC_BLOCK, r1 = min_u32(c->n_rows, r0 + LC_BLOCK);
        for (uint32_t i = r0; i < r1; i++)
            if (!row_covered(c, age[i], term[i], dur[i])) return LC_E_TABLE;
        double *out = partials + (uint64_t)b * LC_N_PV * N;
        for (uint32_t g = 0; g < groups; g++) {
            vd acc[LC_N_PV][NV];
            for (uint32_t k = 0; k < LC_N_PV; k++)
                for (uint32_t v = 0; v < NV; v++) acc[k][v] = (vd){0};
            const double *dg = disc + (uint64_t)g * T * LANES;
            const double *lg = dlap + (uint64_t)g * T * LANES;
            for (uint32_t i = r0; i < r1; i++) {
                /* attained age x = age + y is mortality row (age − min_age) + y */
                const double *q_sex = q_mth + (female[i] ? c->n_ages * c->n_sel : 0);
                uint32_t M = 12 * (uint32_t)term[i] - (uint32_t)dur[i];
                project(acc, dg, lg, maint_infl, q_sex, age[i] - (int32_t)c->min_age, c->n_sel, l_base, c->n_lapse, (uint32_t)dur[i], M, count[i], sa[i], prem[i],
                        c->expense_acq, c->commission_rate, c->dyn_lapse_hi);
            }
            uint32_t lanes = min_u32(LANES, N - g * LANES);
            for (uint32_t k = 0; k < LC_N_PV; k++)
                for (uint32_t j = 0; j < lanes; j++) out[(uint64_t)k * N + g * LANES + j] = acc[k][j / VW][j % VW];
        }
    }
    return LC_OK;
}
