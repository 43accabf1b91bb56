/*
 * savings: lifelib savings CashValue_ME (docs/model.md "savings") under stochastic
 * investment returns, one policy × LANES scenarios at a time, as a projection of model ABI v2
 * (docs/model-interface.md). It reads its columns, tables, parameters and the scenario input
 * `std_norm` through savings/model_interface.h, generated from its declaration
 * (services/valuation/reference_model/savings.interface.json).
 *
 * One policy, months t = 0 … M with M = 12·term − duration_mth (term: policy_term, or for whole
 * life ω − age_at_entry, ω the mortality table's last age); policy month d = duration_mth + t,
 * policy year y = ⌊d/12⌋, attained age x = age_at_entry + y. Per policy (pp), before t = 0:
 * pols_if = policy_count if duration_mth > 0 else 0 (new business is written at d = 0), AV = av_pp_init.
 * Month t < M:
 *   nb        = policy_count if d = 0 else 0                           new business
 *   pols      = pols_if + nb                                            in force before decrements
 *   prem_pp   = premium_pp if LEVEL, or SINGLE and d = 0; else 0
 *   q         = 1 − (1 − mortality[x][min(y, S)])^(1/12);  coi_rate = coi_loading·q
 *   deaths    = pols·q;  lapses = (pols − deaths)·(1 − (1 − lapse[min(y, last)])^(1/12))
 *   pols_next = pols − lapses − deaths
 *   fb        = AV + (1 − load_prem_rate)·prem_pp                       AV before fees
 *   bi        = fb − maint_fee_rate/12·fb − coi_rate·max(SA − fb, 0)   AV before investment income
 *   ii        = r_s(t)·bi;  mid = bi + ½·ii;  AV_next = bi + ii
 *   r_s(t)    = exp((μ − σ²/2)/12 + σ·√(1/12)·Z_s(t)) − 1               the monthly return
 *   premiums  = prem_pp·pols;  commissions = commission_rate·premiums
 *   expenses  = expense_acq·nb + pols·expense_maint/12·(1 + inflation)^(t/12)
 *   death     = max(SA, mid)·deaths
 *   surrender = mid·lapses − surr_charge[min(y, last)][type]·mid·lapses  (charge 0 without has_surr_charge)
 *   inv_income = ii·pols_next + ½·ii·(deaths + lapses)                  half a month's income on exits
 *   av_change = AV_next·pols_next − AV·pols_if
 * Month t = M (d = 12·term): the policies in force mature, maturity = AV·pols_if and
 * av_change = −AV·pols_if; nothing else. PV_X = Σ_t X(t)·DF(t) in month order with lifelib's
 * DF(t) = (1 + ((1 + z[⌊t/12⌋])^(1/12) − 1))^(−t), and
 * net_cf = premiums + inv_income − (death + surrender + maturity) − expenses − commissions − av_change.
 * This is CashValue_ME's Projection cell by cell (the order of each sum and product as lifelib
 * writes it), with duration_mth ≥ 0 (the declaration refuses future new business: lifelib would
 * credit an unissued LEVEL policy's premiums to its account value).
 *
 * Work by where it varies: lc_prepare, the assumption tables (monthly q and COI rate, monthly
 * lapse, DF(t), the maintenance expense by month); lc_prepare_scenarios, r_s(t) for LANES
 * scenarios interleaved by month; lc_run_blocks, per policy one pass over its months with the
 * lives (scenario-free) in scalars and the LANES account values in vectors (a partly filled last
 * group NARROW lanes at a time). Each (policy,
 * scenario) value is computed by the same operations whatever the thread, chunk or scenario
 * grouping, and a block partial is summed in row order: bit-identical for any split.
 *
 * Workspace (lc_workspace_size bytes; each region 16-byte aligned, in this order):
 *   q_mth      f64 [n_ages][n_sel]            monthly q
 *   coi        f64 [n_ages][n_sel]            coi_loading·q_mth
 *   l_mth      f64 [n_lapse]                  monthly lapse by policy year
 *   df         f64 [n_months + 1]             DF(t), t = 0 … T (maturity at t = M ≤ T)
 *   maint_infl f64 [n_months]                 expense_maint/12·(1 + inflation)^(t/12)
 *   ret        f64 [groups][n_months][LANES]  r_s(t), scenario s = LANES·group + lane
 * with groups = ⌈n_scen / LANES⌉; lanes past n_scen hold r = 0 and reach no output.
 */
#include <math.h>
#include <stdint.h>

#include "livecalc_model.h"
/* row values and block cash flows by month (the export lc_features) */
#define LC_FEATURES (LC_FEATURE_ROW_VALUES | LC_FEATURE_CASH_FLOWS)
#include "savings/model_interface.h"

#ifndef LC_LANES
#define LC_LANES 32 /* scenarios per group: the interleave of ret */
#endif
#define LANES LC_LANES

_Static_assert(LC_N_OUTPUTS == 9 && OUT_PREMIUMS == 0 && OUT_NET_CF == 8, "savings writes nine PVs in this order");
_Static_assert(LC_N_MONTHLY == 9, "savings writes the cash flows of its nine outputs by month");

LC_EXPORT(lc_abi_version) int32_t lc_abi_version(void) { return LC_ABI_VERSION; }

static inline uint32_t min_u32(uint32_t a, uint32_t b) { return a < b ? a : b; }
static inline uint64_t align16(uint64_t n) { return (n + 15) & ~(uint64_t)15; }

/* The shapes of a run's tables and where each workspace region starts (bytes from the workspace). */
typedef struct sv_layout {
    uint32_t n_ages, n_sel, n_lapse, n_sc_years, n_sc_types, n_curve; /* table sizes */
    int32_t min_age, sc_first_type; /* labels of mortality row 0 and surrender charge column 0 */
    uint64_t groups;                /* ⌈n_scen / LANES⌉ */
    uint64_t q_mth, coi, l_mth, df, maint_infl, ret, bytes;
} sv_layout;

/* The layout of context c; LC_OK, or the status of a context this model cannot run. */
static int32_t layout(LC_BASE_ARG const lc_ctx *c, sv_layout *w) {
    int32_t rc = interface_check(LC_BASE c);
    if (rc != LC_OK) return rc;
    w->n_ages = table_mortality_size(LC_BASE c, AXIS_MORTALITY_AGE);
    w->n_sel = table_mortality_size(LC_BASE c, AXIS_MORTALITY_SELECT_YEAR);
    w->min_age = table_mortality_origin(LC_BASE c, AXIS_MORTALITY_AGE);
    w->n_lapse = table_lapse_size(LC_BASE c, AXIS_LAPSE_POLICY_YEAR);
    w->n_sc_years = table_surr_charge_size(LC_BASE c, AXIS_SURR_CHARGE_POLICY_YEAR);
    w->n_sc_types = table_surr_charge_size(LC_BASE c, AXIS_SURR_CHARGE_CHARGE_TYPE);
    w->sc_first_type = table_surr_charge_origin(LC_BASE c, AXIS_SURR_CHARGE_CHARGE_TYPE);
    w->n_curve = table_curve_size(LC_BASE c, AXIS_CURVE_YEAR);
    /* select year, policy years and curve years are indices from 0 */
    if (table_mortality_origin(LC_BASE c, AXIS_MORTALITY_SELECT_YEAR) != 0 ||
        table_lapse_origin(LC_BASE c, AXIS_LAPSE_POLICY_YEAR) != 0 ||
        table_surr_charge_origin(LC_BASE c, AXIS_SURR_CHARGE_POLICY_YEAR) != 0 ||
        table_curve_origin(LC_BASE c, AXIS_CURVE_YEAR) != 0)
        return LC_E_TABLE;
    if (w->n_ages == 0 || w->n_sel == 0 || w->n_lapse == 0 || w->n_sc_years == 0 || w->n_sc_types == 0 ||
        w->n_curve == 0)
        return LC_E_TABLE;
    uint64_t T = c->n_months, cells = (uint64_t)w->n_ages * w->n_sel;
    w->groups = ((uint64_t)c->n_scen + LANES - 1) / LANES;
    uint64_t at = 0;
    w->q_mth = at, at += align16(cells * 8);
    w->coi = at, at += align16(cells * 8);
    w->l_mth = at, at += align16((uint64_t)w->n_lapse * 8);
    w->df = at, at += align16((T + 1) * 8);
    w->maint_infl = at, at += align16(T * 8);
    w->ret = at, at += w->groups * T * LANES * 8;
    w->bytes = at;
    return LC_OK;
}

/* layout() for a context whose workspace is in place: LC_E_RANGE when it is too small. */
static int32_t view(LC_BASE_ARG const lc_ctx *c, sv_layout *w) {
    int32_t rc = layout(LC_BASE c, w);
    if (rc != LC_OK) return rc;
    return c->workspace_bytes >= w->bytes ? LC_OK : LC_E_RANGE;
}

static inline double *region(LC_BASE_ARG const lc_ctx *c, uint64_t at) { return (double *)(lc_workspace(LC_BASE c) + at); }

/* Bytes of workspace a run needs (negative: a status). */
LC_EXPORT(lc_workspace_size)
int32_t lc_workspace_size(LC_BASE_ARG uint32_t ctx_off) {
    sv_layout w;
    int32_t rc = layout(LC_BASE lc_context(LC_BASE ctx_off), &w);
    if (rc != LC_OK) return -rc;
    return w.bytes <= INT32_MAX ? (int32_t)w.bytes : -LC_E_RANGE;
}

/* q_mth = 1 − (1 − q)^(1/12), coi = coi_loading·q_mth; l_mth[y] = 1 − (1 − lapse[y])^(1/12);
 * DF(t) = (1 + ((1 + z[min(⌊t/12⌋, last)])^(1/12) − 1))^(−t) (rows check that they need no year past
 * the curve); maint_infl(t) = expense_maint/12·(1 + inflation)^(t/12). */
LC_EXPORT(lc_prepare)
int32_t lc_prepare(LC_BASE_ARG uint32_t ctx_off) {
    const lc_ctx *c = lc_context(LC_BASE ctx_off);
    sv_layout w;
    int32_t rc = view(LC_BASE c, &w);
    if (rc != LC_OK) return rc;
    const double *restrict mort = table_mortality(LC_BASE c);
    double *restrict q_mth = region(LC_BASE c, w.q_mth);
    double *restrict coi = region(LC_BASE c, w.coi);
    double coi_loading = param_coi_loading(LC_BASE c);
    for (uint32_t i = 0; i < w.n_ages * w.n_sel; i++) {
        q_mth[i] = 1.0 - pow(1.0 - mort[i], 1.0 / 12.0);
        coi[i] = coi_loading * q_mth[i];
    }
    const double *restrict lapse = table_lapse(LC_BASE c);
    double *restrict l_mth = region(LC_BASE c, w.l_mth);
    for (uint32_t y = 0; y < w.n_lapse; y++) l_mth[y] = 1.0 - pow(1.0 - lapse[y], 1.0 / 12.0);
    const double *restrict curve = table_curve(LC_BASE c);
    double *restrict df = region(LC_BASE c, w.df);
    double *restrict maint_infl = region(LC_BASE c, w.maint_infl);
    double expense_maint = param_expense_maint(LC_BASE c), inflation = param_inflation(LC_BASE c);
    for (uint32_t t = 0; t <= c->n_months; t++) {
        double disc_rate_mth = pow(1.0 + curve[min_u32(t / 12, w.n_curve - 1)], 1.0 / 12.0) - 1.0;
        df[t] = pow(1.0 + disc_rate_mth, -(double)t);
        if (t < c->n_months) maint_infl[t] = expense_maint / 12.0 * pow(1.0 + inflation, (double)t / 12.0);
    }
    return LC_OK;
}

/* For scenarios [s_begin, s_end), each in its lane of group s / LANES (threads may split a group:
 * they write disjoint doubles): ret = exp((μ − σ²/2)·(1/12) + (σ·√(1/12))·Z_s(t)) − 1, lifelib's
 * inv_return_table. Whoever prepares the last scenario also fills the lanes past it with 0. */
LC_EXPORT(lc_prepare_scenarios)
int32_t lc_prepare_scenarios(LC_BASE_ARG uint32_t ctx_off, uint32_t s_begin, uint32_t s_end) {
    const lc_ctx *c = lc_context(LC_BASE ctx_off);
    sv_layout w;
    int32_t rc = view(LC_BASE c, &w);
    if (rc != LC_OK) return rc;
    if (s_begin > s_end || s_end > c->n_scen) return LC_E_RANGE;
    const double *restrict z = scen_std_norm(LC_BASE c);
    uint32_t stride = scen_std_norm_stride(LC_BASE c);
    double *restrict ret = region(LC_BASE c, w.ret);
    double mu = param_inv_return_mean(LC_BASE c), sigma = param_inv_return_vol(LC_BASE c);
    double drift = (mu - 0.5 * (sigma * sigma)) * (1.0 / 12.0), vol = sigma * sqrt(1.0 / 12.0);
    uint32_t T = c->n_months;
    for (uint32_t s = s_begin; s < s_end; s++) {
        uint32_t g = s / LANES, j = s % LANES;
        double *restrict rg = ret + (uint64_t)g * T * LANES;
        const double *restrict zs = z + (uint64_t)s * stride;
        for (uint32_t t = 0; t < T; t++) rg[t * LANES + j] = exp(drift + vol * zs[t]) - 1.0;
        if (s + 1 == c->n_scen)
            for (uint32_t pad = j + 1; pad < LANES; pad++)
                for (uint32_t t = 0; t < T; t++) rg[t * LANES + pad] = 0.0;
    }
    return LC_OK;
}

/* One row as the projection reads it (checked by row_check). */
typedef struct sv_policy {
    uint32_t age_row;     /* mortality row of age_at_entry */
    uint32_t dur, M;      /* duration_mth; months to maturity */
    int single;           /* SINGLE premium */
    double count, sa, prem, load, av_init;
    const double *sc_col; /* its surrender charge column (stride n_sc_types), NULL without a charge */
} sv_policy;

/* Can the model value row i? LC_OK with *p filled; LC_E_INPUT for a category code or a term
 * outside the model, or duration_mth outside [0, 12·term]; LC_E_RANGE when M exceeds n_months;
 * LC_E_TABLE when an attained age, a curve year or a surrender charge type it needs is not in
 * the tables. A row with M = 0 matures at t = 0 (reads no table). */
static int32_t row_check(LC_BASE_ARG const lc_ctx *c, const sv_layout *w, uint32_t i, sv_policy *p) {
    int32_t ptype = col_premium_type(LC_BASE c)[i], wl = col_is_wl(LC_BASE c)[i];
    int32_t has_sc = col_has_surr_charge(LC_BASE c)[i], sc_id = col_surr_charge_id(LC_BASE c)[i];
    int32_t age = col_age_at_entry(LC_BASE c)[i], dur = col_duration_mth(LC_BASE c)[i];
    if ((ptype != PREMIUM_TYPE_SINGLE && ptype != PREMIUM_TYPE_LEVEL) || (wl != IS_WL_FALSE && wl != IS_WL_TRUE) ||
        (has_sc != HAS_SURR_CHARGE_FALSE && has_sc != HAS_SURR_CHARGE_TRUE))
        return LC_E_INPUT;
    int64_t last = (int64_t)w->min_age + w->n_ages - 1;
    int64_t term = wl == IS_WL_TRUE ? last - age : col_policy_term(LC_BASE c)[i];
    if (term < 1) return wl == IS_WL_TRUE ? LC_E_TABLE : LC_E_INPUT;
    if (dur < 0 || dur > 12 * term) return LC_E_INPUT;
    int64_t M = 12 * term - dur;
    if (M > (int64_t)c->n_months) return LC_E_RANGE;
    p->dur = (uint32_t)dur, p->M = (uint32_t)M;
    p->single = ptype == PREMIUM_TYPE_SINGLE;
    p->count = col_policy_count(LC_BASE c)[i], p->sa = col_sum_assured(LC_BASE c)[i];
    p->prem = col_premium_pp(LC_BASE c)[i], p->load = col_load_prem_rate(LC_BASE c)[i];
    p->av_init = col_av_pp_init(LC_BASE c)[i];
    p->age_row = 0, p->sc_col = 0;
    if (M == 0) return LC_OK;
    if ((int64_t)age + dur / 12 < w->min_age || (int64_t)age + term - 1 > last) return LC_E_TABLE;
    if ((uint64_t)M / 12 >= w->n_curve) return LC_E_TABLE;
    p->age_row = (uint32_t)(age - w->min_age);
    if (has_sc == HAS_SURR_CHARGE_TRUE) {
        int64_t col = (int64_t)sc_id - w->sc_first_type;
        if (col < 0 || col >= (int64_t)w->n_sc_types) return LC_E_TABLE;
        p->sc_col = table_surr_charge(LC_BASE c) + col;
    }
    return LC_OK;
}

/* LANES scenarios as NV vectors of VW doubles (GCC/Clang vector extensions: wasm f64x2, native
 * the widest AVX vector). Lane-wise vector arithmetic is IEEE scalar arithmetic, so the lane a
 * scenario sits in does not change its bits. */
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
/* max(a, b) = a < b ? b : a (f64x2.pmax; no NaN reaches it) */
static inline vd vmax(vd a, vd b) { return (vd)wasm_f64x2_pmax((v128_t)a, (v128_t)b); }
#else
static inline vd vmax(vd a, vd b) {
    vi lt = (vi)(a < b);
    return (vd)(((vi)b & lt) | ((vi)a & ~lt));
}
#endif

/* The run's scalars and prepared tables. */
typedef struct sv_basis {
    const double *q_mth, *coi, *l_mth, *df, *maint_infl;
    uint32_t n_sel, n_lapse, n_sc_years, n_sc_types;
    double fee_rate, expense_acq, commission_rate;
} sv_basis;

/* Where one policy's detail goes, when the run asks (docs/model-interface.md "Row values and cash
 * flows"): its nine values per lane (rv: row_values at the row's first output and the group's first
 * scenario, stride N per output; NULL when not asked) and its monthly cash flows (cf: the block's
 * cash_flows at the group's first scenario, stride N·months per monthly output and months per
 * scenario; NULL when not asked). Lanes at and past `lanes` hold no scenario. */
typedef struct sv_detail {
    double *rv, *cf;
    uint32_t N, lanes, months;
} sv_detail;

/* Month t's cash flows of lanes lane0 … lane0 + VW − 1 of one policy, added to the block's: the
 * header comment's per-month quantities, before discounting. */
static inline void add_cash_flows(const sv_detail *d, uint32_t lane0, uint32_t t, double premiums, double expenses,
                                  double commissions, vd death, vd surr, vd maturity, vd inv, vd avch) {
    uint64_t out = (uint64_t)d->N * d->months;
    for (uint32_t l = 0; l < VW; l++) {
        uint32_t j = lane0 + l;
        if (j >= d->lanes) return;
        double *o = d->cf + (uint64_t)j * d->months + t;
        double net = premiums + inv[l] - (death[l] + surr[l] + maturity[l]) - expenses - commissions - avch[l];
        o[MONTHLY_PREMIUMS * out] += premiums;
        o[MONTHLY_DEATH * out] += death[l];
        o[MONTHLY_SURRENDER * out] += surr[l];
        o[MONTHLY_MATURITY * out] += maturity[l];
        o[MONTHLY_EXPENSES * out] += expenses;
        o[MONTHLY_COMMISSIONS * out] += commissions;
        o[MONTHLY_INV_INCOME * out] += inv[l];
        o[MONTHLY_AV_CHANGE * out] += avch[l];
        o[MONTHLY_NET_CF * out] += net;
    }
}

/* One policy under nv·VW scenarios of one group, lanes v0·VW … (ret: r_s(t) of those lanes, month t
 * at ret[t·LANES]), adding its nine PVs to acc[9][v0 … v0 + nv) (and writing them to its row values,
 * and its cash flows to the block's, when the run asks): the months of the header comment,
 * t = 0 … M. Inlined with a constant nv and `cash`, so that the per-month vector loop unrolls fully:
 * its account values and PV sums become nv independent dependency chains in locals (WASM: wasm
 * locals, not arrays on the shadow stack), the month's scalar work is shared by all of them, and a
 * run without cash flows carries none of their work. */
static inline __attribute__((always_inline)) void project(vd acc[LC_N_OUTPUTS][NV], uint32_t v0, uint32_t nv,
                                                          const double *restrict ret, const sv_basis *b,
                                                          const sv_policy *p, const sv_detail *detail, int cash) {
    vd av[NV], death[NV], surr[NV], inv[NV], avch[NV];
    for (uint32_t v = 0; v < nv; v++) {
        av[v] = (vd){0} + p->av_init;
        death[v] = surr[v] = inv[v] = avch[v] = (vd){0};
    }
    double premiums = 0.0, expenses = 0.0, commissions = 0.0;
    double pols_if = p->dur > 0 ? p->count : 0.0;
    uint32_t S = b->n_sel - 1;
    for (uint32_t t = 0; t < p->M; t++) {
        uint32_t d = p->dur + t, y = d / 12;
        double nb = d == 0 ? p->count : 0.0;
        double pols = pols_if + nb;
        double prem_pp = !p->single || d == 0 ? p->prem : 0.0;
        uint32_t cell = (p->age_row + y) * b->n_sel + min_u32(y, S);
        double q = b->q_mth[cell], coi_rate = b->coi[cell];
        double deaths = pols * q;
        double lapses = (pols - deaths) * b->l_mth[min_u32(y, b->n_lapse - 1)];
        double pols_next = pols - lapses - deaths;
        double exits = deaths + lapses;
        double sc = p->sc_col ? p->sc_col[(uint64_t)min_u32(y, b->n_sc_years - 1) * b->n_sc_types] : 0.0;
        double prem_to_av = (1.0 - p->load) * prem_pp;
        double df = b->df[t];
        double prem_cf = prem_pp * pols;
        double exp_cf = b->expense_acq * nb + pols * b->maint_infl[t];
        premiums += prem_cf * df;
        expenses += exp_cf * df;
        commissions += b->commission_rate * prem_cf * df;
        const double *restrict r = ret + (uint64_t)t * LANES;
        _Pragma("clang loop unroll(full)") for (uint32_t v = 0; v < nv; v++) {
            vd a = av[v];
            vd fb = a + prem_to_av;
            vd bi = fb - b->fee_rate * fb - coi_rate * vmax(p->sa - fb, (vd){0});
            vd ii = *(const vd_u *)(r + v * VW) * bi;
            vd mid = bi + 0.5 * ii;
            vd next = bi + ii;
            vd death_cf = vmax(p->sa + (vd){0}, mid) * deaths;
            vd surr_cf = mid * lapses - sc * mid * lapses;
            vd inv_cf = ii * pols_next + 0.5 * ii * exits;
            vd avch_cf = next * pols_next - a * pols_if;
            death[v] += death_cf * df;
            surr[v] += surr_cf * df;
            inv[v] += inv_cf * df;
            avch[v] += avch_cf * df;
            av[v] = next;
            if (cash)
                add_cash_flows(detail, (v0 + v) * VW, t, prem_cf, exp_cf, b->commission_rate * prem_cf, death_cf,
                               surr_cf, (vd){0}, inv_cf, avch_cf);
        }
        pols_if = pols_next;
    }
    double df_m = b->df[p->M];
    for (uint32_t v = 0; v < nv; v++) {
        vd maturity = av[v] * pols_if * df_m;
        avch[v] += -(av[v] * pols_if) * df_m;
        vd net = premiums + inv[v] - (death[v] + surr[v] + maturity) - expenses - commissions - avch[v];
        uint32_t a = v0 + v;
        acc[OUT_PREMIUMS][a] += premiums;
        acc[OUT_DEATH][a] += death[v];
        acc[OUT_SURRENDER][a] += surr[v];
        acc[OUT_MATURITY][a] += maturity;
        acc[OUT_EXPENSES][a] += expenses;
        acc[OUT_COMMISSIONS][a] += commissions;
        acc[OUT_INV_INCOME][a] += inv[v];
        acc[OUT_AV_CHANGE][a] += avch[v];
        acc[OUT_NET_CF][a] += net;
        if (cash) {
            vd at_maturity = av[v] * pols_if, zero = (vd){0};
            add_cash_flows(detail, a * VW, p->M, 0.0, 0.0, 0.0, zero, zero, at_maturity, zero, -at_maturity);
        }
        if (detail->rv) {
            vd pv[LC_N_OUTPUTS] = {(vd){0} + premiums, death[v], surr[v], maturity, (vd){0} + expenses,
                                   (vd){0} + commissions, inv[v], avch[v], net};
            for (uint32_t l = 0; l < VW && a * VW + l < detail->lanes; l++)
                for (uint32_t k = 0; k < LC_N_OUTPUTS; k++) detail->rv[(uint64_t)k * detail->N + a * VW + l] = pv[k][l];
        }
    }
}

/* A group's last lanes: a run whose scenarios leave the last group partly empty (1 scenario, 16, or
 * 1,000 = 31·32 + 8) computes them NARROW at a time, not LANES. A lane's operations are the same
 * whichever pass computes it, so the bits are too. */
#define NARROW 8
_Static_assert(LANES % NARROW == 0 && NARROW % VW == 0, "NARROW divides LANES into whole vectors");

static __attribute__((noinline)) void project_group(vd acc[LC_N_OUTPUTS][NV], const double *restrict ret,
                                                    const sv_basis *b, const sv_policy *p, const sv_detail *d) {
    project(acc, 0, NV, ret, b, p, d, 0);
}

static __attribute__((noinline)) void project_narrow(vd acc[LC_N_OUTPUTS][NV], uint32_t lane0, const double *restrict ret,
                                                     const sv_basis *b, const sv_policy *p, const sv_detail *d) {
    project(acc, lane0 / VW, NARROW / VW, ret + lane0, b, p, d, 0);
}

/* The same two with cash flows (runs that ask for them). */
static __attribute__((noinline)) void project_group_cf(vd acc[LC_N_OUTPUTS][NV], const double *restrict ret,
                                                       const sv_basis *b, const sv_policy *p, const sv_detail *d) {
    project(acc, 0, NV, ret, b, p, d, 1);
}

static __attribute__((noinline)) void project_narrow_cf(vd acc[LC_N_OUTPUTS][NV], uint32_t lane0,
                                                        const double *restrict ret, const sv_basis *b,
                                                        const sv_policy *p, const sv_detail *d) {
    project(acc, lane0 / VW, NARROW / VW, ret + lane0, b, p, d, 1);
}

/* Block partials for blocks [b_begin, b_end): partials[b][k][s] = Σ over the block's rows, in row
 * order from +0.0, of PV_k of that policy under scenario s. Needs lc_prepare and
 * lc_prepare_scenarios (all scenarios). */
LC_EXPORT(lc_run_blocks)
int32_t lc_run_blocks(LC_BASE_ARG uint32_t ctx_off, uint32_t b_begin, uint32_t b_end) {
    const lc_ctx *c = lc_context(LC_BASE ctx_off);
    sv_layout w;
    int32_t rc = view(LC_BASE c, &w);
    if (rc != LC_OK) return rc;
    if (b_begin > b_end || b_end > lc_blocks(c)) return LC_E_RANGE;
    sv_basis basis = {
        .q_mth = region(LC_BASE c, w.q_mth),
        .coi = region(LC_BASE c, w.coi),
        .l_mth = region(LC_BASE c, w.l_mth),
        .df = region(LC_BASE c, w.df),
        .maint_infl = region(LC_BASE c, w.maint_infl),
        .n_sel = w.n_sel,
        .n_lapse = w.n_lapse,
        .n_sc_years = w.n_sc_years,
        .n_sc_types = w.n_sc_types,
        .fee_rate = param_maint_fee_rate(LC_BASE c) / 12.0,
        .expense_acq = param_expense_acq(LC_BASE c),
        .commission_rate = param_commission_rate(LC_BASE c),
    };
    const double *ret = region(LC_BASE c, w.ret);
    double *partials = lc_partials(LC_BASE c);
    uint32_t N = c->n_scen, T = c->n_months, groups = (uint32_t)w.groups;
    double *row_values = lc_row_values(LC_BASE c), *cash_flows = lc_cash_flows(LC_BASE c);
    uint32_t cf_months = lc_cash_flow_months(c);
    sv_policy p;
    for (uint32_t b = b_begin; b < b_end; b++) {
        uint32_t r0 = b * LC_BLOCK, r1 = min_u32(c->n_rows, r0 + LC_BLOCK);
        for (uint32_t i = r0; i < r1; i++)
            if ((rc = row_check(LC_BASE c, &w, i, &p)) != LC_OK) return rc;
        double *out = partials + (uint64_t)b * LC_N_OUTPUTS * N;
        for (uint32_t g = 0; g < groups; g++) {
            vd acc[LC_N_OUTPUTS][NV];
            for (uint32_t k = 0; k < LC_N_OUTPUTS; k++)
                for (uint32_t v = 0; v < NV; v++) acc[k][v] = (vd){0};
            const double *rg = ret + (uint64_t)g * T * LANES;
            /* lanes past N hold no scenario: computed only up to the next NARROW, never written out */
            uint32_t lanes = min_u32(LANES, N - g * LANES);
            for (uint32_t i = r0; i < r1; i++) {
                row_check(LC_BASE c, &w, i, &p); /* LC_OK: checked above */
                sv_detail detail = {
                    row_values ? row_values + (uint64_t)i * LC_N_OUTPUTS * N + g * LANES : 0,
                    cash_flows ? cash_flows + ((uint64_t)b * LC_N_MONTHLY * N + g * LANES) * cf_months : 0,
                    N, lanes, cf_months};
                if (lanes == LANES)
                    (cash_flows ? project_group_cf : project_group)(acc, rg, &basis, &p, &detail);
                else
                    for (uint32_t lane0 = 0; lane0 < lanes; lane0 += NARROW)
                        (cash_flows ? project_narrow_cf : project_narrow)(acc, lane0, rg, &basis, &p, &detail);
            }
            for (uint32_t k = 0; k < LC_N_OUTPUTS; k++)
                for (uint32_t j = 0; j < lanes; j++) out[(uint64_t)k * N + g * LANES + j] = acc[k][j / VW][j % VW];
        }
    }
    return LC_OK;
}
