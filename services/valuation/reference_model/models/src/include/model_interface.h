/*
 * model_interface.h: GENERATED from the model's declared interface by
 * services/valuation/sdk/c_header.py; do not edit (change the declaration and regenerate).
 *
 * Named, typed accessors of what the declaration lays out (docs/model-interface.md):
 * call them with LC_BASE first, e.g. col_NAME(LC_BASE c)[i]; interface_check(LC_BASE c)
 * says whether a context matches the declaration.
 */
#ifndef LIVECALC_MODEL_INTERFACE_H
#define LIVECALC_MODEL_INTERFACE_H

#include <stdint.h>

#include "livecalc_model.h"

/* Policy columns, [n_rows] each, in declaration order. */
#define LC_N_COLUMNS 8
#define COL_POLICY_ID 0 /* int64 */
static inline const int64_t *col_policy_id(LC_BASE_ARG const lc_ctx *c) {
    return lc_i64(LC_BASE lc_column(LC_BASE c, COL_POLICY_ID));
}
#define COL_AGE_AT_ENTRY 1 /* int32 */
static inline const int32_t *col_age_at_entry(LC_BASE_ARG const lc_ctx *c) {
    return lc_i32(LC_BASE lc_column(LC_BASE c, COL_AGE_AT_ENTRY));
}
#define COL_SEX 2 /* category */
static inline const int32_t *col_sex(LC_BASE_ARG const lc_ctx *c) {
    return lc_i32(LC_BASE lc_column(LC_BASE c, COL_SEX));
}
#define SEX_M 0
#define SEX_F 1
#define COL_POLICY_TERM 3 /* int32 */
static inline const int32_t *col_policy_term(LC_BASE_ARG const lc_ctx *c) {
    return lc_i32(LC_BASE lc_column(LC_BASE c, COL_POLICY_TERM));
}
#define COL_POLICY_COUNT 4 /* float64 */
static inline const double *col_policy_count(LC_BASE_ARG const lc_ctx *c) {
    return lc_f64(LC_BASE lc_column(LC_BASE c, COL_POLICY_COUNT));
}
#define COL_SUM_ASSURED 5 /* float64 */
static inline const double *col_sum_assured(LC_BASE_ARG const lc_ctx *c) {
    return lc_f64(LC_BASE lc_column(LC_BASE c, COL_SUM_ASSURED));
}
#define COL_DURATION_MTH 6 /* int32 */
static inline const int32_t *col_duration_mth(LC_BASE_ARG const lc_ctx *c) {
    return lc_i32(LC_BASE lc_column(LC_BASE c, COL_DURATION_MTH));
}
#define COL_PREMIUM_PP 7 /* float64 */
static inline const double *col_premium_pp(LC_BASE_ARG const lc_ctx *c) {
    return lc_f64(LC_BASE lc_column(LC_BASE c, COL_PREMIUM_PP));
}

/* Tables, f64, row-major; origin(axis) is the label of index 0 on that axis. */
#define LC_N_TABLES 3
#define TABLE_MORTALITY 0
#define AXIS_MORTALITY_AGE 0
#define AXIS_MORTALITY_SELECT_YEAR 1
static inline const double *table_mortality(LC_BASE_ARG const lc_ctx *c) {
    return lc_f64(LC_BASE lc_table(LC_BASE c, TABLE_MORTALITY));
}
static inline int32_t table_mortality_origin(LC_BASE_ARG const lc_ctx *c, uint32_t axis) {
    return lc_table(LC_BASE c, TABLE_MORTALITY)->origin[axis];
}
static inline uint32_t table_mortality_size(LC_BASE_ARG const lc_ctx *c, uint32_t axis) {
    return lc_table(LC_BASE c, TABLE_MORTALITY)->shape[axis];
}
#define TABLE_LAPSE 1
#define AXIS_LAPSE_POLICY_YEAR 0
static inline const double *table_lapse(LC_BASE_ARG const lc_ctx *c) {
    return lc_f64(LC_BASE lc_table(LC_BASE c, TABLE_LAPSE));
}
static inline int32_t table_lapse_origin(LC_BASE_ARG const lc_ctx *c, uint32_t axis) {
    return lc_table(LC_BASE c, TABLE_LAPSE)->origin[axis];
}
static inline uint32_t table_lapse_size(LC_BASE_ARG const lc_ctx *c, uint32_t axis) {
    return lc_table(LC_BASE c, TABLE_LAPSE)->shape[axis];
}
#define TABLE_CURVE 2
#define AXIS_CURVE_YEAR 0
static inline const double *table_curve(LC_BASE_ARG const lc_ctx *c) {
    return lc_f64(LC_BASE lc_table(LC_BASE c, TABLE_CURVE));
}
static inline int32_t table_curve_origin(LC_BASE_ARG const lc_ctx *c, uint32_t axis) {
    return lc_table(LC_BASE c, TABLE_CURVE)->origin[axis];
}
static inline uint32_t table_curve_size(LC_BASE_ARG const lc_ctx *c, uint32_t axis) {
    return lc_table(LC_BASE c, TABLE_CURVE)->shape[axis];
}

/* Parameters, one 8-byte slot each. */
#define LC_N_PARAMS 9
#define PARAM_FEMALE_MULTIPLIER 0 /* float64 */
static inline double param_female_multiplier(LC_BASE_ARG const lc_ctx *c) {
    return lc_param_f64(LC_BASE c, PARAM_FEMALE_MULTIPLIER);
}
#define PARAM_EXPENSE_ACQ 1 /* float64 */
static inline double param_expense_acq(LC_BASE_ARG const lc_ctx *c) {
    return lc_param_f64(LC_BASE c, PARAM_EXPENSE_ACQ);
}
#define PARAM_EXPENSE_MAINT 2 /* float64 */
static inline double param_expense_maint(LC_BASE_ARG const lc_ctx *c) {
    return lc_param_f64(LC_BASE c, PARAM_EXPENSE_MAINT);
}
#define PARAM_INFLATION 3 /* float64 */
static inline double param_inflation(LC_BASE_ARG const lc_ctx *c) {
    return lc_param_f64(LC_BASE c, PARAM_INFLATION);
}
#define PARAM_COMMISSION_RATE 4 /* float64 */
static inline double param_commission_rate(LC_BASE_ARG const lc_ctx *c) {
    return lc_param_f64(LC_BASE c, PARAM_COMMISSION_RATE);
}
#define PARAM_PREMIUM_LOADING 5 /* float64 */
static inline double param_premium_loading(LC_BASE_ARG const lc_ctx *c) {
    return lc_param_f64(LC_BASE c, PARAM_PREMIUM_LOADING);
}
#define PARAM_DYN_LAPSE_BETA 6 /* float64 */
static inline double param_dyn_lapse_beta(LC_BASE_ARG const lc_ctx *c) {
    return lc_param_f64(LC_BASE c, PARAM_DYN_LAPSE_BETA);
}
#define PARAM_DYN_LAPSE_LO 7 /* float64 */
static inline double param_dyn_lapse_lo(LC_BASE_ARG const lc_ctx *c) {
    return lc_param_f64(LC_BASE c, PARAM_DYN_LAPSE_LO);
}
#define PARAM_DYN_LAPSE_HI 8 /* float64 */
static inline double param_dyn_lapse_hi(LC_BASE_ARG const lc_ctx *c) {
    return lc_param_f64(LC_BASE c, PARAM_DYN_LAPSE_HI);
}

/* Scenario inputs, f64 [n_scen][stride], stride ≥ n_months. */
#define LC_N_SCENARIO_INPUTS 1
#define SCEN_RATES 0
static inline const double *scen_rates(LC_BASE_ARG const lc_ctx *c) {
    return lc_f64(LC_BASE lc_scenario_input(LC_BASE c, SCEN_RATES));
}
static inline uint32_t scen_rates_stride(LC_BASE_ARG const lc_ctx *c) {
    return lc_scenario_input(LC_BASE c, SCEN_RATES)->shape[1];
}

/* Outputs: k of partials[b][k][s], in the model's order. */
#define OUT_PREMIUMS 0
#define OUT_CLAIMS 1
#define OUT_EXPENSES 2
#define OUT_COMMISSIONS 3
#define OUT_NET_CF 4
#define LC_N_OUTPUTS 5
#define LC_PRIMARY_OUTPUT OUT_NET_CF

/* Monthly outputs: m of cash_flows[b][m][s][t], the outputs declared monthly in their order. */
#define MONTHLY_PREMIUMS 0
#define MONTHLY_CLAIMS 1
#define MONTHLY_EXPENSES 2
#define MONTHLY_COMMISSIONS 3
#define MONTHLY_NET_CF 4
#define LC_N_MONTHLY 5

/* The digest of the layout above (services/valuation/sdk/digest.py), exported so that the
 * package validator can tell a binary compiled for another declaration. Weak: a model of
 * several C files defines it once. */
#define LC_INTERFACE_DIGEST 0x9cd4b9e9u
LC_EXPORT(lc_interface_digest) __attribute__((weak)) uint32_t lc_interface_digest(void) { return LC_INTERFACE_DIGEST; }

/* What lc_run_blocks writes besides the partials (LC_FEATURE_ROW_VALUES, LC_FEATURE_CASH_FLOWS of
 * livecalc_model.h): define LC_FEATURES before including this header in a model that writes
 * them; without it the export says 0 (partials only: the engine then values one row per run
 * for row values, and refuses cash flows). Weak: a model of several C files defines it once. */
#ifndef LC_FEATURES
#define LC_FEATURES 0
#endif
LC_EXPORT(lc_features) __attribute__((weak)) int32_t lc_features(void) { return LC_FEATURES; }

/* LC_OK when the context is of ABI v2 and lays out this declaration; LC_E_ABI otherwise. */
static inline int32_t interface_check(LC_BASE_ARG const lc_ctx *c) {
    if (lc_check_context(c) != LC_OK) return LC_E_ABI;
    if (c->n_columns != LC_N_COLUMNS || c->n_tables != LC_N_TABLES || c->n_params != LC_N_PARAMS ||
        c->n_scenario_inputs != LC_N_SCENARIO_INPUTS || c->n_outputs != LC_N_OUTPUTS)
        return LC_E_ABI;
    if (c->cash_flows && c->n_monthly != LC_N_MONTHLY) return LC_E_ABI;
    if (!lc_column_is(LC_BASE c, COL_POLICY_ID, LC_INT64)) return LC_E_ABI;
    if (!lc_column_is(LC_BASE c, COL_AGE_AT_ENTRY, LC_INT32)) return LC_E_ABI;
    if (!lc_column_is(LC_BASE c, COL_SEX, LC_CATEGORY)) return LC_E_ABI;
    if (!lc_column_is(LC_BASE c, COL_POLICY_TERM, LC_INT32)) return LC_E_ABI;
    if (!lc_column_is(LC_BASE c, COL_POLICY_COUNT, LC_FLOAT64)) return LC_E_ABI;
    if (!lc_column_is(LC_BASE c, COL_SUM_ASSURED, LC_FLOAT64)) return LC_E_ABI;
    if (!lc_column_is(LC_BASE c, COL_DURATION_MTH, LC_INT32)) return LC_E_ABI;
    if (!lc_column_is(LC_BASE c, COL_PREMIUM_PP, LC_FLOAT64)) return LC_E_ABI;
    if (!lc_table_is(LC_BASE c, TABLE_MORTALITY, 2)) return LC_E_ABI;
    if (!lc_table_is(LC_BASE c, TABLE_LAPSE, 1)) return LC_E_ABI;
    if (!lc_table_is(LC_BASE c, TABLE_CURVE, 1)) return LC_E_ABI;
    if (!lc_scenario_input_is(LC_BASE c, SCEN_RATES)) return LC_E_ABI;
    return LC_OK;
}

#endif
