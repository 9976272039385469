/* The element-wise CPU kernels (engine/cpu/vector_ops*) against float64, on
 * every instruction set this CPU runs: exp over its whole range and its
 * special values, silu(g) * u, RMSNorm with and without weight, add; every
 * length from 0 to 70 (ragged tails), unaligned rows, in place. */
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/vector_ops.h"
#include "tap.h"

static const char *isa_label(cpu_isa isa)
{
    return isa == CPU_ISA_AVX512 ? "avx512" : isa == CPU_ISA_AVX2 ? "avx2" : "scalar";
}

typedef struct rng {
    uint64_t s;
} rng;

static double uniform(rng *r)   /* [-1, 1) */
{
    r->s = r->s * 6364136223846793005ULL + 1442695040888963407ULL;
    return (double)(r->s >> 11) / (double)(1ULL << 52) - 1.0;
}

static double rel_err(double got, double want)
{
    if (got == want)
        return 0.0;
    return fabs(got - want) / fabs(want);
}

static void test_exp(const cpu_vector_ops *ops)
{
    const char *name = isa_label(ops->isa);
    /* Every float step of 1/1024 over the range with normal results, plus
     * random points; +1 element so the tail path is in it too. */
    size_t n = (size_t)((88.7 + 87.33) * 1024) + 20001;
    float *x = malloc(sizeof(float) * n), *y = malloc(sizeof(float) * n);
    rng r = { 3 };
    size_t i = 0;
    for (double v = -87.33; v < 88.7 && i < n; v += 1.0 / 1024)
        x[i++] = (float)v;
    while (i < n)
        x[i++] = (float)(88.0 * uniform(&r));
    ops->exp(y, x, n);
    double worst = 0.0;
    float worst_x = 0.0f;
    for (i = 0; i < n; i++) {
        double want = exp((double)x[i]);
        if (want < FLT_MIN || want > FLT_MAX)
            continue;
        double e = rel_err(y[i], want);
        if (e > worst)
            worst = e, worst_x = x[i];
    }
    tap_ok(worst <= 2e-7, "%s: exp within 2e-7 relative over [-87.33, 88.7] "
           "(worst %.3g at %.6g)", name, worst, worst_x);

    float special[] = { -INFINITY, -1e30f, -104.0f, -88.0f, -87.34f, 0.0f, -0.0f,
                        88.73f, 89.0f, 1e30f, INFINITY, NAN };
    float out[12];
    ops->exp(out, special, 12);
    int ok = 1;
    for (int j = 0; j < 5; j++)
        ok &= out[j] == 0.0f && !signbit(out[j]);
    ok &= out[5] == 1.0f && out[6] == 1.0f;
    for (int j = 7; j < 11; j++)
        ok &= isinf(out[j]) && out[j] > 0;
    ok &= isnan(out[11]);
    tap_ok(ok, "%s: exp gives exactly 0 below ln(FLT_MIN) and for -inf, 1 at 0, "
           "+inf past 88.72, NaN for NaN", name);

    /* Same value whatever the element's place in the row (body or tail). */
    int same = 1;
    for (size_t len = 0; len <= 70; len++) {
        float in[71], a[71], b[71];
        for (size_t j = 0; j < len; j++)
            in[j] = (float)(20.0 * uniform(&r));
        ops->exp(a, in, len);
        for (size_t j = 0; j < len; j++) {
            ops->exp(b, in + j, 1);
            same &= memcmp(&a[j], &b[0], sizeof(float)) == 0;
        }
    }
    tap_ok(same, "%s: exp rows of every length 0..70 agree element by element", name);
    free(x);
    free(y);
}

static void test_silu_mul(const cpu_vector_ops *ops)
{
    const char *name = isa_label(ops->isa);
    rng r = { 11 };
    double worst = 0.0;
    int finite = 1;
    for (size_t len = 0; len <= 70; len++) {
        /* +1: rows that start off a 16-byte boundary. */
        float g[72], u[72], out[72];
        for (size_t j = 0; j < len; j++) {
            g[j + 1] = (float)(20.0 * uniform(&r));
            u[j + 1] = (float)(3.0 * uniform(&r));
        }
        if (len > 3)
            g[1] = -100.0f, g[2] = 100.0f, g[3] = 0.0f;
        ops->silu_mul(out + 1, g + 1, u + 1, len);
        for (size_t j = 1; j <= len; j++) {
            double gd = g[j];
            double want = gd / (1.0 + exp(-gd)) * u[j];
            finite &= isfinite(out[j]);
            /* (silu(-100) is 4e-42: below float's normal range) */
            worst = fmax(worst, fabs(out[j] - want) / (fabs(want) + 1e-30));
        }
    }
    tap_ok(worst <= 1e-6 && finite, "%s: silu(g) * u within 1e-6 relative, "
           "g from -100 to 100 (worst %.3g)", name, worst);

    float g[37], u[37], ref[37];
    for (int j = 0; j < 37; j++) {
        g[j] = (float)(5.0 * uniform(&r));
        u[j] = (float)uniform(&r);
    }
    ops->silu_mul(ref, g, u, 37);
    ops->silu_mul(g, g, u, 37);
    int same = memcmp(g, ref, sizeof g) == 0;
    for (int j = 0; j < 37; j++)
        g[j] = (float)(5.0 * uniform(&r));
    ops->silu_mul(ref, g, u, 37);
    ops->silu_mul(u, g, u, 37);
    same &= memcmp(u, ref, sizeof u) == 0;
    tap_ok(same, "%s: silu_mul in place over gate or up", name);
}

static void test_rmsnorm(const cpu_vector_ops *ops)
{
    const char *name = isa_label(ops->isa);
    static const size_t lengths[] = { 1, 2, 7, 15, 16, 17, 63, 64, 65, 384, 1000, 2048, 4099 };
    rng r = { 17 };
    double worst = 0.0;
    int in_place = 1;
    for (size_t li = 0; li < sizeof lengths / sizeof lengths[0]; li++) {
        size_t n = lengths[li];
        float *x = malloc(sizeof(float) * (n + 1)), *w = malloc(sizeof(float) * (n + 1));
        float *out = malloc(sizeof(float) * (n + 1));
        for (size_t j = 0; j <= n; j++) {
            x[j] = (float)(3.0 * uniform(&r));
            w[j] = (float)(1.0 + 0.5 * uniform(&r));
        }
        if (n > 5)
            x[5] = 300.0f;   /* an outlier dominating the mean of squares */
        for (int with_w = 0; with_w < 2; with_w++) {
            /* rows off alignment: x + 1 */
            const float *xs = x + 1, *ws = with_w ? w + 1 : NULL;
            ops->rmsnorm(out, xs, ws, n, 1e-5f);
            double ss = 0.0;
            for (size_t j = 0; j < n; j++)
                ss += (double)xs[j] * xs[j];
            double inv = 1.0 / sqrt(ss / (double)n + 1e-5);
            for (size_t j = 0; j < n; j++) {
                double want = xs[j] * inv * (ws ? ws[j] : 1.0);
                worst = fmax(worst, fabs(out[j] - want) / (fabs(want) + 1e-30));
            }
            float *copy = malloc(sizeof(float) * n);
            memcpy(copy, xs, sizeof(float) * n);
            ops->rmsnorm(copy, copy, ws, n, 1e-5f);
            in_place &= memcmp(copy, out, sizeof(float) * n) == 0;
            free(copy);
        }
        free(x);
        free(w);
        free(out);
    }
    tap_ok(worst <= 1e-5, "%s: rmsnorm within 1e-5 relative, lengths 1..4099, "
           "with and without weight (worst %.3g)", name, worst);
    tap_ok(in_place, "%s: rmsnorm in place", name);

    float zeros[20] = { 0 }, o[20];
    ops->rmsnorm(o, zeros, NULL, 20, 1e-6f);
    int ok = 1;
    for (int j = 0; j < 20; j++)
        ok &= o[j] == 0.0f;
    o[0] = 7.0f;
    ops->rmsnorm(o, zeros, NULL, 0, 1e-6f);
    tap_ok(ok && o[0] == 7.0f, "%s: rmsnorm of zeros is zeros (eps keeps it finite); "
           "of nothing, nothing", name);
}

static void test_add(const cpu_vector_ops *ops)
{
    rng r = { 23 };
    int ok = 1;
    for (size_t len = 0; len <= 70; len++) {
        float y[71], x[71], want[71];
        for (size_t j = 0; j < len; j++) {
            y[j] = (float)uniform(&r);
            x[j] = (float)uniform(&r);
            want[j] = y[j] + x[j];
        }
        ops->add(y, x, len);
        ok &= memcmp(y, want, sizeof(float) * len) == 0;
    }
    tap_ok(ok, "%s: add, lengths 0..70, exact", isa_label(ops->isa));
}

int main(void)
{
    const cpu_isa all[] = { CPU_ISA_SCALAR, CPU_ISA_AVX2, CPU_ISA_AVX512 };
    int ran = 0;
    for (int i = 0; i < 3; i++) {
        const cpu_vector_ops *ops = cpu_vector_ops_for(all[i]);
        if (!ops) {
            tap_diag("%s: not run (this CPU lacks it)", isa_label(all[i]));
            continue;
        }
        tap_ok(ops->isa == all[i], "%s: table for the ISA asked", isa_label(all[i]));
        test_exp(ops);
        test_silu_mul(ops);
        test_rmsnorm(ops);
        test_add(ops);
        ran++;
    }
    tap_ok(ran >= 1 && cpu_vector_ops_for(CPU_ISA_SCALAR), "the scalar kernels always run");
    tap_ok(cpu_vector_ops_for((cpu_isa)42) == NULL, "an unknown ISA has no table");
    return tap_done();
}
