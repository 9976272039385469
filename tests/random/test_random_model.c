/* Random-weight models:
 * - every small preset, BF16 and 2/4/8-bit: builds, reports the shapes and
 *   bytes of its config, and a forward pass gives finite logits that differ
 *   between tokens;
 * - the quantized tensors are MLX's layout with sensible values: the
 *   embedding rows dequantize into the intended range;
 * - same seed, same weights, whatever the number of threads; another seed,
 *   other weights;
 * - the large presets (8b, 70b, 1b, 0.5b): their configs and byte counts,
 *   computed independently here from the published sizes, without
 *   allocating them;
 * - no tokenizer: generation from ids works, stop strings are refused;
 * - unknown presets and bad bit widths are refused with a message. */
#include <errno.h>
#include <math.h>
#include <string.h>

#include "alm.h"
#include "model/model_internal.h"
#include "model/random_model.h"
#include "tap.h"

static alm_pool *pool;

static const char *const small_presets[] = { "tiny", "tiny-draft", "tiny-qwen2", "tiny-qwen3", "tiny-moe" };
#define N_SMALL (int)(sizeof small_presets / sizeof small_presets[0])

static alm_model *build(const char *preset, int bits, int group, uint64_t seed, int threads)
{
    alm_random_params p = { .bits = bits, .group_size = group, .seed = seed, .n_threads = threads };
    alm_error err = { 0 };
    alm_model *m = NULL;
    if (alm_model_new_random(preset, &p, NULL, &m, &err) < 0)
        tap_diag("%s %d-bit: %s", preset, bits, err.message);
    return m;
}

/* Logits of n tokens (all positions), malloc'ed. */
static float *forward(alm_model *m, const int32_t *ids, int n)
{
    alm_error err = { 0 };
    alm_seq *s = NULL;
    int vocab = alm_model_vocab_size(m);
    float *logits = malloc(sizeof *logits * (size_t)vocab * (size_t)n);
    if (alm_seq_new(m, 64, &s, &err) < 0 || alm_seq_forward(s, pool, ids, n, n, logits, &err) < 0) {
        tap_diag("forward: %s", err.message);
        free(logits);
        logits = NULL;
    }
    alm_seq_free(s);
    return logits;
}

static const int32_t test_ids[8] = { 1, 17, 300, 42, 511, 7, 128, 64 };

static void check_small(const char *preset, int bits, int group)
{
    const random_preset *x = random_preset_find(preset);
    alm_model *m = build(preset, bits, group, 7, 0);
    if (!tap_ok(m != NULL, "%s %d-bit: built", preset, bits))
        return;
    alm_random_params p = { .bits = bits, .group_size = group, .seed = 7 };
    size_t planned = 0;
    alm_error err = { 0 };
    alm_random_weight_bytes(preset, &p, &planned, &err);
    tap_ok(alm_model_vocab_size(m) == x->vocab_size && strcmp(alm_model_architecture(m), x->model_type) == 0
               && m->cfg.hidden_size == x->hidden_size && m->cfg.n_layers == x->n_layers
               && m->cfg.head_dim == x->head_dim && m->cfg.n_kv_heads == x->n_kv_heads
               && m->cfg.quant.bits == bits && alm_model_tokenizer(m) == NULL,
           "%s %d-bit: config as the preset says, no tokenizer", preset, bits);
    tap_ok(alm_model_weight_bytes(m) == planned && planned > 0,
           "%s %d-bit: weight bytes %zu as planned (%zu)", preset, bits, alm_model_weight_bytes(m), planned);
    tap_ok(m->weights.embed.bits == bits && m->weights.layers[0].q.bits == bits
               && (bits || m->weights.embed.dtype == ALM_DTYPE_BF16),
           "%s %d-bit: matrices stored %s", preset, bits, bits ? "quantized" : "as BF16");

    float *logits = forward(m, test_ids, 8);
    int vocab = x->vocab_size;
    bool finite = logits != NULL, differ = false, spread = false;
    for (int i = 0; logits && i < 8 * vocab; i++)
        finite = finite && isfinite(logits[i]);
    for (int v = 0; logits && v < vocab; v++) {
        differ = differ || logits[v] != logits[vocab + v];
        spread = spread || logits[v] != logits[0];
    }
    tap_ok(finite && differ && spread, "%s %d-bit: finite logits over [8][%d], varying with token and id",
           preset, bits, vocab);
    free(logits);
    alm_model_free(m);
}

/* The embedding of a quantized model, dequantized by hand from the MLX
 * layout: every value in the intended range, centred, not constant. */
static void check_packing(int bits)
{
    alm_model *m = build("tiny", bits, 64, 3, 0);
    if (!m)
        return;
    const alm_weight *w = &m->weights.embed;
    double sum = 0, sum2 = 0, worst = 0;
    int n = 0;
    const uint32_t *words = w->data;
    const uint16_t *scales = w->scales, *biases = w->biases;
    int per_word = 32 / bits, groups = w->cols / w->group_size;
    for (int r = 0; r < 16; r++)
        for (int c = 0; c < w->cols; c++) {
            uint32_t word = words[(size_t)r * (size_t)(w->cols / per_word) + (size_t)(c / per_word)];
            uint32_t q = (word >> ((c % per_word) * bits)) & ((1u << bits) - 1);
            size_t g = (size_t)r * (size_t)groups + (size_t)(c / w->group_size);
            double v = alm_bf16_to_f32(scales[g]) * q + alm_bf16_to_f32(biases[g]);
            sum += v;
            sum2 += v * v;
            worst = fmax(worst, fabs(v));
            n++;
        }
    double mean = sum / n, sd = sqrt(sum2 / n - mean * mean);
    tap_ok(worst < 0.05 && fabs(mean) < 0.005 && sd > 0.01 && sd < 0.03,
           "%d-bit embedding dequantizes to mean %.4f, sd %.4f, max |w| %.4f", bits, mean, sd, worst);
    alm_model_free(m);
}

static void check_determinism(void)
{
    alm_model *a = build("tiny-qwen2", 4, 32, 11, 1);
    alm_model *b = build("tiny-qwen2", 4, 32, 11, 2);
    alm_model *c = build("tiny-qwen2", 4, 32, 12, 2);
    if (!a || !b || !c) {
        tap_ok(0, "determinism: models built");
    } else {
        float *la = forward(a, test_ids, 4), *lb = forward(b, test_ids, 4), *lc = forward(c, test_ids, 4);
        size_t bytes = sizeof(float) * 4 * (size_t)alm_model_vocab_size(a);
        tap_ok(la && lb && memcmp(la, lb, bytes) == 0, "same seed on 1 and 2 threads: identical logits");
        tap_ok(la && lc && memcmp(la, lc, bytes) != 0, "another seed: other logits");
        free(la);
        free(lb);
        free(lc);
    }
    alm_model_free(a);
    alm_model_free(b);
    alm_model_free(c);
}

/* Bytes of an [rows][cols] matrix as stored. */
static double matrix_bytes(double rows, double cols, int bits, int group)
{
    if (!bits)
        return rows * cols * 2;
    return rows * cols * bits / 8 + 2 * 2 * rows * cols / group;
}

typedef struct published {
    const char *preset;
    const char *model_type;
    int vocab, hidden, inter, layers, heads, kv, head_dim;
    bool tied;
    double theta, rope_factor;
    double params_billion;   /* as published, for a sanity bound */
} published;

/* The published configs (Llama 3.1 8B / 70B, Llama 3.2 1B, Qwen2.5 0.5B). */
static const published big[] = {
    { "llama3-8b", "llama", 128256, 4096, 14336, 32, 32, 8, 128, false, 500000, 8, 8.03 },
    { "llama3-70b", "llama", 128256, 8192, 28672, 80, 64, 8, 128, false, 500000, 8, 70.6 },
    { "llama3.2-1b", "llama", 128256, 2048, 8192, 16, 32, 8, 64, true, 500000, 32, 1.24 },
    { "qwen2.5-0.5b", "qwen2", 151936, 896, 4864, 24, 14, 2, 64, true, 1000000, 0, 0.494 },
};

static void check_big(const published *x)
{
    const random_preset *rp = random_preset_find(x->preset);
    alm_random_params p = { .bits = 4, .group_size = 64 };
    char *json = NULL;
    alm_error err = { 0 };
    model_config cfg;
    memset(&cfg, 0, sizeof cfg);
    bool parsed = rp && random_preset_config_json(rp, &p, &json, &err) == 0
                  && model_config_parse(json, strlen(json), x->preset, &cfg, &err) == 0;
    if (!parsed)
        tap_diag("%s: %s", x->preset, err.message);
    tap_ok(parsed && strcmp(cfg.model_type, x->model_type) == 0 && cfg.vocab_size == x->vocab
               && cfg.hidden_size == x->hidden && cfg.intermediate_size == x->inter
               && cfg.n_layers == x->layers && cfg.n_heads == x->heads && cfg.n_kv_heads == x->kv
               && cfg.head_dim == x->head_dim && cfg.tie_word_embeddings == x->tied
               && cfg.rope_theta == x->theta
               && (x->rope_factor ? cfg.rope_scaling == ROPE_SCALING_LLAMA3 && cfg.rope_factor == x->rope_factor
                                  : cfg.rope_scaling == ROPE_SCALING_NONE)
               && cfg.attention_bias == (strcmp(x->model_type, "qwen2") == 0)
               && cfg.quant.bits == 4 && cfg.quant.group_size == 64,
           "%s: config.json as published", x->preset);
    model_config_clear(&cfg);
    free(json);

    for (int bits = 0; bits <= 8; bits += 4) {
        int g = 64;
        double q = (double)x->heads * x->head_dim, kv = (double)x->kv * x->head_dim, h = x->hidden;
        double layer = matrix_bytes(q, h, bits, g) + 2 * matrix_bytes(kv, h, bits, g)
                       + matrix_bytes(h, q, bits, g) + 3 * matrix_bytes(x->inter, h, bits, g)
                       + 2 * 2 * h;                                  /* two norms */
        if (strcmp(x->model_type, "qwen2") == 0)
            layer += 2 * (q + 2 * kv);                               /* q/k/v biases */
        double total = x->layers * layer + matrix_bytes(x->vocab, h, bits, g) * (x->tied ? 1 : 2) + 2 * h;
        size_t bytes = 0;
        alm_random_params bp = { .bits = bits, .group_size = g };
        int r = alm_random_weight_bytes(x->preset, &bp, &bytes, &err);
        /* The layout pads each tensor to 64 bytes: a few KiB at most. */
        double params = total / (bits ? bits / 8.0 + 4.0 / g : 2);
        tap_ok(r == 0 && bytes >= total && bytes - total < 64.0 * (20 * x->layers + 4)
                   && fabs(params / 1e9 - x->params_billion) < 0.03 * x->params_billion,
               "%s %d-bit: %.3f GB of weights (expected %.3f GB, ~%.2fB parameters)", x->preset, bits,
               (double)bytes / 1e9, total / 1e9, params / 1e9);
    }
}

static void check_generate_without_tokenizer(void)
{
    alm_model *m = build("tiny", 4, 64, 5, 0);
    if (!m)
        return;
    alm_error err = { 0 };
    alm_seq *s = NULL;
    alm_seq_new(m, 128, &s, &err);
    alm_generate_params gp = alm_generate_default_params();
    gp.max_tokens = 12;
    int32_t *ids = NULL;
    size_t n = 0;
    int r = alm_generate(s, NULL, pool, test_ids, 4, &gp, NULL, NULL, &ids, &n, NULL, &err);
    bool in_range = r == 0 && n == 12;
    for (size_t i = 0; in_range && i < n; i++)
        in_range = ids[i] >= 0 && ids[i] < 512;
    tap_ok(in_range, "no tokenizer: generation from ids gives 12 ids in the vocabulary (%s)",
           r < 0 ? err.message : "ok");
    free(ids);
    const char *stop[1] = { "x" };
    gp.stop = stop;
    gp.n_stop = 1;
    alm_seq_truncate(s, 0);
    r = alm_generate(s, NULL, pool, test_ids, 4, &gp, NULL, NULL, NULL, NULL, NULL, &err);
    tap_ok(r == -EINVAL && strstr(err.message, "tokenizer"), "no tokenizer: stop strings refused: %s",
           err.message);
    alm_seq_free(s);
    alm_model_free(m);
}

static void check_errors(void)
{
    alm_error err = { 0 };
    alm_model *m = NULL;
    int r = alm_model_new_random("llama9-1t", NULL, NULL, &m, &err);
    tap_ok(r == -ENOENT && m == NULL && strstr(err.message, "llama9-1t") && strstr(err.message, "llama3-8b"),
           "unknown preset refused, presets listed: %s", err.message);
    alm_random_params p = { .bits = 3, .group_size = 64 };
    r = alm_model_new_random("tiny", &p, NULL, &m, &err);
    tap_ok(r == -EINVAL && strstr(err.message, "3 bits"), "3 bits refused: %s", err.message);
    p = (alm_random_params){ .bits = 4, .group_size = 48 };
    r = alm_model_new_random("tiny", &p, NULL, &m, &err);
    tap_ok(r == -EINVAL && strstr(err.message, "48"), "group size 48 refused: %s", err.message);
    alm_model_params mp = { .device = "tpu" };
    r = alm_model_new_random("tiny", NULL, &mp, &m, &err);
    tap_ok(r < 0 && m == NULL, "unknown device refused: %s", err.message);
    size_t n = 0;
    const char *const *names = alm_random_preset_names();
    bool all_found = true;
    for (; names[n]; n++)
        all_found = all_found && random_preset_find(names[n]) != NULL;
    size_t n_presets;
    random_presets(&n_presets);
    tap_ok(all_found && n == n_presets, "%zu preset names, each a preset", n);
}

int main(void)
{
    if (alm_pool_new(2, &pool) < 0)
        return 1;
    for (int i = 0; i < N_SMALL; i++) {
        check_small(small_presets[i], 0, 64);
        check_small(small_presets[i], 4, 64);
        check_small(small_presets[i], 8, 128);
    }
    check_small("tiny", 2, 32);
    check_packing(2);
    check_packing(4);
    check_packing(8);
    check_determinism();
    for (size_t i = 0; i < sizeof big / sizeof big[0]; i++)
        check_big(&big[i]);
    check_generate_without_tokenizer();
    check_errors();
    alm_pool_free(pool);
    return tap_done();
}
