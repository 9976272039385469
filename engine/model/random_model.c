/* Random-weight models: a preset's config.json, parsed like any other, the
 * tensors a folder of that model would hold, laid out in one anonymous
 * mapping, filled once by all threads, then handed to the loader's common
 * path (model_create) as if read from files. */
#include "model/random_model.h"

#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/cleanup.h"
#include "core/error.h"
#include "core/threadpool.h"
#include "model/model_internal.h"

/* Real config.json values. llama3-8b and llama3-70b are Llama 3.1 (llama3
 * rope scaling); the tiny ones are small models for tests, with widths
 * that every group size divides. */
static const random_preset presets[] = {
    { "llama3-8b", "llama", "Meta-Llama-3.1-8B", 128256, 4096, 14336, 32, 32, 8, 128, 131072,
      1e-5, 500000.0, 8.0, 1.0, 4.0, 8192, false, 0, 0 },
    { "llama3-70b", "llama", "Meta-Llama-3.1-70B", 128256, 8192, 28672, 80, 64, 8, 128, 131072,
      1e-5, 500000.0, 8.0, 1.0, 4.0, 8192, false, 0, 0 },
    { "llama3.2-1b", "llama", "Llama-3.2-1B", 128256, 2048, 8192, 16, 32, 8, 64, 131072,
      1e-5, 500000.0, 32.0, 1.0, 4.0, 8192, true, 0, 0 },
    { "llama3.2-3b", "llama", "Llama-3.2-3B", 128256, 3072, 8192, 28, 24, 8, 128, 131072,
      1e-5, 500000.0, 32.0, 1.0, 4.0, 8192, true, 0, 0 },
    { "qwen2.5-0.5b", "qwen2", "Qwen2.5-0.5B", 151936, 896, 4864, 24, 14, 2, 64, 32768,
      1e-6, 1000000.0, 0, 0, 0, 0, true, 0, 0 },
    { "qwen2.5-1.5b", "qwen2", "Qwen2.5-1.5B", 151936, 1536, 8960, 28, 12, 2, 128, 131072,
      1e-6, 1000000.0, 0, 0, 0, 0, true, 0, 0 },
    { "qwen2.5-7b", "qwen2", "Qwen2.5-7B", 152064, 3584, 18944, 28, 28, 4, 128, 131072,
      1e-6, 1000000.0, 0, 0, 0, 0, false, 0, 0 },
    { "tiny", "llama", "a 2-layer llama", 512, 128, 256, 2, 4, 2, 32, 2048,
      1e-5, 500000.0, 8.0, 1.0, 4.0, 256, false, 0, 0 },
    { "tiny-draft", "llama", "a 1-layer llama", 512, 128, 256, 1, 2, 1, 64, 2048,
      1e-5, 500000.0, 8.0, 1.0, 4.0, 256, true, 0, 0 },
    { "tiny-qwen2", "qwen2", "a 2-layer qwen2 (q/k/v biases)", 512, 128, 384, 2, 4, 2, 32, 2048,
      1e-6, 1000000.0, 0, 0, 0, 0, true, 0, 0 },
    { "tiny-qwen3", "qwen3", "a 2-layer qwen3 (q/k norms, head_dim 64)", 512, 128, 256, 2, 4, 2, 64,
      2048, 1e-6, 1000000.0, 0, 0, 0, 0, true, 0, 0 },
    { "tiny-moe", "mixtral", "a 2-layer mixtral (4 experts, top 2)", 512, 128, 128, 2, 4, 2, 32,
      2048, 1e-5, 1000000.0, 0, 0, 0, 0, true, 4, 2 },
};
#define N_PRESETS (sizeof presets / sizeof presets[0])

static const char *const preset_names[] = {
    "llama3-8b", "llama3-70b", "llama3.2-1b", "llama3.2-3b", "qwen2.5-0.5b", "qwen2.5-1.5b",
    "qwen2.5-7b", "tiny", "tiny-draft", "tiny-qwen2", "tiny-qwen3", "tiny-moe", NULL,
};
_Static_assert(sizeof preset_names / sizeof preset_names[0] == N_PRESETS + 1,
               "one name per preset");

/* Weights are drawn uniformly from [-WEIGHT_RANGE, WEIGHT_RANGE]: a
 * standard deviation of 0.02, the initializer_range of these models, so
 * activations stay finite at any depth (the norms rescale them). */
#define WEIGHT_RANGE 0.034641f
/* The region is filled in chunks of this many bytes, claimed by the
 * threads one at a time. */
#define FILL_CHUNK ((size_t)4 << 20)
#define TENSOR_ALIGN 64
#define NAME_LEN 128

const char *const *alm_random_preset_names(void)
{
    return preset_names;
}

const random_preset *random_presets(size_t *n)
{
    *n = N_PRESETS;
    return presets;
}

const random_preset *random_preset_find(const char *name)
{
    for (size_t i = 0; name && i < N_PRESETS; i++)
        if (strcmp(presets[i].name, name) == 0)
            return &presets[i];
    return NULL;
}

alm_random_params alm_random_default_params(void)
{
    return (alm_random_params){ .bits = 4, .group_size = 64, .seed = 0, .n_threads = 0 };
}

static int check_params(const alm_random_params *p, alm_error *err)
{
    if (p->bits != 0 && p->bits != 2 && p->bits != 4 && p->bits != 8)
        return alm_error_set(err, -EINVAL, "random model: %d bits: expected 0 (BF16), 2, 4 or 8", p->bits);
    if (p->bits && p->group_size != 32 && p->group_size != 64 && p->group_size != 128)
        return alm_error_set(err, -EINVAL, "random model: group size %d: expected 32, 64 or 128",
                             p->group_size);
    return 0;
}

static int find_preset(const char *name, const random_preset **out, alm_error *err)
{
    *out = random_preset_find(name);
    if (*out)
        return 0;
    char list[512] = "";
    size_t used = 0;
    for (size_t i = 0; i < N_PRESETS && used < sizeof list; i++)
        used += (size_t)snprintf(list + used, sizeof list - used, "%s%s", i ? ", " : "", presets[i].name);
    return alm_error_set(err, -ENOENT, "no random-model preset \"%s\" (presets: %s)",
                         name ? name : "(null)", list);
}

/* ------------------------------------------------------------ config.json */

static const char *hf_class(const char *model_type)
{
    if (strcmp(model_type, "qwen2") == 0)
        return "Qwen2ForCausalLM";
    if (strcmp(model_type, "qwen3") == 0)
        return "Qwen3ForCausalLM";
    if (strcmp(model_type, "mixtral") == 0)
        return "MixtralForCausalLM";
    return "LlamaForCausalLM";
}

int random_preset_config_json(const random_preset *x, const alm_random_params *p, char **json,
                              alm_error *err)
{
    char rope[256] = "null", extra[256] = "", quant[160] = "";
    if (x->rope_factor > 0)
        snprintf(rope, sizeof rope,
                 "{\"rope_type\": \"llama3\", \"factor\": %.17g, \"low_freq_factor\": %.17g, "
                 "\"high_freq_factor\": %.17g, \"original_max_position_embeddings\": %d}",
                 x->rope_factor, x->rope_low_freq_factor, x->rope_high_freq_factor,
                 x->rope_original_max_pos);
    if (strcmp(x->model_type, "qwen2") == 0 || strcmp(x->model_type, "qwen3") == 0)
        snprintf(extra, sizeof extra,
                 ", \"use_sliding_window\": false, \"sliding_window\": %d, \"max_window_layers\": %d",
                 x->max_position_embeddings, x->n_layers);
    else if (x->n_experts)
        snprintf(extra, sizeof extra, ", \"num_local_experts\": %d, \"num_experts_per_tok\": %d",
                 x->n_experts, x->n_experts_per_tok);
    if (p->bits)
        snprintf(quant, sizeof quant,
                 ", \"quantization\": {\"group_size\": %d, \"bits\": %d}"
                 ", \"quantization_config\": {\"group_size\": %d, \"bits\": %d}",
                 p->group_size, p->bits, p->group_size, p->bits);
    int n = asprintf(json,
                     "{\"architectures\": [\"%s\"], \"model_type\": \"%s\", \"vocab_size\": %d, "
                     "\"hidden_size\": %d, \"intermediate_size\": %d, \"num_hidden_layers\": %d, "
                     "\"num_attention_heads\": %d, \"num_key_value_heads\": %d, \"head_dim\": %d, "
                     "\"max_position_embeddings\": %d, \"rms_norm_eps\": %.17g, "
                     "\"rope_theta\": %.17g, \"rope_scaling\": %s, \"tie_word_embeddings\": %s, "
                     "\"attention_bias\": false, \"torch_dtype\": \"bfloat16\"%s%s}",
                     hf_class(x->model_type), x->model_type, x->vocab_size, x->hidden_size,
                     x->intermediate_size, x->n_layers, x->n_heads, x->n_kv_heads, x->head_dim,
                     x->max_position_embeddings, x->rms_norm_eps, x->rope_theta, rope,
                     x->tie_word_embeddings ? "true" : "false", extra, quant);
    if (n < 0) {
        *json = NULL;
        return alm_error_set(err, -ENOMEM, "out of memory");
    }
    return 0;
}

/* ------------------------------------------------------------ layout */

typedef enum fill_kind {
    FILL_ONES,     /* norm weights */
    FILL_UNIFORM,  /* dense weights, linear biases (BF16) */
    FILL_BITS,     /* packed quantized values: every bit pattern is a valid q */
    FILL_SCALES,   /* per-group scales */
    FILL_BIASES,   /* per-group biases, centring that group's values */
} fill_kind;

typedef struct tensor_plan {
    char name[NAME_LEN];
    alm_dtype dtype;
    int n_dims;
    int64_t shape[3];
    size_t offset, bytes;
    fill_kind fill;
    uint64_t salt;   /* the module's: its scales and biases draw the same numbers */
    int bits;
} tensor_plan;

typedef struct model_plan {
    tensor_plan *t;
    size_t n, cap;
    size_t total;
    uint64_t n_modules;
} model_plan;

/* Tensor names are short; one cut off here would fail to bind, loudly. */
__attribute__((format(printf, 2, 3)))
static void format_name(char *buf, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, NAME_LEN, fmt, ap);
    va_end(ap);
}

static int plan_add(model_plan *pl, const char *name, alm_dtype dtype, int n_dims,
                    const int64_t *shape, fill_kind fill, int bits)
{
    if (pl->n == pl->cap) {
        size_t cap = pl->cap ? pl->cap * 2 : 256;
        tensor_plan *grown = realloc(pl->t, cap * sizeof *grown);
        if (!grown)
            return -ENOMEM;
        pl->t = grown;
        pl->cap = cap;
    }
    tensor_plan *t = &pl->t[pl->n++];
    memset(t, 0, sizeof *t);
    format_name(t->name, "%s", name);
    t->dtype = dtype;
    t->n_dims = n_dims;
    t->bytes = alm_dtype_size(dtype);
    for (int i = 0; i < n_dims; i++) {
        t->shape[i] = shape[i];
        t->bytes *= (size_t)shape[i];
    }
    t->offset = (pl->total + TENSOR_ALIGN - 1) / TENSOR_ALIGN * TENSOR_ALIGN;
    pl->total = t->offset + t->bytes;
    t->fill = fill;
    t->bits = bits;
    t->salt = pl->n_modules;
    return 0;
}

static int plan_vector(model_plan *pl, const char *name, int n, fill_kind fill)
{
    int64_t shape[1] = { n };
    pl->n_modules++;
    return plan_add(pl, name, ALM_DTYPE_BF16, 1, shape, fill, 0);
}

/* MODULE.weight as [n_stack][rows][cols] (n_stack 0: [rows][cols]), with
 * MODULE.scales and MODULE.biases when the config quantizes it. */
static int plan_matrix(model_plan *pl, const model_config *cfg, const char *module, int n_stack,
                       int rows, int cols)
{
    quant_spec q = model_config_quant_for(cfg, module);
    int d = n_stack ? 1 : 0;
    int64_t shape[3] = { n_stack, rows, cols };
    char name[NAME_LEN];
    int r = 0;
    pl->n_modules++;
    if (!q.bits || cols % q.group_size) {
        /* MLX leaves a module that groups do not divide unquantized. */
        format_name(name, "%s.weight", module);
        return plan_add(pl, name, ALM_DTYPE_BF16, 2 + d, shape + 1 - d, FILL_UNIFORM, 0);
    }
    shape[2] = (int64_t)cols * q.bits / 32;
    format_name(name, "%s.weight", module);
    r |= plan_add(pl, name, ALM_DTYPE_U32, 2 + d, shape + 1 - d, FILL_BITS, q.bits);
    shape[2] = cols / q.group_size;
    format_name(name, "%s.scales", module);
    r |= plan_add(pl, name, ALM_DTYPE_BF16, 2 + d, shape + 1 - d, FILL_SCALES, q.bits);
    format_name(name, "%s.biases", module);
    r |= plan_add(pl, name, ALM_DTYPE_BF16, 2 + d, shape + 1 - d, FILL_BIASES, q.bits);
    return r;
}

/* The tensors model_weights_bind looks for, by the same names and shapes. */
static int plan_model(const model_config *c, model_plan *pl)
{
    const int hidden = c->hidden_size, inter = c->intermediate_size;
    const int q_dim = c->n_heads * c->head_dim, kv_dim = c->n_kv_heads * c->head_dim;
    char module[NAME_LEN], name[NAME_LEN];
    int r = plan_matrix(pl, c, "model.embed_tokens", 0, c->vocab_size, hidden);
    r |= plan_vector(pl, "model.norm.weight", hidden, FILL_ONES);
    if (!c->tie_word_embeddings)
        r |= plan_matrix(pl, c, "lm_head", 0, c->vocab_size, hidden);
    for (int l = 0; l < c->n_layers && r == 0; l++) {
        static const char *const attn[4] = { "q_proj", "k_proj", "v_proj", "o_proj" };
        const int rows[4] = { q_dim, kv_dim, kv_dim, hidden };
        const int cols[4] = { hidden, hidden, hidden, q_dim };
        const bool bias[4] = { c->attention_bias, c->attention_bias, c->attention_bias, c->o_proj_bias };
        format_name(name, "model.layers.%d.input_layernorm.weight", l);
        r |= plan_vector(pl, name, hidden, FILL_ONES);
        format_name(name, "model.layers.%d.post_attention_layernorm.weight", l);
        r |= plan_vector(pl, name, hidden, FILL_ONES);
        for (int i = 0; i < 4; i++) {
            format_name(module, "model.layers.%d.self_attn.%s", l, attn[i]);
            r |= plan_matrix(pl, c, module, 0, rows[i], cols[i]);
            format_name(name, "%s.bias", module);
            if (bias[i])
                r |= plan_vector(pl, name, rows[i], FILL_UNIFORM);
        }
        if (c->qk_norm) {
            format_name(name, "model.layers.%d.self_attn.q_norm.weight", l);
            r |= plan_vector(pl, name, c->head_dim, FILL_ONES);
            format_name(name, "model.layers.%d.self_attn.k_norm.weight", l);
            r |= plan_vector(pl, name, c->head_dim, FILL_ONES);
        }
        if (c->n_experts) {
            /* MLX's stacked layout: one [experts][rows][cols] tensor per
             * projection. */
            format_name(module, "model.layers.%d.block_sparse_moe.gate", l);
            r |= plan_matrix(pl, c, module, 0, c->n_experts, hidden);
            static const char *const proj[3] = { "gate_proj", "up_proj", "down_proj" };
            for (int i = 0; i < 3; i++) {
                format_name(module, "model.layers.%d.block_sparse_moe.switch_mlp.%s", l, proj[i]);
                r |= plan_matrix(pl, c, module, c->n_experts, i == 2 ? hidden : inter,
                                 i == 2 ? inter : hidden);
            }
        } else {
            static const char *const mlp[3] = { "gate_proj", "up_proj", "down_proj" };
            for (int i = 0; i < 3; i++) {
                format_name(module, "model.layers.%d.mlp.%s", l, mlp[i]);
                r |= plan_matrix(pl, c, module, 0, i == 2 ? hidden : inter, i == 2 ? inter : hidden);
                format_name(name, "%s.bias", module);
                if (c->mlp_bias)
                    r |= plan_vector(pl, name, i == 2 ? hidden : inter, FILL_UNIFORM);
            }
        }
    }
    return r ? -ENOMEM : 0;
}

/* The preset's config and tensor layout; cfg must be cleared by the caller
 * (also on error), pl->t freed. */
static int plan_preset(const char *preset_name, const alm_random_params *p, char *source,
                       size_t source_len, model_config *cfg, model_plan *pl, alm_error *err)
{
    const random_preset *preset;
    int r = check_params(p, err);
    if (r == 0)
        r = find_preset(preset_name, &preset, err);
    if (r < 0)
        return r;
    snprintf(source, source_len, "random:%s", preset->name);
    _cleanup_free_ char *json = NULL;
    r = random_preset_config_json(preset, p, &json, err);
    if (r < 0)
        return r;
    char path[NAME_LEN];
    snprintf(path, sizeof path, "%s/config.json", source);
    r = model_config_parse(json, strlen(json), path, cfg, err);
    if (r < 0)
        return r;
    if (plan_model(cfg, pl) < 0)
        return alm_error_set(err, -ENOMEM, "out of memory");
    return 0;
}

int alm_random_weight_bytes(const char *preset, const alm_random_params *params, size_t *bytes,
                            alm_error *err)
{
    alm_random_params defaults = alm_random_default_params();
    model_config cfg;
    model_plan pl = { 0 };
    char source[NAME_LEN];
    memset(&cfg, 0, sizeof cfg);
    int r = plan_preset(preset, params ? params : &defaults, source, sizeof source, &cfg, &pl, err);
    if (r == 0)
        *bytes = pl.total;
    free(pl.t);
    model_config_clear(&cfg);
    return r;
}

/* ------------------------------------------------------------ filling */

/* splitmix64 of a counter: any element can be computed on its own, so the
 * weights do not depend on how the work is split. */
static inline uint64_t mix64(uint64_t x)
{
    x += 0x9e3779b97f4a7c15ull;
    x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
    x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
    return x ^ (x >> 31);
}

static inline uint64_t stream_key(uint64_t seed, uint64_t salt)
{
    return mix64(seed ^ mix64(salt + 0x632be59bd9b4e019ull));
}

/* A uniform 16-bit draw as a value in [-WEIGHT_RANGE, WEIGHT_RANGE]. */
static inline uint16_t uniform_bf16(uint64_t bits16, float range)
{
    return alm_f32_to_bf16(((float)bits16 * (1.0f / 32768.0f) - 1.0f) * range);
}

/* A group's scale: values q * scale + bias then span about
 * [-WEIGHT_RANGE, WEIGHT_RANGE] (each group a little wider or narrower). */
static inline float group_scale(uint64_t key, size_t group, int bits)
{
    float jitter = 0.75f + 0.5f * (float)(mix64(key ^ group) >> 40) * (1.0f / 16777216.0f);
    return 2.0f * WEIGHT_RANGE / (float)((1 << bits) - 1) * jitter;
}

/* Fills bytes [begin, end) of tensor t (begin and end on 8-byte
 * boundaries or at the tensor's end). */
static void fill_range(const tensor_plan *t, uint8_t *base, uint64_t seed, size_t begin, size_t end)
{
    uint8_t *data = base + t->offset;
    uint64_t key = stream_key(seed, t->salt * 8 + (uint64_t)t->fill);
    uint64_t group_key = stream_key(seed, t->salt * 8 + FILL_SCALES);
    switch (t->fill) {
    case FILL_BITS:
    case FILL_UNIFORM:
        for (size_t i = begin; i < end; i += 8) {
            uint64_t v = mix64(key + i / 8);
            if (t->fill == FILL_UNIFORM) {
                /* four BF16 values from one draw */
                uint64_t packed = 0;
                for (int j = 0; j < 4; j++)
                    packed |= (uint64_t)uniform_bf16((v >> (16 * j)) & 0xffff, WEIGHT_RANGE) << (16 * j);
                v = packed;
            }
            memcpy(data + i, &v, end - i < 8 ? end - i : 8);
        }
        break;
    case FILL_ONES:
    case FILL_SCALES:
    case FILL_BIASES:
        for (size_t i = begin / 2; i < end / 2; i++) {
            float x = 1.0f;
            if (t->fill != FILL_ONES) {
                float s = group_scale(group_key, i, t->bits);
                x = t->fill == FILL_SCALES ? s : -0.5f * s * (float)((1 << t->bits) - 1);
            }
            uint16_t h = alm_f32_to_bf16(x);
            memcpy(data + 2 * i, &h, 2);
        }
        break;
    }
}

typedef struct fill_job {
    const model_plan *pl;
    uint8_t *base;
    uint64_t seed;
    /* chunk_start[i]: the first chunk of tensor i; chunk_start[n]: all */
    const size_t *chunk_start;
    atomic_size_t next;
} fill_job;

static void fill_thread(void *ctx, int index, int n_threads)
{
    fill_job *job = ctx;
    const model_plan *pl = job->pl;
    size_t n_chunks = job->chunk_start[pl->n];
    size_t tensor = 0;
    for (;;) {
        size_t c = atomic_fetch_add_explicit(&job->next, 1, memory_order_relaxed);
        if (c >= n_chunks)
            break;
        while (job->chunk_start[tensor + 1] <= c)
            tensor++;
        const tensor_plan *t = &pl->t[tensor];
        size_t begin = (c - job->chunk_start[tensor]) * FILL_CHUNK;
        size_t end = begin + FILL_CHUNK < t->bytes ? begin + FILL_CHUNK : t->bytes;
        fill_range(t, job->base, job->seed, begin, end);
    }
}

/* Models of different presets built with one seed must not share values
 * (a target and its draft would then agree by construction). */
static uint64_t preset_seed(const char *preset, uint64_t seed)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (const char *c = preset; *c; c++)
        h = (h ^ (uint8_t)*c) * 1099511628211ull;
    return mix64(seed ^ h);
}

static int fill_all(const model_plan *pl, uint8_t *base, const char *preset,
                    const alm_random_params *p, alm_error *err)
{
    _cleanup_free_ size_t *chunk_start = malloc(sizeof *chunk_start * (pl->n + 1));
    if (!chunk_start)
        return alm_error_set(err, -ENOMEM, "out of memory");
    size_t n = 0;
    for (size_t i = 0; i < pl->n; i++) {
        chunk_start[i] = n;
        n += (pl->t[i].bytes + FILL_CHUNK - 1) / FILL_CHUNK;
    }
    chunk_start[pl->n] = n;
    alm_pool *pool = NULL;
    if (alm_pool_new(p->n_threads, &pool) < 0)
        return alm_error_set(err, -ENOMEM, "cannot start threads to fill the weights");
    fill_job job = { .pl = pl, .base = base, .seed = preset_seed(preset, p->seed),
                     .chunk_start = chunk_start };
    atomic_init(&job.next, 0);
    alm_pool_run(pool, fill_thread, &job);
    alm_pool_free(pool);
    return 0;
}

/* ------------------------------------------------------------ model */

typedef struct random_source {
    const char *preset;
    const alm_random_params *params;
} random_source;

static int read_random(alm_model *m, void *ctx, alm_error *err)
{
    const random_source *src = ctx;
    model_plan pl = { 0 };
    char source[NAME_LEN];
    void *base = NULL;
    int r = plan_preset(src->preset, src->params, source, sizeof source, &m->cfg, &pl, err);
    if (r == 0)
        r = tensor_store_new_memory(source, pl.total, &m->store, &base, err);
    for (size_t i = 0; r == 0 && i < pl.n; i++)
        r = tensor_store_add(m->store, pl.t[i].name, pl.t[i].dtype, pl.t[i].n_dims, pl.t[i].shape,
                             pl.t[i].offset, err);
    if (r == 0)
        r = tensor_store_seal(m->store, err);
    if (r == 0)
        r = fill_all(&pl, base, src->preset, src->params, err);
    free(pl.t);
    return r;
}

int alm_model_new_random(const char *preset, const alm_random_params *params,
                         const alm_model_params *model_params, alm_model **out, alm_error *err)
{
    alm_random_params defaults = alm_random_default_params();
    random_source src = { preset, params ? params : &defaults };
    char name[NAME_LEN];
    format_name(name, "random:%s", preset ? preset : "(null)");
    return model_create(name, model_params, read_random, &src, out, err);
}
