/* The CPU matrix kernels against a float64 reference, on every instruction
 * set this CPU runs: quantized (2/4/8 bits, groups 32/64/128, scales
 * BF16/F16/F32) and dense (F32/F16/BF16) weights, 1 to 64 tokens, odd row
 * ranges, row splits, strides, partial chunks, cpu_weight_row and the
 * validation of weights.
 *
 * Tolerance: 2e-5 * sum|W x| + 1e-6 for the fp32 accumulation, plus, for
 * the integer kernels (AVX-512, activations quantized per group to 16 or,
 * as an experiment, 8 bits), the bound of the activation rounding: each x is off by at most
 * dx_g / 2 = max|x_g| / (2 xq_max), so the result by at most
 * sum_g max|x_g| / (2 xq_max) * sum_(c in g) |s_g q_c| (1% added for the
 * fp32 rounding of x / dx_g; see fixture_activation_bound). The biases meet
 * the sums of the exact x, so only |s q| enters, not |W|. The activations
 * hold 50x outliers, so a group's small values lose the most.
 *
 * 4-bit weights also run repacked (cpu_matmul_pack) where the ISA has a
 * packed kernel ("avx512 packed"), held to the same tolerance; and for the
 * kernels speculative decoding uses, a token's result must not depend on
 * the number of tokens in the pass (bit for bit). */
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cpu/matmul.h"
#include "kernels/kernel_fixtures.h"
#include "tap.h"

static const int token_counts[] = { 1, 2, 3, 5, 8, 17, 64 };
#define N_TOKEN_COUNTS (int)(sizeof token_counts / sizeof token_counts[0])
#define MAX_TOK 64

typedef struct isa_set {
    const cpu_kernels *k[5];
    int n;
} isa_set;

/* The largest |xq| of the integer kernels (matmul_avx512_quant.c, xq_max),
 * by activation bits; 0: fp32 activations, no rounding. */
static double xq_max_for(int bits)
{
    return bits == 8 ? 127.0 : bits == 16 ? 32600.0 : 0.0;
}

/* Weight of the activation bound in the tolerance of k on w (the 8-bit
 * variant applies to 4-bit weights only; others take 16 bits). */
static double act_weight(const cpu_kernels *k, const alm_weight *w)
{
    int bits = cpu_kernels_activation_bits(k);
    if (bits == 8 && w->bits != 4)
        bits = 16;
    double q = xq_max_for(bits);
    return q > 0.0 ? 1.01 / q : 0.0;
}

/* A copy of w that uses a packed copy of its data (cpu_matmul_pack), in
 * *buf (freed by the caller); 0 when k has none for w. */
static int packed_copy(const cpu_kernels *k, const alm_weight *w, alm_weight *out, void **buf)
{
    *buf = NULL;
    size_t bytes = cpu_matmul_pack_size(k, w);
    if (!bytes)
        return 0;
    *buf = aligned_alloc(64, (bytes + 63) / 64 * 64);
    /* Poisoned: padding the kernel must not read shows up as wrong sums. */
    memset(*buf, 0x5a, (bytes + 63) / 64 * 64);
    *out = *w;
    if (cpu_matmul_pack(k, w, *buf, bytes) < 0)
        return -1;
    out->backend_data = *buf;
    return 1;
}

static const char *kname(const cpu_kernels *k)
{
    if (cpu_kernels_isa(k) == CPU_ISA_AVX512 && cpu_kernels_activation_bits(k) == 8)
        return "avx512 act8";
    return cpu_isa_name(cpu_kernels_isa(k));
}

static void *scratch_for(const cpu_kernels *k, const alm_weight *w, int n_tok)
{
    size_t n = cpu_matmul_scratch_size(k, w, n_tok);
    n = (n + 63) / 64 * 64;
    /* Poisoned, so that anything the kernels read without prepare having
     * written it shows up as a wrong result. */
    void *p = aligned_alloc(64, n ? n : 64);
    memset(p, 0xa5, n ? n : 64);
    return p;
}

/* Runs w on x for tokens [0, n_tok) and rows [r0, r1), as two calls on
 * the halves of the range (two threads would), into y (stride y_stride),
 * whose other rows must stay untouched. Returns 0 when both halves and the
 * whole-range call agree bit for bit and nothing else was written. */
static int run_kernel(const cpu_kernels *k, const alm_weight *w, const float *x, int n_tok,
                      size_t x_stride, int r0, int r1, float *y, size_t y_stride)
{
    void *scratch = scratch_for(k, w, n_tok);
    size_t ny = (size_t)n_tok * y_stride;
    float *whole = malloc(sizeof(float) * ny);
    for (size_t i = 0; i < ny; i++)
        y[i] = whole[i] = 12345.0f;
    cpu_matmul_prepare(k, w, x, n_tok, x_stride, scratch);
    int mid = r0 + (r1 - r0) / 2 + 1;
    if (mid > r1)
        mid = r1;
    cpu_matmul_rows(k, w, scratch, x, n_tok, x_stride, y, y_stride, r0, mid);
    cpu_matmul_rows(k, w, scratch, x, n_tok, x_stride, y, y_stride, mid, r1);
    cpu_matmul_rows(k, w, scratch, x, n_tok, x_stride, whole, y_stride, r0, r1);
    int bad = 0;
    for (int t = 0; t < n_tok; t++)
        for (size_t r = 0; r < y_stride; r++) {
            size_t i = (size_t)t * y_stride + r;
            bool inside = (int)r >= r0 && (int)r < r1;
            if (!inside && (y[i] != 12345.0f || whole[i] != 12345.0f))
                bad = 1;
            if (inside && memcmp(&y[i], &whole[i], sizeof(float)) != 0)
                bad = 1;
        }
    free(whole);
    free(scratch);
    return bad ? -1 : 0;
}

/* Largest error relative to the tolerance 2e-5 * sum|W x| + 1e-6 + aw * act
 * (<= 1 passes). */
static double worst_ratio(const float *y, size_t y_stride, const double *ref, const double *mag,
                          const double *act, double aw, int n_tok, int r0, int r1)
{
    double worst = 0.0;
    int n = r1 - r0;
    for (int t = 0; t < n_tok; t++)
        for (int r = r0; r < r1; r++) {
            double v = y[(size_t)t * y_stride + (size_t)r];
            size_t i = (size_t)t * (size_t)n + (size_t)(r - r0);
            double ratio = fabs(v - ref[i]) / (2e-5 * mag[i] + 1e-6 + aw * act[i]);
            if (!(ratio <= worst))   /* NaN counts as the worst */
                worst = isnan(ratio) ? INFINITY : ratio;
        }
    return worst;
}

static const char *dtype_name(alm_dtype t) { return alm_dtype_name(t); }

/* One weight, every ISA, every token count: against the reference and
 * against each other. */
static void check_weight(const isa_set *isas, const alm_weight *w, const char *what, int r0,
                         int r1, test_rng *rng, const int *counts, int n_counts)
{
    int max_tok = 0;
    for (int i = 0; i < n_counts; i++)
        if (counts[i] > max_tok)
            max_tok = counts[i];
    size_t x_stride = (size_t)w->cols + 5;   /* rows of x deliberately unaligned */
    size_t y_stride = (size_t)w->rows + 3;
    float *x = malloc(sizeof(float) * x_stride * (size_t)max_tok);
    fixture_activations(rng, x, max_tok, x_stride, w->cols);
    size_t nref = (size_t)max_tok * (size_t)(r1 - r0);
    double *ref = malloc(sizeof(double) * nref), *mag = malloc(sizeof(double) * nref);
    double *act = malloc(sizeof(double) * nref);
    fixture_reference(w, x, max_tok, x_stride, r0, r1, ref, mag);
    fixture_activation_bound(w, x, max_tok, x_stride, r0, r1, act);
    float *y = malloc(sizeof(float) * y_stride * (size_t)max_tok);
    float *first = malloc(sizeof(float) * y_stride * (size_t)max_tok);

    for (int ci = 0; ci < n_counts; ci++) {
        int n_tok = counts[ci];
        /* The reference rows of token t sit at t * (r1 - r0) whatever n_tok. */
        for (int kv = 0; kv < 2 * isas->n; kv++) {
            int ki = kv / 2;
            const cpu_kernels *k = isas->k[ki];
            alm_weight pw;
            void *pbuf = NULL;
            const alm_weight *used = w;
            if (kv % 2) {
                int pr = packed_copy(k, w, &pw, &pbuf);
                if (pr == 0)
                    continue;
                if (!tap_ok(pr > 0, "%s: cpu_matmul_pack of %s", kname(k), what)) {
                    free(pbuf);
                    continue;
                }
                used = &pw;
            }
            int rc = run_kernel(k, used, x, n_tok, x_stride, r0, r1, y, y_stride);
            free(pbuf);
            double worst = worst_ratio(y, y_stride, ref, mag, act, act_weight(k, w), n_tok, r0, r1);
            int ok = tap_ok(rc == 0 && worst <= 1.0,
                            "%s%s: %s, rows [%d, %d), %d tokens: worst error %.3g of tolerance%s",
                            kname(k), kv % 2 ? " packed" : "", what, r0, r1, n_tok, worst,
                            rc ? ", row split or untouched rows wrong" : "");
            if (!ok)
                continue;
            /* Across ISAs: against the first ISA, within the sum of both
             * tolerances. */
            if (kv == 0) {
                memcpy(first, y, sizeof(float) * y_stride * (size_t)n_tok);
            } else {
                double across = 0.0;
                for (int t = 0; t < n_tok; t++)
                    for (int r = r0; r < r1; r++) {
                        size_t i = (size_t)t * y_stride + (size_t)r;
                        size_t j = (size_t)t * (size_t)(r1 - r0) + (size_t)(r - r0);
                        double tol = 2.0 * (2e-5 * mag[j] + 1e-6) +
                                     (act_weight(k, w) + act_weight(isas->k[0], w)) * act[j];
                        double d = fabs((double)y[i] - first[i]) / tol;
                        if (!(d <= across))
                            across = isnan(d) ? INFINITY : d;
                    }
                if (across > 1.0)
                    tap_ok(0, "%s%s vs %s: %s, %d tokens differ by %.3g of tolerance", kname(k),
                           kv % 2 ? " packed" : "", kname(isas->k[0]), what, n_tok, across);
            }
        }
    }
    free(first);
    free(y);
    free(ref);
    free(mag);
    free(act);
    free(x);
}

static void test_quantized(const isa_set *isas, test_rng *rng)
{
    static const int bits_list[] = { 2, 4, 8 };
    static const int groups[] = { 32, 64, 128 };
    static const alm_dtype sdt[] = { ALM_DTYPE_BF16, ALM_DTYPE_F16, ALM_DTYPE_F32 };
    for (int bi = 0; bi < 3; bi++)
        for (int gi = 0; gi < 3; gi++)
            for (int si = 0; si < 3; si++) {
                /* F16/F32 scales: every bits, group 64 only. */
                if (si > 0 && groups[gi] != 64)
                    continue;
                fixture_weight f;
                fixture_quant(&f, rng, 37, 384, bits_list[bi], groups[gi], sdt[si]);
                char what[96];
                snprintf(what, sizeof what, "%d-bit g%d %s scales 37x384", bits_list[bi],
                         groups[gi], dtype_name(sdt[si]));
                check_weight(isas, &f.w, what, 3, 35, rng, token_counts, N_TOKEN_COUNTS);
                fixture_weight_free(&f);
            }

    /* The model's shapes, with odd row ranges. */
    static const int few[] = { 1, 5, 17 };
    fixture_weight f;
    fixture_quant(&f, rng, 1024, 384, 4, 64, ALM_DTYPE_BF16);
    check_weight(isas, &f.w, "4-bit g64 bf16 1024x384", 3, 77, rng, few, 3);
    check_weight(isas, &f.w, "4-bit g64 bf16 1024x384", 1001, 1024, rng, few, 1);
    fixture_weight_free(&f);
    fixture_quant(&f, rng, 384, 1024, 4, 64, ALM_DTYPE_BF16);
    check_weight(isas, &f.w, "4-bit g64 bf16 384x1024", 0, 384, rng, few, 2);
    fixture_weight_free(&f);
    for (int bits = 2; bits <= 8; bits *= 2) {
        char what[96];
        /* Columns that leave the last 64-byte chunk of a row partial. */
        fixture_quant(&f, rng, 21, 160, bits, 32, ALM_DTYPE_BF16);
        snprintf(what, sizeof what, "%d-bit g32 bf16 21x160", bits);
        check_weight(isas, &f.w, what, 0, 21, rng, token_counts, 4);
        fixture_weight_free(&f);
        fixture_quant(&f, rng, 9, 4480, bits, 128, ALM_DTYPE_BF16);
        snprintf(what, sizeof what, "%d-bit g128 bf16 9x4480", bits);
        check_weight(isas, &f.w, what, 1, 9, rng, token_counts, 2);
        fixture_weight_free(&f);
    }
    /* More than one segment of scales (256 groups) in a row. */
    fixture_quant(&f, rng, 5, 8320, 4, 32, ALM_DTYPE_F16);
    check_weight(isas, &f.w, "4-bit g32 f16 5x8320", 0, 5, rng, token_counts, 2);
    fixture_weight_free(&f);
}

/* y of token t in a pass of n tokens equals, bit for bit, y of a pass of
 * token t alone, for n = 2..17 (speculative decoding verifies up to 17
 * tokens and compares with one-token steps) and 64, on every row range. */
static void check_pass_size(const cpu_kernels *k, const alm_weight *w, const char *what,
                           test_rng *rng)
{
    enum { MAXN = 64 };
    size_t xs = (size_t)w->cols, ys = (size_t)w->rows;
    float *x = malloc(sizeof(float) * xs * MAXN);
    float *one = malloc(sizeof(float) * ys * MAXN), *many = malloc(sizeof(float) * ys * MAXN);
    fixture_activations(rng, x, MAXN, xs, w->cols);
    void *scratch = scratch_for(k, w, MAXN);
    for (int t = 0; t < MAXN; t++) {
        cpu_matmul_prepare(k, w, x + (size_t)t * xs, 1, xs, scratch);
        cpu_matmul_rows(k, w, scratch, x + (size_t)t * xs, 1, xs, one + (size_t)t * ys, ys, 0,
                        w->rows);
    }
    int bad_n = 0;
    for (int n = 2; n <= MAXN; n = n == 17 ? MAXN : n + 1) {
        cpu_matmul_prepare(k, w, x, n, xs, scratch);
        /* two halves, as two threads would */
        int mid = w->rows / 2;
        cpu_matmul_rows(k, w, scratch, x, n, xs, many, ys, 0, mid);
        cpu_matmul_rows(k, w, scratch, x, n, xs, many, ys, mid, w->rows);
        if (memcmp(one, many, sizeof(float) * ys * (size_t)n) != 0 && !bad_n)
            bad_n = n;
    }
    tap_ok(bad_n == 0, "%s: %s: a token's result is the same in passes of 1 to 17 and 64 tokens",
           kname(k), what);
    if (bad_n)
        tap_diag("first differing pass size: %d", bad_n);
    free(scratch);
    free(x);
    free(one);
    free(many);
}

static void test_pass_size(const isa_set *isas, test_rng *rng)
{
    static const struct { int rows, cols, group; alm_dtype sdt; } shapes[] = {
        { 1024, 384, 64, ALM_DTYPE_BF16 },   /* coder-target's gate/up */
        { 83, 256, 32, ALM_DTYPE_F16 },
        { 40, 512, 128, ALM_DTYPE_F32 },
    };
    for (unsigned si = 0; si < sizeof shapes / sizeof shapes[0]; si++) {
        fixture_weight f;
        fixture_quant(&f, rng, shapes[si].rows, shapes[si].cols, 4, shapes[si].group,
                      shapes[si].sdt);
        char what[96];
        snprintf(what, sizeof what, "4-bit g%d %s %dx%d", shapes[si].group,
                 dtype_name(shapes[si].sdt), shapes[si].rows, shapes[si].cols);
        for (int ki = 0; ki < isas->n; ki++) {
            const cpu_kernels *k = isas->k[ki];
            if (cpu_kernels_activation_bits(k) == 8)
                continue;   /* the experiment: no speculative use */
            check_pass_size(k, &f.w, what, rng);
            alm_weight pw;
            void *pbuf;
            if (packed_copy(k, &f.w, &pw, &pbuf) > 0) {
                char pwhat[128];
                snprintf(pwhat, sizeof pwhat, "%s packed", what);
                check_pass_size(k, &pw, pwhat, rng);
            }
            free(pbuf);
        }
        fixture_weight_free(&f);
    }
}

/* The same for dense weights (a BF16 model's verify passes). */
static void test_pass_size_dense(const isa_set *isas, test_rng *rng)
{
    static const alm_dtype dts[] = { ALM_DTYPE_BF16, ALM_DTYPE_F16, ALM_DTYPE_F32 };
    for (int di = 0; di < 3; di++) {
        fixture_weight f;
        fixture_dense(&f, rng, 133, 384, dts[di]);
        char what[64];
        snprintf(what, sizeof what, "dense %s 133x384", dtype_name(dts[di]));
        for (int ki = 0; ki < isas->n; ki++)
            if (cpu_kernels_activation_bits(isas->k[ki]) != 8)
                check_pass_size(isas->k[ki], &f.w, what, rng);
        fixture_weight_free(&f);
    }
}

/* cpu_matmul_pack: only where a packed kernel exists, never into a short
 * or misaligned buffer; a backend_data that is not a copy made from this
 * very weight is ignored (the weight's own data is used). */
static void test_pack_api(const isa_set *isas, test_rng *rng)
{
    const cpu_kernels *k = cpu_kernels_for(CPU_ISA_AVX512);
    if (!k) {
        tap_diag("SKIP packed weights: no AVX-512 VNNI here");
        return;
    }
    fixture_weight f, g, e;
    fixture_quant(&f, rng, 40, 256, 4, 64, ALM_DTYPE_BF16);
    fixture_quant(&g, rng, 40, 256, 4, 64, ALM_DTYPE_BF16);
    fixture_quant(&e, rng, 40, 256, 8, 64, ALM_DTYPE_BF16);
    size_t bytes = cpu_matmul_pack_size(k, &f.w);
    tap_ok(bytes > 0 && bytes < 40 * 256 / 2 * 2, "a 4-bit weight has a packed copy of %zu bytes",
           bytes);
    tap_ok(cpu_matmul_pack_size(k, &e.w) == 0, "an 8-bit weight has none");
    tap_ok(cpu_matmul_pack_size(cpu_kernels_for(CPU_ISA_SCALAR), &f.w) == 0,
           "the scalar kernels have none");
    void *buf = aligned_alloc(64, bytes + 64);
    tap_ok(cpu_matmul_pack(k, &f.w, buf, bytes - 1) == -EINVAL, "a short buffer is refused");
    tap_ok(cpu_matmul_pack(k, &f.w, (uint8_t *)buf + 4, bytes) == -EINVAL,
           "a misaligned buffer is refused");
    tap_ok(cpu_matmul_pack(k, &e.w, buf, bytes) == -EINVAL, "packing an 8-bit weight is refused");
    tap_ok(cpu_matmul_pack(k, &f.w, buf, bytes) == 0, "packing a 4-bit weight works");

    float x[2 * 256], want[2 * 40], got[2 * 40];
    fixture_activations(rng, x, 2, 256, 256);
    void *scratch = scratch_for(k, &g.w, 2);
    cpu_matmul_prepare(k, &g.w, x, 2, 256, scratch);
    cpu_matmul_rows(k, &g.w, scratch, x, 2, 256, want, 40, 0, 40);
    /* g with f's packed copy, and with something that is no copy at all */
    alm_weight wrong = g.w;
    wrong.backend_data = buf;
    cpu_matmul_rows(k, &wrong, scratch, x, 2, 256, got, 40, 0, 40);
    tap_ok(memcmp(want, got, sizeof want) == 0, "a packed copy of another weight is ignored");
    uint64_t junk[16];
    memset(junk, 0x77, sizeof junk);
    wrong.backend_data = junk;
    cpu_matmul_rows(k, &wrong, scratch, x, 2, 256, got, 40, 0, 40);
    tap_ok(memcmp(want, got, sizeof want) == 0, "a backend_data that is no packed copy is ignored");
    /* The first 23 rows of f (a vocabulary-limited lm_head shares the
     * data) use f's packed copy: the same as those rows of the whole. */
    alm_weight whole = f.w, prefix = f.w;
    whole.backend_data = prefix.backend_data = buf;
    prefix.rows = 23;
    float all[2 * 40], part[2 * 23], part_plain[2 * 23];
    cpu_matmul_prepare(k, &f.w, x, 2, 256, scratch);
    cpu_matmul_rows(k, &whole, scratch, x, 2, 256, all, 40, 0, 40);
    cpu_matmul_rows(k, &prefix, scratch, x, 2, 256, part, 23, 0, 23);
    alm_weight plain = prefix;
    plain.backend_data = NULL;
    cpu_matmul_rows(k, &plain, scratch, x, 2, 256, part_plain, 23, 0, 23);
    bool same = memcmp(all, part, sizeof(float) * 23) == 0 &&
                memcmp(all + 40, part + 23, sizeof(float) * 23) == 0;
    bool differs_from_plain = memcmp(part, part_plain, sizeof part) != 0;
    tap_ok(same && differs_from_plain,
           "the first rows of a packed weight use its packed copy (bit for bit those rows)");
    free(scratch);
    free(buf);
    fixture_weight_free(&f);
    fixture_weight_free(&g);
    fixture_weight_free(&e);
    (void)isas;
}

static void test_dense(const isa_set *isas, test_rng *rng)
{
    static const alm_dtype dts[] = { ALM_DTYPE_F32, ALM_DTYPE_F16, ALM_DTYPE_BF16 };
    static const int cols_list[] = { 384, 1024, 50, 77 };
    for (int di = 0; di < 3; di++)
        for (int ci = 0; ci < 4; ci++) {
            fixture_weight f;
            fixture_dense(&f, rng, 37, cols_list[ci], dts[di]);
            char what[96];
            snprintf(what, sizeof what, "dense %s 37x%d", dtype_name(dts[di]), cols_list[ci]);
            int n = cols_list[ci] == 1024 ? 3 : N_TOKEN_COUNTS;
            check_weight(isas, &f.w, what, 3, 35, rng, token_counts, n);
            fixture_weight_free(&f);
        }
}

static void test_weight_row(test_rng *rng)
{
    static const alm_dtype sdt[] = { ALM_DTYPE_BF16, ALM_DTYPE_F16, ALM_DTYPE_F32 };
    float out[256];
    for (int bits = 2; bits <= 8; bits *= 2)
        for (int si = 0; si < 3; si++) {
            fixture_weight f;
            fixture_quant(&f, rng, 7, 256, bits, 64, sdt[si]);
            int exact = 1;
            for (int r = 0; r < 7; r++) {
                cpu_weight_row(&f.w, r, out);
                for (int c = 0; c < 256; c++) {
                    float e = fixture_element(&f.w, r, c);
                    if (memcmp(&e, &out[c], sizeof e) != 0)
                        exact = 0;
                }
            }
            tap_ok(exact, "cpu_weight_row: %d-bit %s scales equals scale * q + bias exactly", bits,
                   dtype_name(sdt[si]));
            fixture_weight_free(&f);
        }
    for (int di = 0; di < 3; di++) {
        static const alm_dtype dts[] = { ALM_DTYPE_F32, ALM_DTYPE_F16, ALM_DTYPE_BF16 };
        fixture_weight f;
        fixture_dense(&f, rng, 3, 77, dts[di]);
        int exact = 1;
        cpu_weight_row(&f.w, 2, out);
        for (int c = 0; c < 77; c++) {
            float e = fixture_element(&f.w, 2, c);
            if (memcmp(&e, &out[c], sizeof e) != 0)
                exact = 0;
        }
        tap_ok(exact, "cpu_weight_row: dense %s converts exactly", dtype_name(dts[di]));
        fixture_weight_free(&f);
    }
}

/* Zero activations give zero; NaN in x gives NaN, as fp32 would. */
static void test_special_values(const isa_set *isas, test_rng *rng)
{
    fixture_weight f;
    fixture_quant(&f, rng, 8, 256, 4, 64, ALM_DTYPE_BF16);
    float x[2 * 256], y[2 * 8];
    memset(x, 0, sizeof x);
    x[256 + 17] = NAN;
    for (int ki = 0; ki < isas->n; ki++) {
        const cpu_kernels *k = isas->k[ki];
        void *scratch = scratch_for(k, &f.w, 2);
        cpu_matmul_prepare(k, &f.w, x, 2, 256, scratch);
        cpu_matmul_rows(k, &f.w, scratch, x, 2, 256, y, 8, 0, 8);
        int zeros = 1, nans = 1;
        for (int r = 0; r < 8; r++) {
            zeros &= y[r] == 0.0f;
            nans &= isnan(y[8 + r]);
        }
        tap_ok(zeros, "%s: zero activations give exactly zero", kname(k));
        tap_ok(nans, "%s: a NaN activation gives NaN", kname(k));
        free(scratch);
    }
    fixture_weight_free(&f);
}

static void test_check(const isa_set *isas, test_rng *rng)
{
    fixture_weight f;
    fixture_quant(&f, rng, 4, 128, 4, 64, ALM_DTYPE_BF16);
    char why[160];
    tap_ok(cpu_matmul_check(&f.w, why, sizeof why) == 0, "a valid 4-bit weight passes the check");

    struct { const char *what; alm_weight w; } bad[6];
    for (int i = 0; i < 6; i++)
        bad[i].w = f.w;
    bad[0].what = "3 bits"; bad[0].w.bits = 3;
    bad[1].what = "group 48"; bad[1].w.group_size = 48;
    bad[2].what = "cols not a multiple of the group"; bad[2].w.cols = 96;
    bad[3].what = "no scales"; bad[3].w.scales = NULL;
    bad[4].what = "U32 dense"; bad[4].w.bits = 0;
    bad[5].what = "zero rows"; bad[5].w.rows = 0;
    for (int i = 0; i < 6; i++) {
        why[0] = '\0';
        int rc = cpu_matmul_check(&bad[i].w, why, sizeof why);
        tap_ok(rc == -EINVAL && why[0], "check refuses %s (%s)", bad[i].what, why);
    }
    /* A refused weight yields zeros, without touching its data. */
    float x[128] = { 1.0f }, y[4] = { 1, 2, 3, 4 };
    alm_weight w = f.w;
    w.bits = 3;
    cpu_matmul_rows(isas->k[0], &w, NULL, x, 1, 128, y, 4, 0, 4);
    tap_ok(y[0] == 0 && y[3] == 0, "rows of a refused weight are zero");
    fixture_weight_free(&f);
}

/* Saves an environment variable and unsets it; restore_env puts it back. */
static char *save_env(const char *name)
{
    const char *v = getenv(name);
    char *keep = v ? strdup(v) : NULL;
    unsetenv(name);
    return keep;
}

static void restore_env(const char *name, char *keep)
{
    if (keep)
        setenv(name, keep, 1);
    else
        unsetenv(name);
    free(keep);
}

/* ALM_CPU_ISA forces an instruction set, never one the CPU lacks;
 * ALM_ACTIVATION_BITS picks the activation precision where the set has it. */
static void test_select(void)
{
    static const cpu_isa all[] = { CPU_ISA_SCALAR, CPU_ISA_AVX2, CPU_ISA_AVX512 };
    char *keep_isa = save_env("ALM_CPU_ISA");
    char *keep_bits = save_env("ALM_ACTIVATION_BITS");
    const cpu_kernels *best = cpu_kernels_select();
    const cpu_kernels *want_best = NULL;
    for (int i = 0; i < 3; i++)
        if (cpu_kernels_for(all[i]))
            want_best = cpu_kernels_for(all[i]);
    tap_ok(best == want_best, "without ALM_CPU_ISA the best supported set is chosen (%s)",
           kname(best));
    for (int i = 0; i < 3; i++) {
        setenv("ALM_CPU_ISA", cpu_isa_name(all[i]), 1);
        const cpu_kernels *k = cpu_kernels_select();
        const cpu_kernels *want = cpu_kernels_for(all[i]) ? cpu_kernels_for(all[i]) : best;
        tap_ok(k == want, "ALM_CPU_ISA=%s selects %s", cpu_isa_name(all[i]), kname(k));
    }
    setenv("ALM_CPU_ISA", "no-such-isa", 1);
    tap_ok(cpu_kernels_select() == best, "an unknown ALM_CPU_ISA falls back to the best set");
    unsetenv("ALM_CPU_ISA");

    /* Activation precision: the AVX-512 default is 16 bits; 8 and 24 are
     * variants; fp32 sets and unknown values keep the default. */
    tap_ok(cpu_kernels_activation_bits(cpu_kernels_for(CPU_ISA_SCALAR)) == 32,
           "scalar kernels take fp32 activations");
    if (cpu_kernels_for(CPU_ISA_AVX512)) {
        tap_ok(cpu_kernels_activation_bits(cpu_kernels_for(CPU_ISA_AVX512)) == 16,
               "AVX-512 kernels default to 16-bit activations");
        static const int bits[] = { 8, 16 };
        for (int i = 0; i < 2; i++) {
            char v[8];
            snprintf(v, sizeof v, "%d", bits[i]);
            setenv("ALM_ACTIVATION_BITS", v, 1);
            const cpu_kernels *k = cpu_kernels_select();
            tap_ok(k == cpu_kernels_for_activation(CPU_ISA_AVX512, bits[i]) &&
                       cpu_kernels_activation_bits(k) == bits[i],
                   "ALM_ACTIVATION_BITS=%d selects %s", bits[i], kname(k));
        }
    }
    setenv("ALM_ACTIVATION_BITS", "24", 1);
    tap_ok(cpu_kernels_select() == best, "ALM_ACTIVATION_BITS=24 (no such variant) keeps the default");
    setenv("ALM_ACTIVATION_BITS", "8", 1);
    setenv("ALM_CPU_ISA", "scalar", 1);
    tap_ok(cpu_kernels_select() == cpu_kernels_for(CPU_ISA_SCALAR),
           "ALM_ACTIVATION_BITS=8 leaves the fp32 scalar kernels as they are");
    tap_ok(cpu_kernels_for_activation(CPU_ISA_SCALAR, 8) == NULL,
           "no 8-bit variant of the scalar kernels");
    restore_env("ALM_CPU_ISA", keep_isa);
    restore_env("ALM_ACTIVATION_BITS", keep_bits);
}

int main(void)
{
    isa_set isas = { .n = 0 };
    static const cpu_isa all[] = { CPU_ISA_SCALAR, CPU_ISA_AVX2, CPU_ISA_AVX512 };
    for (int i = 0; i < 3; i++) {
        const cpu_kernels *k = cpu_kernels_for(all[i]);
        if (k)
            isas.k[isas.n++] = k;
        else
            tap_diag("SKIP %s kernels: this CPU does not run them", cpu_isa_name(all[i]));
    }
    /* The other activation precisions of the integer kernels. */
    const cpu_kernels *act8 = cpu_kernels_for_activation(CPU_ISA_AVX512, 8);
    if (act8)
        isas.k[isas.n++] = act8;
    const cpu_kernels *sel = cpu_kernels_select();
    tap_diag("selected: %s", kname(sel));

    test_select();
    test_rng rng = { 42 };
    test_check(&isas, &rng);
    test_weight_row(&rng);
    test_special_values(&isas, &rng);
    test_quantized(&isas, &rng);
    test_pass_size(&isas, &rng);
    test_pass_size_dense(&isas, &rng);
    test_pack_api(&isas, &rng);
    test_dense(&isas, &rng);
    return tap_done();
}
