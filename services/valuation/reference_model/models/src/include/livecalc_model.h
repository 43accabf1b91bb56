/*
 * livecalc_model.h: model ABI version 2, generic (docs/model-interface.md "ABI v2").
 *
 * A model is a wasm32 module that imports one shared memory as `env.memory` and nothing
 * else. The host lays out every buffer in that memory and hands each entry point the byte
 * offset of a *context* (`lc_ctx`): sizes, and the offsets of descriptors (`lc_array`) of the
 * policy columns, tables and scenario inputs the model's declaration names, of its parameter
 * slots, workspace and block partials. Nothing here knows a product: a model's
 * `model_interface.h`, generated from its declaration, names these arrays
 * (`col_age_at_entry(c)`, `table_mortality(c)`, `OUT_NET_CF`, ...).
 *
 * The same C also builds as a native shared library (the benchmark baseline); there every
 * entry point takes the memory's base address first and an offset is relative to it. Write
 * `LC_BASE_ARG` first in the parameters of any function that reads the memory and `LC_BASE`
 * first in the arguments of a call to one; `LC_AT(type, offset)` is the pointer.
 */
#ifndef LIVECALC_MODEL_H
#define LIVECALC_MODEL_H

#include <stddef.h>
#include <stdint.h>

#define LC_ABI_VERSION 2
#define LC_BLOCK 1024 /* B: rows per block of the reference summation order */

/* Statuses of every entry point (0 = success; 16 and above are the model's own). */
#define LC_OK 0
#define LC_E_ABI 1   /* a context of another ABI version, or one that does not match the declaration */
#define LC_E_RANGE 2 /* a row, block or scenario range outside the context's sizes */
#define LC_E_TABLE 3 /* a row needs table values the tables do not cover */
#define LC_E_INPUT 4 /* a row's input the model cannot value */

/* lc_array.type */
#define LC_INT32 1
#define LC_INT64 2
#define LC_FLOAT64 3
#define LC_CATEGORY 4 /* int32 codes 0, 1, ... in the declared order of the values */

/* A scenario generator's parameter slots (the job's scenario settings). */
#define LC_GEN_SEED 0         /* u64 */
#define LC_GEN_A 1            /* f64: mean reversion per year */
#define LC_GEN_SIGMA 2        /* f64: annual volatility */
#define LC_GEN_INCLUDE_BASE 3 /* i64: 1 = scenario 0 is the base curve */
#define LC_GEN_N_PARAMS 4

#if defined(__wasm__)
#define LC_EXPORT(name) __attribute__((export_name(#name), visibility("default")))
#define LC_BASE_ARG
#define LC_BASE
#define LC_AT(type, off) ((type *)(uintptr_t)(off))
#else
#define LC_EXPORT(name) __attribute__((visibility("default")))
#define LC_BASE_ARG uint8_t *lc_base,
#define LC_BASE lc_base,
#define LC_AT(type, off) ((type *)(lc_base + (off)))
#endif

/* An array in the memory: a policy column [n_rows], a table (row-major, origin = first
 * label of each axis) or a scenario input [n_scen][stride]. */
typedef struct lc_array {
    uint32_t offset;    /* byte offset of element 0 */
    uint32_t type;      /* LC_INT32, LC_INT64, LC_FLOAT64, LC_CATEGORY */
    uint32_t ndim;      /* 1..4 */
    uint32_t reserved;
    uint32_t shape[4];  /* unused dimensions 1 */
    int32_t origin[4];  /* a table axis' first label; 0 elsewhere */
} lc_array;
_Static_assert(sizeof(lc_array) == 48, "lc_array layout is part of the ABI");
_Static_assert(offsetof(lc_array, shape) == 16 && offsetof(lc_array, origin) == 32, "lc_array layout");

/* The context of a run: 128 bytes, little-endian, at a 16-byte aligned offset. */
typedef struct lc_ctx {
    uint32_t abi_version;       /* LC_ABI_VERSION */
    uint32_t n_rows;            /* rows loaded; row 0 is the first row of a block */
    uint32_t n_scen;            /* N */
    uint32_t n_months;          /* T: ≥ every row's horizon; scenario rows hold ≥ T months */
    uint32_t block_size;        /* LC_BLOCK */
    uint32_t n_columns;
    uint32_t columns;           /* lc_array [n_columns], declaration order */
    uint32_t n_tables;
    uint32_t tables;            /* lc_array [n_tables] */
    uint32_t n_params;
    uint32_t params;            /* 8-byte slots: f64, or i64/u64 for whole-number parameters */
    uint32_t n_scenario_inputs;
    uint32_t scenario_inputs;   /* lc_array [n_scenario_inputs]: f64 [n_scen][stride] */
    uint32_t n_outputs;
    uint32_t partials;          /* f64 [blocks][n_outputs][n_scen]; 0 for a generator */
    uint32_t workspace;         /* 16-byte aligned; 0 when workspace_bytes is 0 */
    uint32_t workspace_bytes;
    uint32_t first_row;         /* dataset row of row 0 (information only) */
    uint32_t row_values;        /* f64 [n_rows][n_outputs][n_scen]; 0 when the run does not ask */
    uint32_t cash_flows;        /* f64 [blocks][n_monthly][n_scen][n_months + 1]; 0 when not asked */
    uint32_t n_monthly;         /* outputs declared monthly (declaration order among the outputs) */
    uint32_t reserved[11];
} lc_ctx;
_Static_assert(sizeof(lc_ctx) == 128, "lc_ctx layout is part of the ABI");
_Static_assert(offsetof(lc_ctx, block_size) == 16 && offsetof(lc_ctx, columns) == 24, "lc_ctx layout");
_Static_assert(offsetof(lc_ctx, params) == 40 && offsetof(lc_ctx, scenario_inputs) == 48, "lc_ctx layout");
_Static_assert(offsetof(lc_ctx, partials) == 56 && offsetof(lc_ctx, first_row) == 68, "lc_ctx layout");
_Static_assert(offsetof(lc_ctx, row_values) == 72 && offsetof(lc_ctx, cash_flows) == 76, "lc_ctx layout");
_Static_assert(offsetof(lc_ctx, n_monthly) == 80 && offsetof(lc_ctx, reserved) == 84, "lc_ctx layout");

/* What a projection writes besides its block partials, when the host asks (`lc_features()`, an
 * optional export: a model without it writes partials only, and the host values one row per run
 * to get row values):
 *   LC_FEATURE_ROW_VALUES  with ctx->row_values ≠ 0, lc_run_blocks also writes each row of its
 *                          blocks: row_values[i][k][s], the value whose sum over the block's rows
 *                          in row order from +0.0 is partials[b][k][s], bit for bit;
 *   LC_FEATURE_CASH_FLOWS  with ctx->cash_flows ≠ 0, lc_run_blocks also writes each of its blocks'
 *                          cash flows by month: cash_flows[b][m][s][t], the sum over the block's
 *                          rows in row order from +0.0 of the row's undiscounted cash flow of
 *                          monthly output m (MONTHLY_NAME) at t months from the valuation date,
 *                          t = 0 … n_months (a flow the model discounts with DF(t) is at t; entry
 *                          n_months holds flows at the horizon itself, such as a maturity); a
 *                          month no row has a flow in is 0. */
#define LC_FEATURE_ROW_VALUES 1
#define LC_FEATURE_CASH_FLOWS 2

static inline const lc_ctx *lc_context(LC_BASE_ARG uint32_t ctx_off) { return LC_AT(const lc_ctx, ctx_off); }

/* Descriptor i of each kind (no bounds check: check the counts once per call). */
static inline const lc_array *lc_column(LC_BASE_ARG const lc_ctx *c, uint32_t i) {
    return LC_AT(const lc_array, c->columns) + i;
}
static inline const lc_array *lc_table(LC_BASE_ARG const lc_ctx *c, uint32_t i) {
    return LC_AT(const lc_array, c->tables) + i;
}
static inline const lc_array *lc_scenario_input(LC_BASE_ARG const lc_ctx *c, uint32_t i) {
    return LC_AT(const lc_array, c->scenario_inputs) + i;
}

/* Parameter slot i as its declared type. */
static inline double lc_param_f64(LC_BASE_ARG const lc_ctx *c, uint32_t i) { return LC_AT(const double, c->params)[i]; }
static inline int64_t lc_param_i64(LC_BASE_ARG const lc_ctx *c, uint32_t i) { return LC_AT(const int64_t, c->params)[i]; }
static inline uint64_t lc_param_u64(LC_BASE_ARG const lc_ctx *c, uint32_t i) {
    return LC_AT(const uint64_t, c->params)[i];
}

/* An array's elements. */
static inline const int32_t *lc_i32(LC_BASE_ARG const lc_array *a) { return LC_AT(const int32_t, a->offset); }
static inline const int64_t *lc_i64(LC_BASE_ARG const lc_array *a) { return LC_AT(const int64_t, a->offset); }
static inline const double *lc_f64(LC_BASE_ARG const lc_array *a) { return LC_AT(const double, a->offset); }
static inline double *lc_f64_out(LC_BASE_ARG const lc_array *a) { return LC_AT(double, a->offset); } /* a generator's */

static inline double *lc_partials(LC_BASE_ARG const lc_ctx *c) { return LC_AT(double, c->partials); }
/* Row values and cash flows (LC_FEATURE_*): NULL when the run does not ask for them. */
static inline double *lc_row_values(LC_BASE_ARG const lc_ctx *c) { return c->row_values ? LC_AT(double, c->row_values) : 0; }
static inline double *lc_cash_flows(LC_BASE_ARG const lc_ctx *c) { return c->cash_flows ? LC_AT(double, c->cash_flows) : 0; }
static inline uint32_t lc_cash_flow_months(const lc_ctx *c) { return c->n_months + 1; } /* t = 0 … n_months */
static inline uint8_t *lc_workspace(LC_BASE_ARG const lc_ctx *c) { return LC_AT(uint8_t, c->workspace); }
static inline uint32_t lc_blocks(const lc_ctx *c) { return (c->n_rows + LC_BLOCK - 1) / LC_BLOCK; }

/* Checks of a context against what a model expects (model_interface.h's interface_check uses
 * them with the declaration's counts and types). */
static inline int32_t lc_check_context(const lc_ctx *c) { /* a projection's context is of this ABI */
    return c->abi_version == LC_ABI_VERSION && c->block_size == LC_BLOCK ? LC_OK : LC_E_ABI;
}
static inline int lc_column_is(LC_BASE_ARG const lc_ctx *c, uint32_t i, uint32_t type) {
    const lc_array *a = lc_column(LC_BASE c, i);
    return a->type == type && a->ndim == 1 && a->shape[0] >= c->n_rows;
}
static inline int lc_table_is(LC_BASE_ARG const lc_ctx *c, uint32_t i, uint32_t ndim) {
    const lc_array *a = lc_table(LC_BASE c, i);
    return a->type == LC_FLOAT64 && a->ndim == ndim;
}
static inline int lc_scenario_input_is(LC_BASE_ARG const lc_ctx *c, uint32_t i) {
    const lc_array *a = lc_scenario_input(LC_BASE c, i);
    return a->type == LC_FLOAT64 && a->ndim == 2 && a->shape[0] >= c->n_scen && a->shape[1] >= c->n_months;
}

#endif
