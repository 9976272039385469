/* alm-engine bench: prefill and decode speed, and the cost of a pass over
 * several tokens relative to one (what decides whether speculative decoding
 * can pay). Medians over --repeat runs. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/argmax.h"
#include "core/clock.h"
#include "tools/tool.h"

static int compare_doubles(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *v, int n)
{
    qsort(v, (size_t)n, sizeof *v, compare_doubles);
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static void add_summary(JsonBuilder *b, const char *name, double *v, int n)
{
    double med = median(v, n); /* sorts v */
    json_builder_set_member_name(b, name);
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "median");
    json_builder_add_double_value(b, med);
    json_builder_set_member_name(b, "min");
    json_builder_add_double_value(b, v[0]);
    json_builder_set_member_name(b, "max");
    json_builder_add_double_value(b, v[n - 1]);
    json_builder_end_object(b);
}

/* Prompts for the speculative comparison: acceptance depends on the text,
 * so these are real code, like what the coder models are for. */
static const char *const spec_prompts[] = {
    "import os\nimport sys\n\n\ndef main(argv):\n",
    "class Stack:\n    def __init__(self):\n        self.items = []\n\n    def push(self, item):\n",
    "def read_config(path):\n    \"\"\"Read a configuration file and return a dict.\"\"\"\n",
    "for i in range(10):\n    if i % 2 == 0:\n",
};
#define N_SPEC_PROMPTS (int)(sizeof spec_prompts / sizeof spec_prompts[0])

typedef struct spec_bench {
    double *plain, *spec;          /* tok/s per repeat */
    long drafted, accepted, target_passes, draft_passes;
    double draft_seconds, target_seconds;
    double plain_seconds;
    long plain_tokens;
} spec_bench;

/* Plain and speculative decoding of the same prompt, one after the other,
 * so that both see the same machine state. */
static int spec_bench_run(alm_model *model, alm_model *draft_model, alm_pool *pool,
                          const alm_generate_params *base, int gen_tokens, int rep,
                          spec_bench *sb, alm_error *err)
{
    const char *text = spec_prompts[(rep + N_SPEC_PROMPTS) % N_SPEC_PROMPTS]; /* rep -1: warm-up */
    int32_t *prompt = NULL;
    size_t n_prompt = 0;
    int r = alm_tokenizer_encode(alm_model_tokenizer(model), text, strlen(text), true,
                                 &prompt, &n_prompt, err);
    if (r < 0)
        return r;
    int cap = (int)n_prompt + gen_tokens + ALM_MAX_DRAFT_TOKENS + 2;
    alm_seq *seq = NULL, *draft = NULL;
    r = alm_seq_new(model, cap, &seq, err);
    if (r == 0 && draft_model)
        r = alm_seq_new(draft_model, cap, &draft, err);
    for (int pass = 0; r == 0 && pass < 2; pass++) {
        alm_generate_params gp = *base;
        gp.max_tokens = gen_tokens;
        gp.ignore_eos = true;
        gp.sampling.seed = (uint64_t)rep + 1;
        if (pass == 0)
            gp.speculative.mode = ALM_SPECULATIVE_OFF;
        alm_seq_truncate(seq, 0);
        if (draft)
            alm_seq_truncate(draft, 0);
        alm_generate_stats st;
        r = alm_generate(seq, pass ? draft : NULL, pool, prompt, n_prompt, &gp, NULL, NULL,
                         NULL, NULL, &st, err);
        if (r < 0)
            break;
        if (rep < 0)
            continue; /* warm-up */
        if (pass == 0) {
            sb->plain[rep] = st.decode_tok_s;
            sb->plain_seconds += st.decode_seconds;
            sb->plain_tokens += st.generated_tokens - 1;
        } else {
            const alm_speculative_stats *ss = &st.speculative;
            sb->spec[rep] = st.decode_tok_s;
            sb->drafted += ss->drafted;
            sb->accepted += ss->accepted;
            sb->target_passes += ss->target_passes;
            sb->draft_passes += ss->draft_passes;
            sb->draft_seconds += ss->draft_seconds;
            sb->target_seconds += ss->target_seconds;
        }
    }
    alm_seq_free(seq);
    alm_seq_free(draft);
    free(prompt);
    return r;
}

static const int batch_sizes[] = { 1, 2, 4, 5, 8 };
#define N_BATCH_SIZES (int)(sizeof batch_sizes / sizeof batch_sizes[0])

int cmd_bench(int argc, char **argv)
{
    static const struct option opts[] = {
        { "model", required_argument, NULL, 'm' },
        { "prompt-tokens", required_argument, NULL, 'p' },
        { "gen-tokens", required_argument, NULL, 'g' },
        { "threads", required_argument, NULL, 't' },
        { "repeat", required_argument, NULL, 'r' },
        { "temperature", required_argument, NULL, 'T' },
        { "help", no_argument, NULL, 'h' },
        SPEC_LONG_OPTIONS,
        { 0 },
    };
    spec_options spec = { 0 };
    double temperature = 0.0;
    const char *model_dir = NULL;
    long prompt_tokens = 512, gen_tokens = 128, threads = 0, repeat = 5;
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        int r = 0;
        switch (c) {
        case 'm': model_dir = optarg; break;
        case 'p': r = tool_parse_int(optarg, "--prompt-tokens", 1, 1 << 20, &prompt_tokens); break;
        case 'g': r = tool_parse_int(optarg, "--gen-tokens", 1, 1 << 20, &gen_tokens); break;
        case 't': r = tool_parse_int(optarg, "--threads", 0, 1024, &threads); break;
        case 'r': r = tool_parse_int(optarg, "--repeat", 1, 10000, &repeat); break;
        case 'T': r = tool_parse_double(optarg, "--temperature", &temperature); break;
        case 'h':
            printf("usage: alm-engine bench --model DIR [--prompt-tokens 512] [--gen-tokens 128]"
                   " [--threads N] [--repeat R]\n         [--temperature T]\n" SPEC_USAGE);
            return 0;
        default: r = spec_options_take(&spec, c, optarg) ? 0 : -1;
        }
        if (r < 0)
            return 2;
    }
    if (!model_dir)
        return tool_fail("bench needs --model");

    alm_error err = { 0 };
    alm_model *model = NULL, *draft_model = NULL;
    alm_seq *seq = NULL;
    alm_pool *pool = NULL;
    int status = 1;
    alm_generate_params gp = alm_generate_default_params();
    spec_bench sb = { 0 };
    int32_t *prompt = NULL;
    float *logits = NULL;
    double *prefill = NULL, *decode = NULL, *steps = NULL;
    int n_rep = (int)repeat;

    alm_model_params mp = tool_model_params(spec.device);
    if (alm_model_load(model_dir, &mp, &model, &err) < 0 ||
        alm_seq_new(model, (int)(prompt_tokens + gen_tokens + 16), &seq, &err) < 0) {
        tool_fail("%s", err.message);
        goto out;
    }
    if (alm_pool_new((int)threads, &pool) < 0) {
        tool_fail("cannot start threads");
        goto out;
    }
    if (spec_options_resolve(&spec, &gp.speculative, &draft_model) < 0)
        goto out;
    if (draft_model && alm_check_draft(model, draft_model, &err) < 0) {
        tool_fail("%s", err.message);
        goto out;
    }
    gp.sampling.temperature = (float)temperature;
    sb.plain = calloc((size_t)n_rep, sizeof(double));
    sb.spec = calloc((size_t)n_rep, sizeof(double));
    if (!sb.plain || !sb.spec) {
        tool_fail("out of memory");
        goto out;
    }
    int vocab = alm_model_vocab_size(model);
    prompt = malloc(sizeof *prompt * (size_t)prompt_tokens);
    logits = malloc(sizeof *logits * (size_t)vocab * 8);
    prefill = malloc(sizeof *prefill * (size_t)n_rep);
    decode = malloc(sizeof *decode * (size_t)n_rep);
    steps = malloc(sizeof *steps * (size_t)n_rep * N_BATCH_SIZES);
    if (!prompt || !logits || !prefill || !decode || !steps) {
        tool_fail("out of memory");
        goto out;
    }
    /* A fixed pseudo-random prompt: the speed does not depend on the text. */
    uint32_t state = 12345;
    for (long i = 0; i < prompt_tokens; i++) {
        state = state * 1664525u + 1013904223u;
        prompt[i] = (int32_t)(state >> 8) % vocab;
    }

    /* One untimed run warms caches and the page mappings. */
    for (int rep = -1; rep < n_rep; rep++) {
        alm_seq_truncate(seq, 0);
        double t0 = alm_now_seconds();
        if (alm_seq_forward(seq, pool, prompt, (int)prompt_tokens, 1, logits, &err) < 0) {
            tool_fail("%s", err.message);
            goto out;
        }
        double t1 = alm_now_seconds();
        int32_t id = alm_argmax(logits, vocab);
        for (long i = 0; i < gen_tokens; i++) {
            if (alm_seq_forward(seq, pool, &id, 1, 1, logits, &err) < 0) {
                tool_fail("%s", err.message);
                goto out;
            }
            id = alm_argmax(logits, vocab);
        }
        double t2 = alm_now_seconds();
        if (rep < 0)
            continue;
        prefill[rep] = (double)prompt_tokens / (t1 - t0);
        decode[rep] = (double)gen_tokens / (t2 - t1);

        /* Passes over b tokens (logits for each, as verification needs) at
         * the context the decode reached, each cut back afterwards. */
        int base = alm_seq_length(seq);
        for (int j = 0; j < N_BATCH_SIZES; j++) {
            const int inner = 20;
            double s0 = alm_now_seconds();
            for (int k = 0; k < inner; k++) {
                alm_seq_truncate(seq, base - batch_sizes[j]);
                alm_seq_forward(seq, pool, prompt, batch_sizes[j], batch_sizes[j], logits, &err);
            }
            steps[j * n_rep + rep] = (alm_now_seconds() - s0) / inner;
        }
    }
    if (gp.speculative.mode != ALM_SPECULATIVE_OFF) {
        for (int rep = -1; rep < n_rep; rep++) {
            if (spec_bench_run(model, draft_model, pool, &gp, (int)gen_tokens, rep, &sb, &err) < 0) {
                tool_fail("%s", err.message);
                goto out;
            }
        }
    }

    JsonBuilder *b = json_builder_new();
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "model");
    json_builder_add_string_value(b, model_dir);
    json_builder_set_member_name(b, "threads");
    json_builder_add_int_value(b, alm_pool_size(pool));
    json_builder_set_member_name(b, "prompt_tokens");
    json_builder_add_int_value(b, prompt_tokens);
    json_builder_set_member_name(b, "gen_tokens");
    json_builder_add_int_value(b, gen_tokens);
    json_builder_set_member_name(b, "repeat");
    json_builder_add_int_value(b, n_rep);
    json_builder_set_member_name(b, "weight_bytes");
    json_builder_add_int_value(b, (gint64)alm_model_weight_bytes(model));
    add_summary(b, "prefill_tok_s", prefill, n_rep);
    add_summary(b, "decode_tok_s", decode, n_rep);
    double step1 = median(steps, n_rep);
    json_builder_set_member_name(b, "step_ms");
    json_builder_add_double_value(b, step1 * 1e3);
    json_builder_set_member_name(b, "batch_cost");
    json_builder_begin_object(b);
    for (int j = 1; j < N_BATCH_SIZES; j++) {
        char key[16];
        snprintf(key, sizeof key, "%d", batch_sizes[j]);
        json_builder_set_member_name(b, key);
        json_builder_add_double_value(b, median(steps + j * n_rep, n_rep) / step1);
    }
    json_builder_end_object(b);
    if (gp.speculative.mode != ALM_SPECULATIVE_OFF) {
        /* Costs as multiples of one plain target step (decode time per
         * token of the plain runs). */
        double target_step = sb.plain_tokens ? sb.plain_seconds / (double)sb.plain_tokens : 0;
        double plain = median(sb.plain, n_rep), sped = median(sb.spec, n_rep);
        json_builder_set_member_name(b, "speculative");
        json_builder_add_string_value(b, gp.speculative.mode == ALM_SPECULATIVE_DRAFT ? "draft" : "ngram");
        json_builder_set_member_name(b, "temperature");
        json_builder_add_double_value(b, temperature);
        json_builder_set_member_name(b, "num_draft_tokens");
        if (gp.speculative.num_draft_tokens)
            json_builder_add_int_value(b, gp.speculative.num_draft_tokens);
        else
            json_builder_add_string_value(b, "auto");
        json_builder_set_member_name(b, "plain_decode_tok_s");
        json_builder_add_double_value(b, plain);
        json_builder_set_member_name(b, "spec_decode_tok_s");
        json_builder_add_double_value(b, sped);
        json_builder_set_member_name(b, "speedup");
        json_builder_add_double_value(b, plain > 0 ? sped / plain : 0);
        json_builder_set_member_name(b, "acceptance_rate");
        json_builder_add_double_value(b, sb.drafted ? (double)sb.accepted / (double)sb.drafted : 0);
        json_builder_set_member_name(b, "tokens_per_target_pass");
        json_builder_add_double_value(b, sb.target_passes
            ? (double)(sb.accepted + sb.target_passes) / (double)sb.target_passes : 0);
        json_builder_set_member_name(b, "draft_step_cost");
        json_builder_add_double_value(b, sb.draft_passes && target_step > 0
            ? sb.draft_seconds / (double)sb.draft_passes / target_step : 0);
        json_builder_set_member_name(b, "verify_cost");
        json_builder_add_double_value(b, sb.target_passes && target_step > 0
            ? sb.target_seconds / (double)sb.target_passes / target_step : 0);
    }
    json_builder_end_object(b);
    tool_print_json(b);
    g_object_unref(b);
    status = 0;
out:
    free(prompt);
    free(logits);
    free(prefill);
    free(decode);
    free(steps);
    free(sb.plain);
    free(sb.spec);
    alm_seq_free(seq);
    alm_pool_free(pool);
    alm_model_free(model);
    alm_model_free(draft_model);
    return status;
}
