/*
 * livecalc_model.h: the model ABI shared by the shipped C models (esg.c, term_life.c).
 *
 * A model is a wasm32 module that imports one shared memory as `env.memory` and nothing
 * else. The host lays out every buffer in that memory and hands a model a *context*: a
 * little-endian struct at a 16-byte aligned address whose fields are scalars and u32 byte
 * offsets into the memory. The same C also builds as a native shared library for the
 * benchmark baseline; there an offset is relative to a base pointer passed first.
 * docs/model-abi.md is the prose version of this file.
 */
#ifndef LIVECALC_MODEL_H
#define LIVECALC_MODEL_H

#include <stdint.h>

#define LC_ABI_VERSION 1
#define LC_BLOCK 1024 /* B: policies per block of the reference summation order */

/* Return codes of every entry point (0 = success). */
#define LC_OK 0
#define LC_E_ABI 1       /* context written for another ABI version */
#define LC_E_RANGE 2     /* a row, block or scenario range outside the context's sizes */
#define LC_E_TABLE 3     /* a policy needs an age, year or month the tables do not cover */

#if defined(__wasm__)
#define LC_EXPORT(name) __attribute__((export_name(#name), visibility("default")))
#define LC_BASE_ARG
#define LC_AT(type, off) ((type *)(uintptr_t)(off))
#else
#define LC_EXPORT(name) __attribute__((visibility("default")))
#define LC_BASE_ARG uint8_t *lc_base,
#define LC_AT(type, off) ((type *)(lc_base + (off)))
#endif

/* esg: r_s(m) for scenarios [s_begin, s_end) and months [0, n_months). */
typedef struct lc_esg_ctx {
    uint32_t abi_version;  /* LC_ABI_VERSION */
    uint32_t n_scen;       /* N: scenarios in the set */
    uint32_t n_months;     /* months per scenario row of `rates` */
    uint32_t include_base; /* 1: scenario 0 is the base curve (r ≡ 0) */
    uint64_t seed;         /* generator seed */
    double a;              /* Ornstein–Uhlenbeck mean reversion per year */
    double sigma;          /* annual volatility of the shock */
    uint32_t rates;        /* out: f64 [n_scen][n_months], scenario-major */
    uint32_t reserved;
} lc_esg_ctx;
_Static_assert(sizeof(lc_esg_ctx) == 48, "lc_esg_ctx layout is part of the ABI");

/* term_life: policies × scenarios → block partials of the five present values. */
typedef struct lc_tl_ctx {
    uint32_t abi_version;  /* LC_ABI_VERSION */
    uint32_t n_rows;       /* policies loaded (rows 0..n_rows-1; block b = rows [bB, bB+B)) */
    uint32_t n_scen;       /* N */
    uint32_t n_months;     /* T: months of the scenario tables, ≥ every policy's M */
    uint32_t n_ages;       /* mortality table rows */
    uint32_t n_sel;        /* mortality table columns: S + 1 (last = ultimate) */
    uint32_t min_age;      /* attained age of mortality row 0 */
    uint32_t n_lapse;      /* lapse rates by policy year (last carried forward) */
    uint32_t n_curve;      /* annual zero-spot rates z[k] */
    uint32_t rates_stride; /* months per scenario row of `rates` (≥ n_months) */
    /* policy columns, n_rows each */
    uint32_t age_at_entry; /* i32 */
    uint32_t female;       /* i32: 1 = F, 0 = M */
    uint32_t policy_term;  /* i32, years */
    uint32_t duration_mth; /* i32 */
    uint32_t policy_count; /* f64 */
    uint32_t sum_assured;  /* f64 */
    uint32_t premium_pp;   /* f64, ≤ 0 or NaN: computed */
    uint32_t premium_eff;  /* out f64: the premium used */
    /* assumptions */
    uint32_t mortality;    /* f64 [n_ages][n_sel] annual q */
    uint32_t lapse;        /* f64 [n_lapse] annual rates */
    uint32_t curve;        /* f64 [n_curve] */
    uint32_t rates;        /* in f64 [n_scen][rates_stride]: r_s(t) from the esg */
    /* workspace written by the model (sizes: docs/model-abi.md) */
    uint32_t q_mth;        /* f64 [2][n_ages][n_sel] */
    uint32_t l_base;       /* f64 [n_lapse] */
    uint32_t df0;          /* f64 [n_months] */
    uint32_t maint_infl;   /* f64 [n_months]: maint/12·(1+infl)^(t/12) */
    uint32_t disc;         /* f64 [groups][n_months][LANES]: DF_s(t) */
    uint32_t dlap;         /* f64 [groups][n_months][LANES]: dl(t, s) */
    uint32_t partials;     /* out f64 [blocks][5][n_scen] */
    uint32_t reserved;
    double female_multiplier;
    double expense_acq;
    double expense_maint;
    double inflation;
    double commission_rate;
    double premium_loading;
    double dyn_lapse_beta;
    double dyn_lapse_lo;
    double dyn_lapse_hi;
} lc_tl_ctx;
_Static_assert(sizeof(lc_tl_ctx) == 30 * 4 + 9 * 8, "lc_tl_ctx layout is part of the ABI");

/* Components of a block partial, in this order. */
#define LC_PV_PREMIUMS 0
#define LC_PV_CLAIMS 1
#define LC_PV_EXPENSES 2
#define LC_PV_COMMISSIONS 3
#define LC_PV_NET_CF 4
#define LC_N_PV 5

#endif
