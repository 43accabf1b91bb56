/*
 * normals: docs/model.md's counter-based standard normals Z_s(m) as a scenario set.
 *
 * A scenario generator of model ABI v2 (docs/model-interface.md), like esg: no rows, columns,
 * tables or outputs; its parameters are the job's scenario settings (seed, a, sigma,
 * include_base: a and sigma play no part) and its one scenario input is the buffer it fills,
 * Z_s(m) for m = 0 … n_months−1. These are the draws esg's Ornstein–Uhlenbeck recursion
 * consumes (the same seed gives the same Z), for a model that applies its own dynamics to them
 * (lifelib's savings model reads them as std_norm).
 *
 * Row s depends only on (seed, s, include_base): a scenario produced alone equals the same
 * scenario among any others, and threads may split the scenario range any way they like.
 * With include_base, scenario 0 is all zeros (the deterministic base).
 */
#include <math.h>
#include <stdint.h>

#include "livecalc_model.h"

static inline uint64_t mix(uint64_t z) {
    z ^= z >> 30;
    z *= 0xBF58476D1CE4E5B9ULL;
    z ^= z >> 27;
    z *= 0x94D049BB133111EBULL;
    z ^= z >> 31;
    return z;
}

/* U(seed, s, k) = ((bits >> 11) + 0.5)·2^−53 with bits = mix(mix(seed) ^ mix((s << 32 | k) + φ64)). */
static inline double uniform(uint64_t seed_mixed, uint64_t s, uint64_t k) {
    uint64_t counter = ((s & 0xFFFFFFFFULL) << 32) | (k & 0xFFFFFFFFULL);
    uint64_t bits = mix(seed_mixed ^ mix(counter + 0x9E3779B97F4A7C15ULL));
    return ((double)(bits >> 11) + 0.5) * 0x1p-53;
}

/* One scenario row: pair j = ⌊m/2⌋ by Box–Muller, Z(2j) = ρ·cos(2π·u2), Z(2j+1) = ρ·sin(2π·u2). */
static void scenario(double *restrict out, uint32_t n_months, uint64_t seed_mixed, uint64_t s) {
    for (uint32_t m = 0; m < n_months; m += 2) {
        uint64_t j = m / 2;
        double u1 = uniform(seed_mixed, s, 2 * j);
        double u2 = uniform(seed_mixed, s, 2 * j + 1);
        double rho = sqrt(-2.0 * log(u1));
        double angle = 2.0 * M_PI * u2;
        out[m] = rho * cos(angle);
        if (m + 1 < n_months) out[m + 1] = rho * sin(angle);
    }
}

LC_EXPORT(lc_abi_version) int32_t lc_abi_version(void) { return LC_ABI_VERSION; }

/* A scenario generator of ABI v2: fills rows [s_begin, s_end) of its one scenario input
 * (f64 [n_scen][stride], months [0, n_months)) from the parameters seed (u64) and
 * include_base (i64). */
LC_EXPORT(lc_prepare_scenarios)
int32_t lc_prepare_scenarios(LC_BASE_ARG uint32_t ctx_off, uint32_t s_begin, uint32_t s_end) {
    const lc_ctx *ctx = lc_context(LC_BASE ctx_off);
    if (ctx->abi_version != LC_ABI_VERSION || ctx->n_params != LC_GEN_N_PARAMS || ctx->n_scenario_inputs != 1 ||
        !lc_scenario_input_is(LC_BASE ctx, 0))
        return LC_E_ABI;
    if (s_begin > s_end || s_end > ctx->n_scen) return LC_E_RANGE;
    const lc_array *out = lc_scenario_input(LC_BASE ctx, 0);
    double *z = lc_f64_out(LC_BASE out);
    uint32_t stride = out->shape[1];
    int64_t include_base = lc_param_i64(LC_BASE ctx, LC_GEN_INCLUDE_BASE);
    uint64_t seed_mixed = mix(lc_param_u64(LC_BASE ctx, LC_GEN_SEED));
    for (uint32_t s = s_begin; s < s_end; s++) {
        double *row = z + (uint64_t)s * stride;
        if (s == 0 && include_base) {
            for (uint32_t m = 0; m < ctx->n_months; m++) row[m] = 0.0;
        } else {
            scenario(row, ctx->n_months, seed_mixed, s);
        }
    }
    return LC_OK;
}
