/*
 * model.c: a regular-premium endowment assurance, projected monthly under each interest-rate
 * scenario: a projection of model ABI v2 (docs/model-interface.md). This file is yours to edit.
 *
 * It reads its inputs only through include/model_interface.h, which `livecalc package build`
 * generates from the declaration in livecalc.config.json ("interface"): col_NAME(LC_BASE c)
 * for a policy column, table_NAME(...) for a table, param_NAME(...) for a parameter,
 * scen_NAME(...) for a scenario input and OUT_NAME for the index of an output. Change the
 * declaration, run the build, and the accessors follow; no memory offset is written here.
 *
 * The product, per model point (one row of the policy dataset):
 *   - premium_pp is paid at the start of every month the policy is in force, until maturity;
 *   - on death in a month, sum_assured is paid at the end of that month;
 *   - a policy in force at the end of its term receives sum_assured (the maturity benefit);
 *   - the office spends expense_pp a year per policy in force, monthly in advance;
 *   - policies lapse at lapse_rate a year, with no surrender value.
 * Month t = 0 is the valuation date; the row is duration_mth months into its term, so it is
 * projected for M = 12·policy_term − duration_mth months. Policy year y(t) = ⌊(duration_mth + t)/12⌋,
 * attained age x(t) = age_at_entry + y(t):
 *   q_mth(t)  = 1 − (1 − q[x(t)][sex])^(1/12)        monthly probability of death
 *   w_mth     = 1 − (1 − lapse_rate)^(1/12)           monthly probability of lapse
 *   pols(0)   = policy_count
 *   deaths(t) = pols(t)·q_mth(t)
 *   lapses(t) = (pols(t) − deaths(t))·w_mth
 *   pols(t+1) = pols(t) − deaths(t) − lapses(t)
 * Under scenario s the discount factor to month t is
 *   DF_s(t)   = (1 + valuation_rate)^(−t/12) · exp(−Σ_{m<t} r_s(m)/12)
 * with r_s(m) the short-rate shock of the esg node (the scenario input `rates`), and
 *   premiums   = Σ_t premium_pp·pols(t)·DF_s(t)
 *   claims     = Σ_t sum_assured·deaths(t)·DF_s(t+1)
 *   maturities = sum_assured·pols(M)·DF_s(M)
 *   expenses   = Σ_t expense_pp/12·pols(t)·DF_s(t)
 *   net_cf     = premiums − claims − maturities − expenses   (the primary output)
 *
 * The engine calls, in this order (threads split the ranges; each writes only its own part):
 *   lc_workspace_size      bytes of scratch memory (the workspace) this run needs
 *   lc_prepare             once: monthly mortality by age and sex into the workspace
 *   lc_prepare_scenarios   scenarios [s0, s1): DF_s(t) into the workspace
 *   lc_run_blocks          blocks [b0, b1): partials[b][k][s], the sum over block b's rows, in
 *                          row order from +0.0, of output k under scenario s (the block rule:
 *                          it makes the result the same bits whichever engine computes a block);
 *                          and, when the run asks, each row's values (row_values[i][k][s]) and
 *                          each block's undiscounted cash flows by month of the outputs declared
 *                          "monthly" (cash_flows[b][m][s][t], at the month t whose DF_s(t)
 *                          discounts them: a claim of month t at t + 1, the maturity at M).
 *                          LC_FEATURES below says this model writes both (the export lc_features).
 * Every entry point returns LC_OK (0) or a status: LC_E_ABI, LC_E_RANGE, LC_E_TABLE, LC_E_INPUT,
 * or 16 and above for your own.
 */
#include <math.h>
#include <stdint.h>

#include "livecalc_model.h"
/* lc_run_blocks writes row values and cash flows when a run asks (delete a bit if you drop one) */
#define LC_FEATURES (LC_FEATURE_ROW_VALUES | LC_FEATURE_CASH_FLOWS)
#include "model_interface.h"

LC_EXPORT(lc_abi_version) int32_t lc_abi_version(void) { return LC_ABI_VERSION; }

/* The run's scalars, read once per call. */
typedef struct basis {
    double lapse_mth;   /* w_mth */
    double expense_mth; /* expense per policy per month */
} basis;

static basis read_basis(LC_BASE_ARG const lc_ctx *c) {
    basis b;
    b.lapse_mth = 1.0 - pow(1.0 - param_lapse_rate(LC_BASE c), 1.0 / 12.0);
    b.expense_mth = param_expense_pp(LC_BASE c) / 12.0;
    return b;
}

/* The workspace: where each region starts, in bytes from its start (16-byte aligned).
 *   q_mth  f64 [n_ages][2]               monthly q by attained age (from the table's first age) and sex
 *   disc   f64 [n_scen][n_months + 1]    DF_s(t), t = 0..n_months */
typedef struct workspace {
    uint32_t n_ages;
    int32_t first_age;
    uint64_t q_mth, disc, bytes;
} workspace;

static uint64_t align16(uint64_t n) { return (n + 15) & ~(uint64_t)15; }

/* The workspace layout of context c; LC_OK, or LC_E_ABI when c does not lay out this declaration. */
static int32_t layout(LC_BASE_ARG const lc_ctx *c, workspace *w) {
    int32_t rc = interface_check(LC_BASE c);
    if (rc != LC_OK) return rc;
    w->n_ages = table_mortality_size(LC_BASE c, AXIS_MORTALITY_AGE);
    w->first_age = table_mortality_origin(LC_BASE c, AXIS_MORTALITY_AGE);
    w->q_mth = 0;
    w->disc = align16((uint64_t)w->n_ages * 2 * sizeof(double));
    w->bytes = w->disc + align16((uint64_t)c->n_scen * (c->n_months + 1) * sizeof(double));
    return LC_OK;
}

/* layout() for a context whose workspace is in place: LC_E_RANGE when it is too small. */
static int32_t view(LC_BASE_ARG const lc_ctx *c, workspace *w) {
    int32_t rc = layout(LC_BASE c, w);
    if (rc != LC_OK) return rc;
    return c->workspace_bytes >= w->bytes ? LC_OK : LC_E_RANGE;
}

static double *region(LC_BASE_ARG const lc_ctx *c, uint64_t at) { return (double *)(lc_workspace(LC_BASE c) + at); }

LC_EXPORT(lc_workspace_size)
int32_t lc_workspace_size(LC_BASE_ARG uint32_t ctx_off) {
    workspace w;
    int32_t rc = layout(LC_BASE lc_context(LC_BASE ctx_off), &w);
    if (rc != LC_OK) return -rc;
    return w.bytes <= INT32_MAX ? (int32_t)w.bytes : -LC_E_RANGE;
}

/* q_mth[a][sex] = 1 − (1 − q[a][sex])^(1/12): the table's rows are ages, its columns the sex codes. */
LC_EXPORT(lc_prepare)
int32_t lc_prepare(LC_BASE_ARG uint32_t ctx_off) {
    const lc_ctx *c = lc_context(LC_BASE ctx_off);
    workspace w;
    int32_t rc = view(LC_BASE c, &w);
    if (rc != LC_OK) return rc;
    const double *q = table_mortality(LC_BASE c);
    double *q_mth = region(LC_BASE c, w.q_mth);
    for (uint32_t i = 0; i < w.n_ages * 2; i++) q_mth[i] = 1.0 - pow(1.0 - q[i], 1.0 / 12.0);
    return LC_OK;
}

/* disc[s][t] = DF_s(t) = (1 + valuation_rate)^(−t/12)·exp(−Σ_{m<t} r_s(m)/12), summed in month order. */
LC_EXPORT(lc_prepare_scenarios)
int32_t lc_prepare_scenarios(LC_BASE_ARG uint32_t ctx_off, uint32_t s_begin, uint32_t s_end) {
    const lc_ctx *c = lc_context(LC_BASE ctx_off);
    workspace w;
    int32_t rc = view(LC_BASE c, &w);
    if (rc != LC_OK) return rc;
    if (s_begin > s_end || s_end > c->n_scen) return LC_E_RANGE;
    const double *rates = scen_rates(LC_BASE c);
    uint32_t stride = scen_rates_stride(LC_BASE c), T = c->n_months;
    double *disc = region(LC_BASE c, w.disc);
    double v = 1.0 + param_valuation_rate(LC_BASE c);
    for (uint32_t s = s_begin; s < s_end; s++) {
        const double *r = rates + (uint64_t)s * stride;
        double *df = disc + (uint64_t)s * (T + 1);
        double cum = 0.0;
        for (uint32_t t = 0; t <= T; t++) {
            if (t > 0) cum += r[t - 1];
            df[t] = pow(v, -(double)t / 12.0) * exp(-cum / 12.0);
        }
    }
    return LC_OK;
}

/* Can the model value a row? LC_E_INPUT for a sex code or term it does not know or a duration
 * past maturity, LC_E_RANGE when its M months exceed the run's, LC_E_TABLE when an attained age
 * it projects is outside the mortality table. */
static int32_t row_check(const workspace *w, uint32_t n_months, int32_t age, int32_t sex, int32_t term, int32_t dur) {
    if ((sex != SEX_M && sex != SEX_F) || term < 1 || dur < 0 || dur > 12 * term) return LC_E_INPUT;
    if ((uint32_t)(12 * term - dur) > n_months) return LC_E_RANGE;
    if (dur == 12 * term) return LC_OK; /* matures now: no month projected, no age needed */
    int32_t first = age + dur / 12 - w->first_age, last = age + term - 1 - w->first_age;
    return first >= 0 && last < (int32_t)w->n_ages ? LC_OK : LC_E_TABLE;
}

/* One policy row under one scenario: its present values, output by output. */
typedef struct pvs {
    double v[LC_N_OUTPUTS];
} pvs;

/* Adds x to the block's cash flow of monthly output m at month t (cf: the block's cash flows of
 * this scenario, the outputs stride apart), net_cf with it when it counts there with `sign`. */
static void add_flow(double *cf, uint64_t stride, uint32_t m, uint32_t t, double x, double sign) {
    cf[m * stride + t] += x;
    cf[MONTHLY_NET_CF * stride + t] += sign * x;
}

/* q_sex: q_mth of the row's sex (every 2nd value from the table's first age); age_row: the row's age
 * at entry less that first age; df: DF_s(0..M) of the scenario; cf: NULL, or where the row's
 * cash flows are added (the block's at this scenario, month 0; monthly outputs `stride` apart). */
static pvs project(const basis *b, const double *q_sex, int32_t age_row, uint32_t dur, uint32_t M, double count,
                   double sum_assured, double premium_pp, const double *df, double *cf, uint64_t stride) {
    double pols = count, premiums = 0.0, claims = 0.0, expenses = 0.0;
    for (uint32_t t = 0; t < M; t++) {
        uint32_t year = (dur + t) / 12;
        double q_mth = q_sex[2 * (uint32_t)(age_row + (int32_t)year)];
        premiums += premium_pp * pols * df[t];
        expenses += b->expense_mth * pols * df[t];
        double deaths = pols * q_mth;
        claims += sum_assured * deaths * df[t + 1];
        if (cf) { /* the same flows undiscounted, at the month whose DF discounts them */
            add_flow(cf, stride, MONTHLY_PREMIUMS, t, premium_pp * pols, 1.0);
            add_flow(cf, stride, MONTHLY_EXPENSES, t, b->expense_mth * pols, -1.0);
            add_flow(cf, stride, MONTHLY_CLAIMS, t + 1, sum_assured * deaths, -1.0);
        }
        double lapses = (pols - deaths) * b->lapse_mth;
        pols = pols - deaths - lapses;
    }
    if (cf) add_flow(cf, stride, MONTHLY_MATURITIES, M, sum_assured * pols, -1.0);
    pvs out;
    out.v[OUT_PREMIUMS] = premiums;
    out.v[OUT_CLAIMS] = claims;
    out.v[OUT_MATURITIES] = sum_assured * pols * df[M];
    out.v[OUT_EXPENSES] = expenses;
    out.v[OUT_NET_CF] = premiums - claims - out.v[OUT_MATURITIES] - expenses;
    return out;
}

/* partials[b][k][s] for blocks [b_begin, b_end): per scenario, the block's rows in row order
 * from +0.0. Needs lc_prepare and lc_prepare_scenarios (every scenario). */
LC_EXPORT(lc_run_blocks)
int32_t lc_run_blocks(LC_BASE_ARG uint32_t ctx_off, uint32_t b_begin, uint32_t b_end) {
    const lc_ctx *c = lc_context(LC_BASE ctx_off);
    workspace w;
    int32_t rc = view(LC_BASE c, &w);
    if (rc != LC_OK) return rc;
    if (b_begin > b_end || b_end > lc_blocks(c)) return LC_E_RANGE;
    const int32_t *age = col_age_at_entry(LC_BASE c);
    const int32_t *sex = col_sex(LC_BASE c);
    const int32_t *term = col_policy_term(LC_BASE c);
    const int32_t *dur = col_duration_mth(LC_BASE c);
    const double *sum_assured = col_sum_assured(LC_BASE c);
    const double *premium_pp = col_premium_pp(LC_BASE c);
    const double *count = col_policy_count(LC_BASE c);
    const double *q_mth = region(LC_BASE c, w.q_mth);
    const double *disc = region(LC_BASE c, w.disc);
    double *partials = lc_partials(LC_BASE c);
    double *row_values = lc_row_values(LC_BASE c), *cash_flows = lc_cash_flows(LC_BASE c);
    basis b = read_basis(LC_BASE c);
    uint32_t N = c->n_scen, T = c->n_months, months = lc_cash_flow_months(c);
    uint64_t stride = (uint64_t)N * months; /* between two monthly outputs of a block's cash flows */
    for (uint32_t blk = b_begin; blk < b_end; blk++) {
        uint32_t r0 = blk * LC_BLOCK, r1 = r0 + LC_BLOCK < c->n_rows ? r0 + LC_BLOCK : c->n_rows;
        for (uint32_t i = r0; i < r1; i++)
            if ((rc = row_check(&w, T, age[i], sex[i], term[i], dur[i])) != LC_OK) return rc;
        double *out = partials + (uint64_t)blk * LC_N_OUTPUTS * N;
        for (uint32_t s = 0; s < N; s++) {
            const double *df = disc + (uint64_t)s * (T + 1);
            double *cf = cash_flows ? cash_flows + (uint64_t)blk * LC_N_MONTHLY * stride + (uint64_t)s * months : 0;
            double sum[LC_N_OUTPUTS] = {0};
            for (uint32_t i = r0; i < r1; i++) {
                uint32_t M = 12 * (uint32_t)term[i] - (uint32_t)dur[i];
                pvs pv = project(&b, q_mth + sex[i], age[i] - w.first_age, (uint32_t)dur[i], M, count[i],
                                 sum_assured[i], premium_pp[i], df, cf, stride);
                for (uint32_t k = 0; k < LC_N_OUTPUTS; k++) sum[k] += pv.v[k];
                if (row_values)
                    for (uint32_t k = 0; k < LC_N_OUTPUTS; k++)
                        row_values[((uint64_t)i * LC_N_OUTPUTS + k) * N + s] = pv.v[k];
            }
            for (uint32_t k = 0; k < LC_N_OUTPUTS; k++) out[(uint64_t)k * N + s] = sum[k];
        }
    }
    return LC_OK;
}
