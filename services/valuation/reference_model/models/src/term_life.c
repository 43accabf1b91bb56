/*
 * term_life: the stochastic term-life projection of docs/model.md, one policy × LANES scenarios
 * at a time, as a projection of model ABI v2 (docs/model-interface.md). It reads its columns,
 * tables, parameters and the scenario input `rates` through model_interface.h, generated from
 * its declaration (services/valuation/reference_model/term_life.interface.json).
 *
 * Speed comes from doing per-month work only where it varies:
 *  - lc_prepare: tables that depend on the assumptions only (q_mth by sex/age/select
 *    duration, l_base by policy year, DF0(t), maint/12·(1+infl)^(t/12));
 *  - lc_prepare_scenarios: per scenario, once per scenario set, DF_s(t) = DF0(t)·exp(−Σr/12)
 *    and dl(t, s), interleaved LANES scenarios per month so one policy's month reads
 *    consecutive memory;
 *  - lc_run_blocks: per block, the computed premiums of its rows, then per policy a loop over
 *    policy years (q, l_base are constant in a year) and inside it over months with the LANES
 *    scenario states in registers: a few multiply-adds per policy·scenario·month.
 *    With fewer than LC_POLICY_LANES_BELOW scenarios most of those lanes would be empty, so
 *    the block runs in the policy layout instead (`run_block_policy_lanes`): PL policies in
 *    the lanes, each lane doing the scalar arithmetic of `project` for its own policy, under
 *    one scenario after the other.
 * Each (policy, scenario) value is computed by the same operations whatever the thread,
 * chunk, scenario grouping or layout, and a block partial is summed in row order: the results
 * are bit-identical for any split of blocks over threads and for either layout.
 *
 * Workspace (lc_workspace_size bytes; each region starts 16-byte aligned, in this order):
 *   q_mth        f64 [2][n_ages][n_sel]      monthly q, male then female
 *   l_base       f64 [n_lapse]               monthly base lapse by policy year
 *   df0          f64 [n_months]              DF0(t)
 *   maint_infl   f64 [n_months]              maint/12·(1 + infl)^(t/12)
 *   disc         f64 [groups][n_months][LANES]  DF_s(t), scenario s = LANES·group + lane
 *   dlap         f64 [groups][n_months][LANES]  dl(t, s)
 *   premium_eff  f64 [n_rows]                the premium each row is valued with
 *   row_pv       f64 [n_rows][5][n_scen]     policy layout only: each row's PVs (row_values' layout)
 *   prem_deaths  f64 [2·n_ages][Y·12]        computed premiums: deaths(t) of one policy per mortality row
 *   prem_pols    f64 [2·n_ages][Y]           and Σ_{t<12(y+1)} pols(t)·DF0(t), Y = ⌊n_months / 12⌋
 * with groups = ⌈n_scen / LANES⌉; lanes past n_scen hold DF 0, dl 1 and reach no output.
 *
 * A row with duration_mth < 0 is future new business (lifelib's BasicTerm_ME): written at
 * t = −duration_mth, from where it projects as new business with calendar months indexing
 * DF_s(t), dl(t, s) and the inflation factor; its computed premium is the one at issue.
 */
#include <math.h>
#include <stdint.h>

#include "livecalc_model.h"
/* row values in both layouts, block cash flows by month in the scenario layout (the export lc_features) */
#define LC_FEATURES (LC_FEATURE_ROW_VALUES | LC_FEATURE_CASH_FLOWS)
#include "model_interface.h"

#ifndef LC_LANES
#define LC_LANES 16 /* scenarios per group: the interleave of disc/dlap */
#endif
#define LANES LC_LANES
#ifndef LC_POLICY_LANES_BELOW
/* runs with fewer scenarios put policies in the lanes (0: never). Measured (CPU time, 16,384 bench
 * policies, 20 % in force, the scenario layout's months in memory): the policy layout runs ×1.30 the
 * scenario layout at 8 scenarios, ×1.09-1.11 at 10, ×0.99-1.03 at 11, ×0.91 at 12; all in force ×1.18
 * at 8, ×1.04 at 9, ×0.96 at 10, ×0.88 at 11. Its workspace: 40·N bytes a row (row_pv), at most 400 below 11. */
#define LC_POLICY_LANES_BELOW 11
#endif
#define PL_SEGMENTS 62 /* a policy-layout group tabulates ≤ 62 segments (≈ years) of its schedule */

/* Does run c use the policy layout? With fewer than LC_POLICY_LANES_BELOW scenarios, unless its
 * horizons exceed 60 years (the layout's tables) or it asks for cash flows: a lane group's rows are
 * not in row order, and a block's monthly sums are in row order; the scenario layout gives every
 * row the same bits, only slower. */
static inline int policy_layout(const lc_ctx *c) {
    return c->n_scen < LC_POLICY_LANES_BELOW && c->n_months <= 12 * (PL_SEGMENTS - 2) && !c->cash_flows;
}

_Static_assert(LC_N_OUTPUTS == 5 && OUT_PREMIUMS == 0 && OUT_NET_CF == 4, "term_life writes five PVs in this order");
_Static_assert(LC_N_MONTHLY == 5, "term_life writes the cash flows of its five outputs by month");

LC_EXPORT(lc_abi_version) int32_t lc_abi_version(void) { return LC_ABI_VERSION; }

static inline uint32_t min_u32(uint32_t a, uint32_t b) { return a < b ? a : b; }
static inline uint64_t align16(uint64_t n) { return (n + 15) & ~(uint64_t)15; }

/* The shapes of a run's tables and where each workspace region starts (bytes from the workspace). */
typedef struct tl_layout {
    uint32_t n_ages, n_sel, n_lapse, n_curve; /* mortality [n_ages][n_sel], lapse, curve */
    int32_t min_age;                          /* attained age of mortality row 0 */
    uint64_t groups;                          /* ⌈n_scen / LANES⌉ */
    uint64_t q_mth, l_base, df0, maint_infl, disc, dlap, premium_eff, row_pv, prem_deaths, prem_pols, bytes;
} tl_layout;

/* The layout of context c; LC_OK, or the status of a context this model cannot run. */
static int32_t layout(LC_BASE_ARG const lc_ctx *c, tl_layout *w) {
    int32_t rc = interface_check(LC_BASE c);
    if (rc != LC_OK) return rc;
    w->n_ages = table_mortality_size(LC_BASE c, AXIS_MORTALITY_AGE);
    w->n_sel = table_mortality_size(LC_BASE c, AXIS_MORTALITY_SELECT_YEAR);
    w->min_age = table_mortality_origin(LC_BASE c, AXIS_MORTALITY_AGE);
    w->n_lapse = table_lapse_size(LC_BASE c, AXIS_LAPSE_POLICY_YEAR);
    w->n_curve = table_curve_size(LC_BASE c, AXIS_CURVE_YEAR);
    /* select duration, policy year and curve year are indices from 0 */
    if (table_mortality_origin(LC_BASE c, AXIS_MORTALITY_SELECT_YEAR) != 0 ||
        table_lapse_origin(LC_BASE c, AXIS_LAPSE_POLICY_YEAR) != 0 || table_curve_origin(LC_BASE c, AXIS_CURVE_YEAR) != 0)
        return LC_E_TABLE;
    if (w->n_ages == 0 || w->n_sel == 0 || w->n_lapse == 0) return LC_E_TABLE;
    uint64_t T = c->n_months;
    w->groups = ((uint64_t)c->n_scen + LANES - 1) / LANES;
    uint64_t at = 0;
    w->q_mth = at, at += align16(2 * (uint64_t)w->n_ages * w->n_sel * 8);
    w->l_base = at, at += align16((uint64_t)w->n_lapse * 8);
    w->df0 = at, at += align16(T * 8);
    w->maint_infl = at, at += align16(T * 8);
    w->disc = at, at += w->groups * T * LANES * 8;
    w->dlap = at, at += w->groups * T * LANES * 8;
    w->premium_eff = at, at += align16((uint64_t)c->n_rows * 8);
    w->row_pv = at;
    if (policy_layout(c)) at += (uint64_t)c->n_rows * LC_N_OUTPUTS * c->n_scen * 8;
    uint64_t keys = 2 * (uint64_t)w->n_ages, years = T / 12;
    w->prem_deaths = at, at += align16(keys * 12 * years * 8);
    w->prem_pols = at, at += align16(keys * years * 8);
    w->bytes = at;
    return LC_OK;
}

/* layout() for a context whose workspace is in place: LC_E_RANGE when it is too small. */
static int32_t view(LC_BASE_ARG const lc_ctx *c, tl_layout *w) {
    int32_t rc = layout(LC_BASE c, w);
    if (rc != LC_OK) return rc;
    return c->workspace_bytes >= w->bytes ? LC_OK : LC_E_RANGE;
}

static inline double *region(LC_BASE_ARG const lc_ctx *c, uint64_t at) { return (double *)(lc_workspace(LC_BASE c) + at); }

/* Bytes of workspace a run needs (negative: a status). */
LC_EXPORT(lc_workspace_size)
int32_t lc_workspace_size(LC_BASE_ARG uint32_t ctx_off) {
    tl_layout w;
    int32_t rc = layout(LC_BASE lc_context(LC_BASE ctx_off), &w);
    if (rc != LC_OK) return -rc;
    return w.bytes <= INT32_MAX ? (int32_t)w.bytes : -LC_E_RANGE;
}

static void prem_schedules(LC_BASE_ARG const lc_ctx *c, const tl_layout *w);

/* q_mth[f][a][d] = 1 − (1 − min(1, q[a][d]·sexfactor))^(1/12); l_base[y] = 1 − (1 − lapse[y])^(1/12);
 * DF0(t) = (1 + ((1 + z[⌊t/12⌋])^(1/12) − 1))^(−t); maint_infl(t) = maint/12·(1 + infl)^(t/12). */
LC_EXPORT(lc_prepare)
int32_t lc_prepare(LC_BASE_ARG uint32_t ctx_off) {
    const lc_ctx *c = lc_context(LC_BASE ctx_off);
    tl_layout w;
    int32_t rc = view(LC_BASE c, &w);
    if (rc != LC_OK) return rc;
    if ((c->n_months + 11) / 12 > w.n_curve) return LC_E_TABLE;
    const double *restrict mort = table_mortality(LC_BASE c);
    double *restrict q_mth = region(LC_BASE c, w.q_mth);
    double female_multiplier = param_female_multiplier(LC_BASE c);
    uint32_t cells = w.n_ages * w.n_sel;
    for (uint32_t f = 0; f < 2; f++) {
        double factor = f ? female_multiplier : 1.0;
        for (uint32_t i = 0; i < cells; i++) {
            double q = mort[i] * factor;
            q = q < 1.0 ? q : 1.0;
            q_mth[f * cells + i] = 1.0 - pow(1.0 - q, 1.0 / 12.0);
        }
    }
    const double *restrict lapse = table_lapse(LC_BASE c);
    double *restrict l_base = region(LC_BASE c, w.l_base);
    for (uint32_t y = 0; y < w.n_lapse; y++) l_base[y] = 1.0 - pow(1.0 - lapse[y], 1.0 / 12.0);
    const double *restrict curve = table_curve(LC_BASE c);
    double *restrict df0 = region(LC_BASE c, w.df0);
    double *restrict maint_infl = region(LC_BASE c, w.maint_infl);
    double expense_maint = param_expense_maint(LC_BASE c), inflation = param_inflation(LC_BASE c);
    for (uint32_t t = 0; t < c->n_months; t++) {
        double disc_rate_mth = pow(1.0 + curve[t / 12], 1.0 / 12.0) - 1.0;
        df0[t] = pow(1.0 + disc_rate_mth, -(double)t);
        maint_infl[t] = expense_maint / 12.0 * pow(1.0 + inflation, (double)t / 12.0);
    }
    prem_schedules(LC_BASE c, &w);
    return LC_OK;
}

/* For scenarios [s_begin, s_end), each in its lane of group s / LANES (threads may split a
 * group: they write disjoint doubles): disc = DF0(t)·exp(−Σ_{m<t} r_s(m)/12) (sum in month
 * order), dlap = clamp(1 + β·r_s(t), lo, hi). Whoever prepares the last scenario also fills
 * the lanes past it (disc 0, dlap 1): they reach no output, but stay finite. Needs lc_prepare. */
LC_EXPORT(lc_prepare_scenarios)
int32_t lc_prepare_scenarios(LC_BASE_ARG uint32_t ctx_off, uint32_t s_begin, uint32_t s_end) {
    const lc_ctx *c = lc_context(LC_BASE ctx_off);
    tl_layout w;
    int32_t rc = view(LC_BASE c, &w);
    if (rc != LC_OK) return rc;
    if (s_begin > s_end || s_end > c->n_scen) return LC_E_RANGE;
    const double *restrict rates = scen_rates(LC_BASE c);
    uint32_t stride = scen_rates_stride(LC_BASE c);
    const double *restrict df0 = region(LC_BASE c, w.df0);
    double *restrict disc = region(LC_BASE c, w.disc);
    double *restrict dlap = region(LC_BASE c, w.dlap);
    double beta = param_dyn_lapse_beta(LC_BASE c), lo = param_dyn_lapse_lo(LC_BASE c), hi = param_dyn_lapse_hi(LC_BASE c);
    uint32_t T = c->n_months;
    for (uint32_t s = s_begin; s < s_end; s++) {
        uint32_t g = s / LANES, j = s % LANES;
        double *restrict dg = disc + (uint64_t)g * T * LANES;
        double *restrict lg = dlap + (uint64_t)g * T * LANES;
        const double *restrict r = rates + (uint64_t)s * stride;
        double cum = 0.0;
        for (uint32_t t = 0; t < T; t++) {
            if (t > 0) cum += r[t - 1];
            dg[t * LANES + j] = df0[t] * exp(-cum / 12.0);
            double dl = 1.0 + beta * r[t];
            dl = dl > lo ? dl : lo;
            dl = dl < hi ? dl : hi;
            lg[t * LANES + j] = dl;
        }
        if (s + 1 == c->n_scen)
            for (uint32_t pad = j + 1; pad < LANES; pad++)
                for (uint32_t t = 0; t < T; t++) {
                    dg[t * LANES + pad] = 0.0;
                    lg[t * LANES + pad] = 1.0;
                }
    }
    return LC_OK;
}

/* Can the model value a row? LC_OK; LC_E_INPUT for a sex code or a term outside the model, or
 * duration_mth > 12·policy_term; LC_E_RANGE when its horizon M = 12·term − dur exceeds
 * n_months; LC_E_TABLE when an attained age it projects is outside the mortality table.
 * duration_mth < 0 is future new business (issued at t = −duration_mth, as lifelib's
 * BasicTerm_ME); duration_mth = 12·policy_term matures at t = 0 (no month projected). */
static inline int32_t row_check(const tl_layout *w, uint32_t n_months, int32_t age, int32_t sex, int32_t term,
                                int32_t dur) {
    if (sex != SEX_M && sex != SEX_F) return LC_E_INPUT;
    if (term < 1 || (int64_t)dur > 12 * (int64_t)term) return LC_E_INPUT;
    if (12 * (int64_t)term - dur > (int64_t)n_months) return LC_E_RANGE;
    if (12 * (int64_t)term == dur) return LC_OK;
    int64_t first = (int64_t)age + (dur > 0 ? dur : 0) / 12 - w->min_age, last = (int64_t)age + term - 1 - w->min_age;
    return first >= 0 && last < (int64_t)w->n_ages ? LC_OK : LC_E_TABLE;
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

/* Where one policy's detail goes, when the run asks (docs/model-interface.md "Row values and cash
 * flows"): its five values per lane (rv: row_values at the row's first output and the group's first
 * scenario, stride N per output; NULL when not asked) and its monthly cash flows (cf: the block's
 * cash_flows at the group's first scenario and the row's issue month, stride N·months per monthly
 * output and months per scenario; NULL when not asked). Lanes at and past `lanes` hold no scenario. */
typedef struct tl_detail {
    double *rv, *cf;
    uint32_t N, lanes, months;
} tl_detail;

/* Month t's cash flows of lanes v·VW … of one policy (pols: in force at the start of the month,
 * before its decrements), added to the block's cash flows: premiums = prem·pols, claims =
 * sa·(pols·q), expenses = maint_infl(t)·pols (+ acq·count at issue), commissions = comm_rate·premiums
 * in policy year 0, net_cf = premiums − claims − expenses − commissions. */
static inline void add_cash_flows(const tl_detail *d, uint32_t v, vd pols, uint32_t t, double q, double e,
                                  double prem, double sa, double acq_t, double comm_t) {
    uint64_t out = (uint64_t)d->N * d->months;
    for (uint32_t l = 0; l < VW; l++) {
        uint32_t j = v * VW + l;
        if (j >= d->lanes) return;
        double p = pols[l];
        double premiums = prem * p, claims = sa * (p * q), expenses = e * p + acq_t, commissions = comm_t * premiums;
        double *o = d->cf + (uint64_t)j * d->months + t;
        o[MONTHLY_PREMIUMS * out] += premiums;
        o[MONTHLY_CLAIMS * out] += claims;
        o[MONTHLY_EXPENSES * out] += expenses;
        o[MONTHLY_COMMISSIONS * out] += commissions;
        o[MONTHLY_NET_CF * out] += premiums - claims - expenses - commissions;
    }
}

/*
 * The month loop of `project` without cash flows, in WASM: a policy year's months with the month
 * sums (pols, w_year, ex per vector) kept in memory, st[0], st[1], st[2], and a whole year of 12
 * months as straight-line code. Each month's operations are `project`'s, in its order, lane by lane.
 * Why (Cranelift, measured, BENCHMARKS.md): a loop back edge carries wasmtime's epoch check, around
 * whose call Cranelift spills every live vector, and it places a loop body's loads first and its
 * arithmetic last, so 16 loaded vectors wait in registers beside 24 sums and spill too. In memory,
 * the sums are a load and a store each (the stores anchor each vector's arithmetic next to its
 * loads), and a year has no back edge: ×1.10–1.16 at 256 scenarios. An empty asm makes the month
 * and the sums' address opaque: the sums are reloaded each month (not kept in registers by clang),
 * and a month's 16 loads take constant offsets from one address. Natively (GCC and clang keep
 * the sums in registers) the plain loop stays.
 */
#ifndef LC_MONTHS_IN_MEMORY
#if defined(__wasm__)
#define LC_MONTHS_IN_MEMORY 1
#else
#define LC_MONTHS_IN_MEMORY 0
#endif
#endif
#if LC_MONTHS_IN_MEMORY
#define DISC_RESTRICT /* disc and dlap may alias st: clang keeps every load and store where the C has it */
static inline __attribute__((always_inline)) void month_in_memory(vd (*st)[NV], const double *disc, const double *dlap,
                                                                  const double *restrict maint_infl, uint32_t t,
                                                                  double p, double plb, double lb, int clamp) {
    uint32_t at = t;
    __asm__("" : "+r"(at), "+r"(st));
    const double *d = disc + (uint64_t)at * LANES, *dl = dlap + (uint64_t)at * LANES;
    double e = maint_infl[t];
    for (uint32_t v = 0; v < NV; v++) {
        vd w = st[0][v] * *(const vd_u *)(d + v * VW);
        st[1][v] += w;
        st[2][v] += e * w;
        if (!clamp)
            st[0][v] *= p - plb * *(const vd_u *)(dl + v * VW);
        else
            st[0][v] *= p * (1.0 - vmin1(lb * *(const vd_u *)(dl + v * VW)));
    }
}
/* Months [t0, t1) of one policy year (12 months or fewer) on st: w_year from +0.0 (as `project`). */
static inline __attribute__((always_inline)) void year_in_memory(vd (*st)[NV], const double *disc, const double *dlap,
                                                                 const double *restrict maint_infl, uint32_t t0,
                                                                 uint32_t t1, double p, double plb, double lb,
                                                                 int clamp) {
    for (uint32_t v = 0; v < NV; v++) st[1][v] = (vd){0};
    if (t1 - t0 == 12) {
        _Pragma("clang loop unroll(full)") for (uint32_t k = 0; k < 12; k++)
            month_in_memory(st, disc, dlap, maint_infl, t0 + k, p, plb, lb, clamp);
    } else {
        _Pragma("clang loop unroll(disable)") for (uint32_t t = t0; t < t1; t++)
            month_in_memory(st, disc, dlap, maint_infl, t, p, plb, lb, clamp);
    }
}
#else
#define DISC_RESTRICT restrict
#endif

/*
 * One policy under the LANES scenarios of one group, adding its five PVs to acc[5][NV] (and
 * writing them to its row values, and its cash flows to the block's, when the run asks: `cash`
 * is a constant in each caller, so the month loops of a run without cash flows carry none of it).
 * Per month t and lane: w = pols·DF_s(t); pols ← pols·(1 − q)·(1 − min(1, l_base·dl)) (when
 * l_base·hi ≤ 1 the clamp cannot bind and the factor is computed as p − (p·l_base)·dl).
 * In-year sums W = Σw give PV_premiums/premium_pp and (times q) PV_claims/SA; expenses add
 * maint_infl(t)·w each month. Month t here is month 0 of disc, dlap and maint_infl: the caller
 * passes them from the issue month for future new business. New business (dur = 0) pays the
 * acquisition expense at t = 0, discounted by disc at t = 0 (exactly 1 at the valuation date).
 */
static inline __attribute__((always_inline)) void project(
    vd acc[LC_N_OUTPUTS][NV], const double *DISC_RESTRICT disc, const double *DISC_RESTRICT dlap,
    const double *restrict maint_infl, const double *restrict q_sex, int32_t age_row, uint32_t n_sel,
    const double *restrict l_base, uint32_t n_lapse, uint32_t dur, uint32_t M, double count, double sa, double prem,
    double acq, double comm_rate, double hi, const tl_detail *detail, int cash) {
    vd pols[NV], a0[NV], a1[NV], cl[NV], ex[NV];
    for (uint32_t v = 0; v < NV; v++) {
        pols[v] = (vd){0} + count;
        a0[v] = a1[v] = cl[v] = ex[v] = (vd){0};
    }
    double acq_cf = dur == 0 ? acq * count : 0.0;
    uint32_t S = n_sel - 1;
#if LC_MONTHS_IN_MEMORY
    vd st[3][NV]; /* pols, w_year, ex: year_in_memory */
    if (!cash)
        for (uint32_t v = 0; v < NV; v++) st[0][v] = pols[v], st[2][v] = ex[v];
#endif
    for (uint32_t t = 0; t < M;) {
        uint32_t y = (dur + t) / 12;
        uint32_t end = min_u32(M, (y + 1) * 12 - dur);
        double q = q_sex[(uint32_t)(age_row + (int32_t)y) * n_sel + min_u32(y, S)];
        double p = 1.0 - q;
        double lb = l_base[min_u32(y, n_lapse - 1)];
        double comm_y = y == 0 ? comm_rate : 0.0;
        vd w_year[NV];
        for (uint32_t v = 0; v < NV; v++) w_year[v] = (vd){0};
#if LC_MONTHS_IN_MEMORY
        if (!cash) {
            if (lb * hi <= 1.0)
                year_in_memory(st, disc, dlap, maint_infl, t, end, p, p * lb, lb, 0);
            else
                year_in_memory(st, disc, dlap, maint_infl, t, end, p, p * lb, lb, 1);
            for (uint32_t v = 0; v < NV; v++) w_year[v] = st[1][v];
            t = end;
        } else
#endif
        if (lb * hi <= 1.0) {
            /* dl ≤ hi, so lb·dl ≤ 1: no clamp; (1 − q)(1 − lb·dl) as p − (p·lb)·dl */
            double plb = p * lb;
            for (; t < end; t++) {
                const double *restrict d = disc + (uint64_t)t * LANES;
                const double *restrict dl = dlap + (uint64_t)t * LANES;
                double e = maint_infl[t];
                for (uint32_t v = 0; v < NV; v++) {
                    if (cash) add_cash_flows(detail, v, pols[v], t, q, e, prem, sa, t == 0 ? acq_cf : 0.0, comm_y);
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
                    if (cash) add_cash_flows(detail, v, pols[v], t, q, e, prem, sa, t == 0 ? acq_cf : 0.0, comm_y);
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
#if LC_MONTHS_IN_MEMORY
    if (!cash)
        for (uint32_t v = 0; v < NV; v++) ex[v] = st[2][v];
#endif
    vd pv[LC_N_OUTPUTS][NV];
    for (uint32_t v = 0; v < NV; v++) {
        vd premiums = prem * (a0[v] + a1[v]);
        vd claims = sa * cl[v];
        vd expenses = ex[v] + acq_cf * *(const vd_u *)(disc + v * VW);
        vd commissions = comm_rate * prem * a0[v];
        pv[OUT_PREMIUMS][v] = premiums;
        pv[OUT_CLAIMS][v] = claims;
        pv[OUT_EXPENSES][v] = expenses;
        pv[OUT_COMMISSIONS][v] = commissions;
        pv[OUT_NET_CF][v] = premiums - claims - expenses - commissions;
    }
    for (uint32_t k = 0; k < LC_N_OUTPUTS; k++)
        for (uint32_t v = 0; v < NV; v++) acc[k][v] += pv[k][v];
    if (detail->rv)
        for (uint32_t k = 0; k < LC_N_OUTPUTS; k++)
            for (uint32_t j = 0; j < detail->lanes; j++) detail->rv[(uint64_t)k * detail->N + j] = pv[k][j / VW][j % VW];
}

/* `project` without cash flows (every run that does not ask for them) and with them. */
#define PROJECT_ARGS                                                                                                   \
    vd acc[LC_N_OUTPUTS][NV], const double *DISC_RESTRICT disc, const double *DISC_RESTRICT dlap,                      \
        const double *restrict maint_infl, const double *restrict q_sex, int32_t age_row, uint32_t n_sel,              \
        const double *restrict l_base, uint32_t n_lapse, uint32_t dur, uint32_t M, double count, double sa,            \
        double prem, double acq, double comm_rate, double hi, const tl_detail *detail
#define PROJECT_CALL acc, disc, dlap, maint_infl, q_sex, age_row, n_sel, l_base, n_lapse, dur, M, count, sa, prem, acq, comm_rate, hi, detail
static __attribute__((noinline)) void project_values(PROJECT_ARGS) { project(PROJECT_CALL, 0); }
static __attribute__((noinline)) void project_cash_flows(PROJECT_ARGS) { project(PROJECT_CALL, 1); }

/*
 * The policy layout, for runs with fewer scenarios than LC_POLICY_LANES_BELOW: PL policies of a
 * block in the lanes, under one scenario after another. Each lane repeats `project` for its own
 * policy, operation for operation: the same per-year q, l_base and clamp test (the clamped or
 * unclamped factor chosen per lane), the same month sums, the same five PVs from them. Only the schedule
 * differs: lanes step through calendar months τ of the scenario tables (τ = issue + t), so
 * disc, dlap and maint_infl are one broadcast per month, even for future new business.
 *
 * A policy's years turn where (dur + τ − issue) ≡ 0 (mod 12): at the calendar phase
 * (issue − dur) mod 12, and it matures (end = issue + M) on one. The block's rows are sorted
 * by (phase, issue, end) and packed PL at a time within a phase, so a group's lanes share their
 * year ends and mostly their start and end: a lane starts at the group's first month or on a
 * year end, and its month sums are kept (in row_pv) at its own end; outside [issue, end) it
 * is idle (q = l_base = 0) and reaches no output. A group's schedule (segments, each lane's q
 * and l_base in each) is tabulated once and run under each scenario in turn. Then, in row order,
 * each row's five PVs are made from its kept sums as `project` ends, and the block partial of
 * scenario s is their sum over the block's rows from +0.0, as `project` adds to acc.
 */
#ifndef LC_POLICY_VECTORS
#define LC_POLICY_VECTORS 4 /* vectors of VW policies per group */
#endif
#define PV LC_POLICY_VECTORS
#define PL (PV * VW)
_Static_assert(PL <= 32, "a group's lanes are bits of a uint32_t");
_Static_assert(LC_BLOCK <= 1024, "a sort key holds a block's row in 10 bits");

/* A run's inputs, as the policy layout reads them. */
typedef struct pl_inputs {
    const int32_t *age, *sex, *term, *dur;
    const double *count, *sa, *prem, *q_mth, *l_base, *maint_infl, *disc, *dlap;
    double *row_pv;
    double *rv; /* row_values, NULL when the run does not ask */
    uint32_t n_ages, n_sel, n_lapse, T, N;
    int32_t min_age;
    double acq, comm_rate, hi;
} pl_inputs;

/* One group of PL lanes: the rows it holds and their schedules (calendar months). */
typedef struct pl_lanes {
    uint32_t row[PL], start[PL], end[PL], dur[PL];
} pl_lanes;

#define LANE(v, j) ((v)[(j) / VW][(j) % VW])

/* The month sums of one group (a lane's as `project`'s, in the order `project` adds to them). */
typedef struct pl_sums {
    vd pols[PV], wy[PV], ex[PV], a0[PV], a1[PV], cl[PV];
} pl_sums;

/* Months [t0, t1) of a group, with the factor of `project` per lane: unclamped in every lane,
 * or (`mixed`) both factors computed and each lane's own selected by `clamp`. */
static inline void pl_months(pl_sums *m, const vd *p, const vd *plb, const vd *lb, const vi *clamp,
                             const double *restrict disc_s, const double *restrict dlap_s,
                             const double *restrict maint_infl, uint32_t t0, uint32_t t1, int mixed) {
    vd pols[PV], wy[PV], ex[PV];
    for (uint32_t v = 0; v < PV; v++) pols[v] = m->pols[v], wy[v] = (vd){0}, ex[v] = m->ex[v];
#define PL_MONTH(t)                                                                                                    \
    do {                                                                                                               \
        double d = disc_s[(uint64_t)(t) * LANES], dl = dlap_s[(uint64_t)(t) * LANES], e = maint_infl[t];             \
        for (uint32_t v = 0; v < PV; v++) {                                                                            \
            vd w = pols[v] * d;                                                                                        \
            wy[v] += w;                                                                                                \
            ex[v] += e * w;                                                                                            \
            if (!mixed) {                                                                                              \
                pols[v] *= p[v] - plb[v] * dl;                                                                         \
            } else {                                                                                                   \
                vi plain = (vi)(p[v] - plb[v] * dl), clamped = (vi)(p[v] * (1.0 - vmin1(lb[v] * dl)));                \
                pols[v] *= (vd)((clamped & clamp[v]) | (plain & ~clamp[v]));                                           \
            }                                                                                                          \
        }                                                                                                              \
    } while (0)
    /* three months a pass: a loop's back edge carries wasmtime's epoch check, around whose call
     * Cranelift spills every live vector; unrolled, the month sums stay in registers for a pass
     * (measured: 3 months a pass ×1.11 of 1, 2 ×1.07, 4 and 6 ×1.02, a whole year ×1.0) */
    uint32_t t = t0;
    for (; t + 3 <= t1; t += 3) {
        _Pragma("clang loop unroll(full)") for (uint32_t k = 0; k < 3; k++) PL_MONTH(t + k);
    }
    for (; t < t1; t++) PL_MONTH(t);
#undef PL_MONTH
    for (uint32_t v = 0; v < PV; v++) m->pols[v] = pols[v], m->wy[v] = wy[v], m->ex[v] = ex[v];
}

/* Lane j's month sums at its end (a0, a1, cl, ex, in its row's first four row_pv slots of scenario
 * s): run_block_policy_lanes makes its five PVs of them once the block's groups have run. */
static inline void pl_keep(const pl_inputs *in, const pl_lanes *L, const pl_sums *m, uint32_t j, uint32_t s) {
    double *kept = in->row_pv + (uint64_t)L->row[j] * LC_N_OUTPUTS * in->N + s;
    kept[0] = LANE(m->a0, j), kept[in->N] = LANE(m->a1, j), kept[2 * (uint64_t)in->N] = LANE(m->cl, j);
    kept[3 * (uint64_t)in->N] = LANE(m->ex, j);
}

/* The month of a group's segment k: segment 0 starts at the group's first month, segment 1 at
 * the first year end after it (`turn`), each later one 12 months on. */
static inline uint32_t pl_month(uint32_t k, uint32_t first, uint32_t turn) { return k == 0 ? first : turn + 12 * (k - 1); }
static inline uint32_t pl_segment(uint32_t tau, uint32_t first, uint32_t turn) { return tau == first ? 0 : (tau - turn) / 12 + 1; }

/* A group's schedule, the same under every scenario: its segments and, per segment, each lane's
 * q and l_base and which lanes start, end or are in their first policy year there. */
typedef struct pl_schedule {
    vd qt[PL_SEGMENTS][PV], lt[PL_SEGMENTS][PV];
    uint32_t starts[PL_SEGMENTS], ends[PL_SEGMENTS], firsts[PL_SEGMENTS], clamps[PL_SEGMENTS];
    uint32_t first, turn, last, segments;
} pl_schedule;

static void pl_tabulate(const pl_inputs *in, const pl_lanes *L, uint32_t n, uint32_t phase, pl_schedule *g) {
    uint32_t first = L->start[0], last = 0, S = in->n_sel - 1;
    for (uint32_t j = 0; j < n; j++) last = L->end[j] > last ? L->end[j] : last;
    uint32_t to_phase = (phase + 12 - first % 12) % 12, turn = first + (to_phase ? to_phase : 12);
    uint32_t segments = pl_segment(last, first, turn);
    g->first = first, g->turn = turn, g->last = last, g->segments = segments;
    for (uint32_t k = 0; k < segments; k++) {
        g->starts[k] = g->ends[k] = g->firsts[k] = g->clamps[k] = 0;
        for (uint32_t v = 0; v < PV; v++) g->qt[k][v] = g->lt[k][v] = (vd){0};
    }
    for (uint32_t j = 0; j < n; j++) {
        uint32_t i = L->row[j], k0 = pl_segment(L->start[j], first, turn), k1 = pl_segment(L->end[j], first, turn);
        const double *q_row = in->q_mth + (in->sex[i] == SEX_F ? in->n_ages * in->n_sel : 0) +
                              (uint32_t)(in->age[i] - in->min_age) * in->n_sel;
        uint32_t y = L->dur[j] / 12;
        g->starts[k0] |= 1u << j, g->ends[k1 - 1] |= 1u << j, g->firsts[k0] |= y == 0 ? 1u << j : 0;
        for (uint32_t k = k0; k < k1; k++, y++) {
            double lb = in->l_base[min_u32(y, in->n_lapse - 1)];
            LANE(g->qt[k], j) = q_row[y * in->n_sel + min_u32(y, S)];
            LANE(g->lt[k], j) = lb;
            g->clamps[k] |= lb * in->hi <= 1.0 ? 0 : 1;
        }
    }
}

/* The group under scenario s, segment by segment, as pl_group describes (its own function: inlined
 * in pl_group's scenario loop it ran 2 % slower at 1 scenario, 4 % at 7). */
static __attribute__((noinline)) void pl_run(const pl_inputs *in, const pl_lanes *L, const pl_schedule *g, uint32_t s) {
    uint64_t lane0 = (uint64_t)(s / LANES) * in->T * LANES + s % LANES;
    const double *disc_s = in->disc + lane0, *dlap_s = in->dlap + lane0;
    uint32_t first = g->first, turn = g->turn, last = g->last;
    pl_sums m;
    for (uint32_t v = 0; v < PV; v++) m.pols[v] = m.ex[v] = m.a0[v] = m.a1[v] = m.cl[v] = (vd){0};
    for (uint32_t k = 0; k < g->segments; k++) {
        for (uint32_t bits = g->starts[k]; bits; bits &= bits - 1) { /* as project: (vd){0} + count, sums +0.0 */
            uint32_t j = (uint32_t)__builtin_ctz(bits);
            LANE(m.pols, j) = 0.0 + in->count[L->row[j]];
            LANE(m.ex, j) = LANE(m.a0, j) = LANE(m.a1, j) = LANE(m.cl, j) = 0.0;
        }
        vd p[PV], plb[PV];
        vi clamp[PV];
        for (uint32_t v = 0; v < PV; v++) {
            p[v] = 1.0 - g->qt[k][v], plb[v] = p[v] * g->lt[k][v];
            clamp[v] = ~(vi)(g->lt[k][v] * in->hi <= 1.0);
        }
        uint32_t t0 = pl_month(k, first, turn), t1 = min_u32(last, pl_month(k + 1, first, turn));
        if (!g->clamps[k]) pl_months(&m, p, plb, g->lt[k], clamp, disc_s, dlap_s, in->maint_infl, t0, t1, 0);
        else pl_months(&m, p, plb, g->lt[k], clamp, disc_s, dlap_s, in->maint_infl, t0, t1, 1);
        for (uint32_t v = 0; v < PV; v++) m.cl[v] += g->qt[k][v] * m.wy[v];
        if (g->firsts[k]) {
            for (uint32_t v = 0; v < PV; v++) {
                vi fm;
                for (uint32_t l = 0; l < VW; l++) fm[l] = -(int64_t)(g->firsts[k] >> (v * VW + l) & 1);
                m.a0[v] += (vd)((vi)m.wy[v] & fm);
                m.a1[v] += (vd)((vi)m.wy[v] & ~fm);
            }
        } else {
            for (uint32_t v = 0; v < PV; v++) m.a1[v] += m.wy[v];
        }
        for (uint32_t bits = g->ends[k]; bits; bits &= bits - 1)
            pl_keep(in, L, &m, (uint32_t)__builtin_ctz(bits), s);
    }
}

/* The group's first `n` lanes (sorted by start) under every scenario, segment by segment (a
 * segment: months in which no lane's policy year turns). Each lane's q and l_base per segment
 * are tabulated first, once for all scenarios (0 outside its [start, end): it runs on, reaching
 * no output, so the vector arithmetic needs no mask); a lane is reset at its start and its sums
 * are kept at its end. Its year-end sums: a0 (first policy year) or a1 gets w_year; the other gets nothing
 * or +0.0, which leaves it as it was (a sum from +0.0 is never −0.0). */
static void pl_group(const pl_inputs *in, const pl_lanes *L, uint32_t n, uint32_t phase) {
    pl_schedule g; /* 8 KiB of a worker's 64 KiB stack */
    pl_tabulate(in, L, n, phase, &g);
    for (uint32_t s = 0; s < in->N; s++) pl_run(in, L, &g, s); /* one schedule for every scenario */
}

/* Sort keys (bits 10..55) in place, stably, by LSD radix on bytes; tmp is scratch. */
static void sort_keys(uint64_t *keys, uint64_t *tmp, uint32_t n) {
    uint64_t any = 0, all = ~(uint64_t)0;
    for (uint32_t i = 0; i < n; i++) any |= keys[i], all &= keys[i];
    for (uint32_t shift = 10; shift < 56; shift += 8) {
        if (!((any ^ all) >> shift & 255)) continue; /* one digit: nothing to move */
        uint32_t hist[256] = {0};
        for (uint32_t i = 0; i < n; i++) hist[(keys[i] >> shift) & 255]++;
        uint32_t at = 0;
        for (uint32_t b = 0; b < 256; b++) {
            uint32_t h = hist[b];
            hist[b] = at, at += h;
        }
        for (uint32_t i = 0; i < n; i++) tmp[hist[(keys[i] >> shift) & 255]++] = keys[i];
        for (uint32_t i = 0; i < n; i++) keys[i] = tmp[i];
    }
}

/* Block partials of rows [r0, r1) (checked, premiums computed) in the policy layout. */
static void run_block_policy_lanes(const pl_inputs *in, uint32_t r0, uint32_t r1, double *out) {
    uint64_t keys[LC_BLOCK], tmp[LC_BLOCK];
    uint32_t n = r1 - r0;
    for (uint32_t k = 0; k < n; k++) {
        int32_t dur = in->dur[r0 + k];
        uint32_t issue = dur < 0 ? (uint32_t)-dur : 0, d = dur < 0 ? 0 : (uint32_t)dur;
        uint32_t end = issue + 12 * (uint32_t)in->term[r0 + k] - d, phase = (issue % 12 + 12 - d % 12) % 12;
        keys[k] = (uint64_t)phase << 52 | (uint64_t)issue << 31 | (uint64_t)end << 10 | k; /* 4, 21, 21, 10 bits */
    }
    sort_keys(keys, tmp, n);
    pl_lanes L;
    pl_sums zero; /* the sums of a row that matures at t = 0 */
    for (uint32_t v = 0; v < PV; v++)
        zero.pols[v] = zero.wy[v] = zero.ex[v] = zero.a0[v] = zero.a1[v] = zero.cl[v] = (vd){0};
    for (uint32_t k = 0; k < n;) {
        uint32_t phase = (uint32_t)(keys[k] >> 52), filled = 0;
        for (; k < n && filled < PL && (uint32_t)(keys[k] >> 52) == phase; k++) {
            uint32_t i = r0 + (uint32_t)(keys[k] & 1023), dur = in->dur[i] < 0 ? 0 : (uint32_t)in->dur[i];
            uint32_t start = (uint32_t)(keys[k] >> 31) & 0x1FFFFF, end = (uint32_t)(keys[k] >> 10) & 0x1FFFFF;
            L.row[filled] = i, L.dur[filled] = dur, L.start[filled] = start, L.end[filled] = end;
            if (start == end) { /* matured at t = 0: project's sums of no month */
                for (uint32_t s = 0; s < in->N; s++) pl_keep(in, &L, &zero, filled, s);
            } else {
                filled++;
            }
        }
        for (uint32_t j = filled; j < PL; j++) L.start[j] = L.end[j] = UINT32_MAX;
        if (filled) pl_group(in, &L, filled, phase);
    }
    uint64_t N = in->N;
    double *pv = in->row_pv + (uint64_t)r0 * LC_N_OUTPUTS * N;
    for (uint32_t s = 0; s < N; s++) {
        /* each row's five PVs from its kept sums, as `project` ends (new business: the acquisition
         * expense discounted at its issue month), and the five block sums, each in row order */
        const double *disc_s = in->disc + (uint64_t)(s / LANES) * in->T * LANES + s % LANES;
        double acc[LC_N_OUTPUTS] = {0.0, 0.0, 0.0, 0.0, 0.0};
        for (uint32_t r = 0; r < n; r++) {
            uint32_t i = r0 + r;
            int32_t dur = in->dur[i];
            double *x = pv + (uint64_t)r * LC_N_OUTPUTS * N + s;
            double a0 = x[0], a1 = x[N], cl = x[2 * N], ex = x[3 * N], prem = in->prem[i];
            double acq_cf = dur <= 0 ? in->acq * in->count[i] : 0.0;
            double premiums = prem * (a0 + a1);
            double claims = in->sa[i] * cl;
            double expenses = ex + acq_cf * disc_s[(uint64_t)(dur < 0 ? -dur : 0) * LANES];
            double commissions = in->comm_rate * prem * a0;
            double net = premiums - claims - expenses - commissions;
            x[OUT_PREMIUMS * N] = premiums, x[OUT_CLAIMS * N] = claims, x[OUT_EXPENSES * N] = expenses;
            x[OUT_COMMISSIONS * N] = commissions, x[OUT_NET_CF * N] = net;
            acc[OUT_PREMIUMS] += premiums, acc[OUT_CLAIMS] += claims, acc[OUT_EXPENSES] += expenses;
            acc[OUT_COMMISSIONS] += commissions, acc[OUT_NET_CF] += net;
        }
        for (uint32_t k = 0; k < LC_N_OUTPUTS; k++) out[k * N + s] = acc[k];
    }
    if (in->rv) /* row values: the same layout */
        for (uint64_t x = 0; x < (uint64_t)n * LC_N_OUTPUTS * N; x++) in->rv[(uint64_t)r0 * LC_N_OUTPUTS * N + x] = pv[x];
}


/* The schedules computed premiums value rows on (see `premiums`): per mortality row k = f·n_ages + a
 * (sex f, attained age row a at issue), one policy from issue on the base curve with dl ≡ 1:
 * deaths(t) = pols·q, lapses = (pols − deaths)·min(1, l_base), pols ← pols − deaths − lapses, and
 * Σ pols·DF0 at each year end; q = 0 past the table (no row projects there: row_check). PL
 * mortality rows to a group, each lane the scalar arithmetic of one policy. Needs q_mth, l_base, df0. */
static void prem_schedules(LC_BASE_ARG const lc_ctx *c, const tl_layout *w) {
    const double *q_mth = region(LC_BASE c, w->q_mth), *l_base = region(LC_BASE c, w->l_base);
    const double *df0 = region(LC_BASE c, w->df0);
    double *deaths = region(LC_BASE c, w->prem_deaths), *pv_pols = region(LC_BASE c, w->prem_pols);
    uint32_t keys = 2 * w->n_ages, years = c->n_months / 12, S = w->n_sel - 1;
    for (uint32_t g = 0; g < keys; g += PL) {
        vd pols[PV], pv[PV];
        for (uint32_t v = 0; v < PV; v++) pols[v] = (vd){0} + 1.0, pv[v] = (vd){0};
        for (uint32_t y = 0; y < years; y++) {
            vd q[PV];
            for (uint32_t j = 0; j < PL; j++) {
                uint32_t k = g + j, a = k % w->n_ages; /* lanes past the keys: row 0, never stored */
                LANE(q, j) = k < keys && a + y < w->n_ages ? q_mth[((uint64_t)k + y) * w->n_sel + min_u32(y, S)] : 0.0;
            }
            double l = l_base[min_u32(y, w->n_lapse - 1)];
            l = l < 1.0 ? l : 1.0;
            for (uint32_t t = 12 * y; t < 12 * y + 12; t++) {
                double df = df0[t];
                vd d[PV];
                for (uint32_t v = 0; v < PV; v++) {
                    d[v] = pols[v] * q[v];
                    vd lapses = (pols[v] - d[v]) * l;
                    pv[v] += pols[v] * df;
                    pols[v] = pols[v] - d[v] - lapses;
                }
                for (uint32_t j = 0; j < PL && g + j < keys; j++) deaths[(uint64_t)(g + j) * 12 * years + t] = LANE(d, j);
            }
            for (uint32_t j = 0; j < PL && g + j < keys; j++) pv_pols[(uint64_t)(g + j) * years + y] = LANE(pv, j);
        }
    }
}

/* premium_eff[i] for rows [r_begin, r_end) of one block (checked by row_check): premium_pp if
 * > 0, else round(100·((1 + loading)·net))/100 (half to even) with net = Σ_t SA·deaths(t)·DF0(t) /
 * Σ_t pols(t)·DF0(t) for one policy on the base curve, dl ≡ 1, months counted from issue (new
 * business, now or future; LC_E_INPUT for an in-force row without a premium).
 *
 * Months count from issue, so every such row reads DF0(t) and turns its years at the same t, and
 * pols(t), deaths(t) and Σ pols·DF0 depend only on the row's mortality row (sex, age at entry): rows
 * with the same one (a "key"; its term only says where the row stops) have the same bits of them.
 * lc_prepare projects each key's schedule once (`prem_schedules`); here the rows are sorted by key
 * (then by horizon, longest first) and each key's rows, PL at a time in vector lanes, add
 * (SA·deaths(t))·DF0(t) of their own SA in month order and take their premiums at their own
 * horizons with the key's Σ pols·DF0 there: for every row the operations, and so the bits, of
 * projecting it alone. */

/* acc += (SA·deaths(t))·DF0(t) for `months` months (whole years), in month order, for the first
 * `nv` vectors of rows (a key's last rows fill fewer than PV). Its own function: its few vectors
 * stay in registers. */
static inline __attribute__((always_inline)) void prem_claims_nv(vd *acc_io, const vd *sa_v, const double *restrict deaths,
                                                                 const double *restrict df, uint32_t months, uint32_t nv) {
    vd acc[PV], s[PV];
    for (uint32_t v = 0; v < nv; v++) acc[v] = acc_io[v], s[v] = sa_v[v];
    for (uint32_t t = 0; t < months; t += 4) /* 4 months a pass (as pl_months: fewer spills; 4 measured best) */
        _Pragma("clang loop unroll(full)") for (uint32_t m = 0; m < 4; m++) {
            double d = deaths[t + m], f = df[t + m];
            for (uint32_t v = 0; v < nv; v++) acc[v] += s[v] * d * f;
        }
    for (uint32_t v = 0; v < nv; v++) acc_io[v] = acc[v];
}
static __attribute__((noinline)) void prem_claims(vd *acc, const vd *sa_v, const double *restrict deaths,
                                                  const double *restrict df, uint32_t months, uint32_t nv) {
    _Static_assert(PV == 4, "prem_claims has a case per vector count");
    switch (nv) {
    case 1: prem_claims_nv(acc, sa_v, deaths, df, months, 1); break;
    case 2: prem_claims_nv(acc, sa_v, deaths, df, months, 2); break;
    case 3: prem_claims_nv(acc, sa_v, deaths, df, months, 3); break;
    default: prem_claims_nv(acc, sa_v, deaths, df, months, 4); break;
    }
}

static int32_t premiums(LC_BASE_ARG const lc_ctx *c, const tl_layout *w, uint32_t r_begin, uint32_t r_end) {
    const int32_t *age = col_age_at_entry(LC_BASE c);
    const int32_t *sex = col_sex(LC_BASE c);
    const int32_t *term = col_policy_term(LC_BASE c);
    const int32_t *dur = col_duration_mth(LC_BASE c);
    const double *sa = col_sum_assured(LC_BASE c);
    const double *prem_in = col_premium_pp(LC_BASE c);
    double *prem_out = region(LC_BASE c, w->premium_eff);
    const double *df0 = region(LC_BASE c, w->df0);
    double premium_loading = param_premium_loading(LC_BASE c);
    uint64_t keys[LC_BLOCK], tmp[LC_BLOCK];
    /* sort key: mortality row (when its bits fit; else a key's rows are grouped where they fall
     * together), horizon (longest first), row */
    uint32_t mbits = 1;
    while (mbits < 32 && (c->n_months >> mbits) != 0) mbits++;
    uint64_t key_rows = 2 * (uint64_t)w->n_ages;
    int by_key = 10 + mbits + 64 - __builtin_clzll(key_rows) <= 56;
    uint64_t mmax = ((uint64_t)1 << mbits) - 1;
    uint32_t n = 0;
    for (uint32_t i = r_begin; i < r_end; i++) {
        if (prem_in[i] > 0.0) {
            prem_out[i] = prem_in[i];
            continue;
        }
        if (dur[i] > 0) return LC_E_INPUT;
        uint64_t k = by_key ? (uint64_t)(sex[i] == SEX_F ? w->n_ages : 0) + (uint64_t)(age[i] - w->min_age) : 0;
        keys[n++] = (k << mbits | (mmax - 12 * (uint64_t)term[i])) << 10 | (i - r_begin);
    }
    if (n == 0) return LC_OK;
    sort_keys(keys, tmp, n);
    /* rows in sorted order, and runs of one mortality row ("keys"): first row, rows */
    uint16_t order[LC_BLOCK], run_first[LC_BLOCK], run_len[LC_BLOCK];
    uint32_t runs = 0;
    for (uint32_t k = 0; k < n; k++) {
        uint32_t i = r_begin + (uint32_t)(keys[k] & 1023);
        order[k] = (uint16_t)(i - r_begin);
        if (k == 0 || sex[i] != sex[r_begin + order[k - 1]] || age[i] != age[r_begin + order[k - 1]]) {
            run_first[runs] = (uint16_t)k, run_len[runs] = 0;
            runs++;
        }
        run_len[runs - 1]++;
    }
    /* each key's rows, PL at a time (longest horizon first), on its schedule from lc_prepare */
    const double *deaths = region(LC_BASE c, w->prem_deaths), *pv_pols = region(LC_BASE c, w->prem_pols);
    uint32_t years = c->n_months / 12;
    for (uint32_t r = 0; r < runs; r++) {
        uint32_t i0 = r_begin + order[run_first[r]];
        uint64_t key = (uint64_t)(sex[i0] == SEX_F ? w->n_ages : 0) + (uint64_t)(age[i0] - w->min_age);
        const double *d_key = deaths + key * 12 * years, *pv_key = pv_pols + key * years;
        for (uint32_t k = run_first[r]; k < run_first[r] + run_len[r]; k += PL) {
            uint32_t lanes = min_u32(PL, run_first[r] + run_len[r] - k), ends[PL];
            vd acc[PV], sa_v[PV];
            for (uint32_t l = 0; l < PL; l++) {
                uint32_t i = r_begin + order[k + (l < lanes ? l : 0)];
                LANE(sa_v, l) = sa[i];
                LANE(acc, l) = 0.0;
                ends[l] = l < lanes ? 12 * (uint32_t)term[i] : 0;
            }
            /* months from issue, stopping at each lane's horizon (lanes: longest first) for its premium */
            for (uint32_t t = 0, e = lanes; t < ends[0];) {
                while (e > 0 && ends[e - 1] <= t) e--;
                prem_claims(acc, sa_v, d_key + t, df0 + t, ends[e - 1] - t, (e + VW - 1) / VW);
                t = ends[e - 1];
                for (uint32_t l = e; l > 0 && ends[l - 1] == t; l--) {
                    double net = LANE(acc, l - 1) / pv_key[t / 12 - 1];
                    prem_out[r_begin + order[k + l - 1]] = nearbyint(100.0 * ((1.0 + premium_loading) * net)) / 100.0;
                }
            }
        }
    }
    return LC_OK;
}

/* Block partials for blocks [b_begin, b_end): partials[b][k][s] = Σ over the block's rows, in
 * row order from +0.0, of PV_k of that policy under scenario s (scenario or policy layout: the
 * same bits). Computes the block's premiums first; needs lc_prepare and lc_prepare_scenarios
 * (all scenarios). */
LC_EXPORT(lc_run_blocks)
int32_t lc_run_blocks(LC_BASE_ARG uint32_t ctx_off, uint32_t b_begin, uint32_t b_end) {
    const lc_ctx *c = lc_context(LC_BASE ctx_off);
    tl_layout w;
    int32_t rc = view(LC_BASE c, &w);
    if (rc != LC_OK) return rc;
    if (b_begin > b_end || b_end > lc_blocks(c)) return LC_E_RANGE;
    const int32_t *age = col_age_at_entry(LC_BASE c);
    const int32_t *sex = col_sex(LC_BASE c);
    const int32_t *term = col_policy_term(LC_BASE c);
    const int32_t *dur = col_duration_mth(LC_BASE c);
    const double *count = col_policy_count(LC_BASE c);
    const double *sa = col_sum_assured(LC_BASE c);
    const double *prem = region(LC_BASE c, w.premium_eff);
    const double *q_mth = region(LC_BASE c, w.q_mth);
    const double *l_base = region(LC_BASE c, w.l_base);
    const double *maint_infl = region(LC_BASE c, w.maint_infl);
    const double *disc = region(LC_BASE c, w.disc);
    const double *dlap = region(LC_BASE c, w.dlap);
    double *partials = lc_partials(LC_BASE c);
    double expense_acq = param_expense_acq(LC_BASE c), commission_rate = param_commission_rate(LC_BASE c);
    double dyn_lapse_hi = param_dyn_lapse_hi(LC_BASE c);
    uint32_t N = c->n_scen, T = c->n_months, groups = (uint32_t)w.groups;
    double *row_values = lc_row_values(LC_BASE c), *cash_flows = lc_cash_flows(LC_BASE c);
    uint32_t cf_months = lc_cash_flow_months(c);
    pl_inputs pl = {age, sex, term, dur, count, sa, prem, q_mth, l_base, maint_infl, disc, dlap,
                    region(LC_BASE c, w.row_pv), row_values, w.n_ages, w.n_sel, w.n_lapse, T, N, w.min_age,
                    expense_acq, commission_rate, dyn_lapse_hi};
    for (uint32_t b = b_begin; b < b_end; b++) {
        uint32_t r0 = b * LC_BLOCK, r1 = min_u32(c->n_rows, r0 + LC_BLOCK);
        for (uint32_t i = r0; i < r1; i++)
            if ((rc = row_check(&w, T, age[i], sex[i], term[i], dur[i])) != LC_OK) return rc;
        if ((rc = premiums(LC_BASE c, &w, r0, r1)) != LC_OK) return rc;
        double *out = partials + (uint64_t)b * LC_N_OUTPUTS * N;
        if (policy_layout(c)) {
            run_block_policy_lanes(&pl, r0, r1, out);
            continue;
        }
        for (uint32_t g = 0; g < groups; g++) {
            vd acc[LC_N_OUTPUTS][NV];
            for (uint32_t k = 0; k < LC_N_OUTPUTS; k++)
                for (uint32_t v = 0; v < NV; v++) acc[k][v] = (vd){0};
            const double *dg = disc + (uint64_t)g * T * LANES;
            const double *lg = dlap + (uint64_t)g * T * LANES;
            uint32_t lanes = min_u32(LANES, N - g * LANES); /* lanes past N hold no scenario: never written out */
            for (uint32_t i = r0; i < r1; i++) {
                /* attained age x = age + y is mortality row (age − min_age) + y */
                const double *q_sex = q_mth + (sex[i] == SEX_F ? w.n_ages * w.n_sel : 0);
                /* future new business (dur < 0) is written at t = −dur and projects as new business
                 * from there, in calendar months: nothing before its issue */
                uint32_t issue = dur[i] < 0 ? (uint32_t)-dur[i] : 0, d = dur[i] < 0 ? 0 : (uint32_t)dur[i];
                uint32_t M = 12 * (uint32_t)term[i] - d;
                tl_detail detail = {
                    row_values ? row_values + (uint64_t)i * LC_N_OUTPUTS * N + g * LANES : 0,
                    cash_flows ? cash_flows + ((uint64_t)b * LC_N_MONTHLY * N + g * LANES) * cf_months + issue : 0,
                    N, lanes, cf_months};
                (cash_flows ? project_cash_flows : project_values)(
                    acc, dg + (uint64_t)issue * LANES, lg + (uint64_t)issue * LANES, maint_infl + issue, q_sex,
                    age[i] - w.min_age, w.n_sel, l_base, w.n_lapse, d, M, count[i], sa[i], prem[i], expense_acq,
                    commission_rate, dyn_lapse_hi, &detail);
            }
            for (uint32_t k = 0; k < LC_N_OUTPUTS; k++)
                for (uint32_t j = 0; j < lanes; j++) out[(uint64_t)k * N + g * LANES + j] = acc[k][j / VW][j % VW];
        }
    }
    return LC_OK;
}
