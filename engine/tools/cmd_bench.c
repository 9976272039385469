/* alm-engine bench: prefill and decode speed, and the cost of a pass over
 * several tokens relative to one (what decides whether speculative decoding
 * can pay). Medians over --repeat runs. --random builds a model of a real
 * size with random weights instead of loading one; --synthetic-acceptance
 * sets the draft's acceptance rate (speculative/synthetic_acceptance.h);
 * --bandwidth-gbs relates decode speed to the memory-bandwidth roofline. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/argmax.h"
#include "core/clock.h"
#include "speculative/synthetic_acceptance.h"
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
/* Prompt length for models without a tokenizer (random ids). */
#define RANDOM_PROMPT_TOKENS 32

/* What --random and its companions ask for. */
typedef struct bench_random {
    const char *preset;        /* --random */
    const char *draft_preset;  /* --draft-random */
    alm_random_params params;  /* --q-bits, --q-group-size */
    double synthetic;          /* --synthetic-acceptance; < 0: off */
    double bandwidth_gbs;      /* --bandwidth-gbs; 0: not given */
} bench_random;

/* Pseudo-random ids: the speed does not depend on the text. */
static void random_ids(int32_t *ids, long n, int vocab, uint32_t state)
{
    for (long i = 0; i < n; i++) {
        state = state * 1664525u + 1013904223u;
        ids[i] = (int32_t)(state >> 8) % vocab;
    }
}

typedef struct spec_bench {
    double *plain, *spec;          /* tok/s per repeat */
    long drafted, accepted, target_passes, draft_passes;
    double draft_seconds, target_seconds;
    double plain_seconds;
    long plain_tokens;
    /* synthetic acceptance: verified proposals, kept ones, runs whose
     * output differed from the plain run's */
    long looked_at, kept;
    int diverged;
} spec_bench;

/* Plain and speculative decoding of the same prompt, one after the other,
 * so that both see the same machine state. */
static int spec_bench_run(alm_model *model, alm_model *draft_model, alm_pool *pool,
                          const alm_generate_params *base, int gen_tokens, int rep,
                          double synthetic, spec_bench *sb, alm_error *err)
{
    const char *text = spec_prompts[(rep + N_SPEC_PROMPTS) % N_SPEC_PROMPTS]; /* rep -1: warm-up */
    int32_t *prompt = NULL, *recorded = NULL, *ids = NULL;
    size_t n_prompt = 0, n_recorded = 0, n_ids = 0;
    int r = 0;
    if (alm_model_tokenizer(model)) {
        r = alm_tokenizer_encode(alm_model_tokenizer(model), text, strlen(text), true,
                                 &prompt, &n_prompt, err);
    } else if ((prompt = malloc(sizeof *prompt * RANDOM_PROMPT_TOKENS)) != NULL) {
        n_prompt = RANDOM_PROMPT_TOKENS;
        random_ids(prompt, RANDOM_PROMPT_TOKENS, alm_model_vocab_size(model), 777u + (uint32_t)(rep + 1));
    } else {
        r = -ENOMEM;
    }
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
        synthetic_acceptance sa;
        if (pass == 1 && synthetic >= 0) {
            /* the plain run's output is the record the proposals stand in for */
            synthetic_acceptance_init(&sa, recorded, n_recorded, (int)n_prompt, synthetic,
                                      alm_model_vocab_size(model), (uint64_t)rep + 1);
            r = synthetic_generate(seq, draft, pool, prompt, n_prompt, &gp, &sa, &ids, &n_ids, &st, err);
            if (r == 0 && rep >= 0) {
                sb->looked_at += sa.looked_at;
                sb->kept += sa.kept;
                sb->diverged += n_ids != n_recorded || memcmp(ids, recorded, sizeof *ids * n_ids) != 0;
            }
        } else {
            r = alm_generate(seq, pass ? draft : NULL, pool, prompt, n_prompt, &gp, NULL, NULL,
                             pass == 0 && synthetic >= 0 ? &recorded : NULL, &n_recorded, &st, err);
        }
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
    free(recorded);
    free(ids);
    return r;
}

/* Builds the --random model (and --draft-random); prints the error. */
static int build_random(const char *preset, const bench_random *br, const alm_model_params *mp,
                        alm_model **out, double *seconds)
{
    alm_error err = { 0 };
    double t0 = alm_now_seconds();
    if (alm_model_new_random(preset, &br->params, mp, out, &err) < 0)
        return tool_fail("%s", err.message), -1;
    *seconds = alm_now_seconds() - t0;
    return 0;
}

/* The random model's description and the roofline in the JSON. */
static void add_random_info(JsonBuilder *b, const bench_random *br, const alm_model *model,
                            double build_seconds, double decode_tok_s)
{
    if (br->preset) {
        json_builder_set_member_name(b, "random_preset");
        json_builder_add_string_value(b, br->preset);
        json_builder_set_member_name(b, "q_bits");
        json_builder_add_int_value(b, br->params.bits);
        json_builder_set_member_name(b, "q_group_size");
        json_builder_add_int_value(b, br->params.bits ? br->params.group_size : 0);
        json_builder_set_member_name(b, "build_seconds");
        json_builder_add_double_value(b, build_seconds);
    }
    size_t per_token = alm_model_decode_bytes(model);
    json_builder_set_member_name(b, "decode_bytes_per_token");
    json_builder_add_int_value(b, (gint64)per_token);
    if (br->bandwidth_gbs > 0 && per_token > 0) {
        /* Batch-1 decode reads every weight once per token: it cannot be
         * faster than bandwidth / bytes per token. */
        double roofline = br->bandwidth_gbs * 1e9 / (double)per_token;
        json_builder_set_member_name(b, "bandwidth_gbs");
        json_builder_add_double_value(b, br->bandwidth_gbs);
        json_builder_set_member_name(b, "roofline_decode_tok_s");
        json_builder_add_double_value(b, roofline);
        json_builder_set_member_name(b, "roofline_fraction");
        json_builder_add_double_value(b, decode_tok_s / roofline);
    }
}

static const int batch_sizes[] = { 1, 2, 4, 5, 8 };
#define N_BATCH_SIZES (int)(sizeof batch_sizes / sizeof batch_sizes[0])

/* Long-only options. */
enum { OPT_RANDOM = 256, OPT_DRAFT_RANDOM, OPT_Q_BITS, OPT_Q_GROUP_SIZE, OPT_SYNTHETIC, OPT_BANDWIDTH };

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
        { "random", required_argument, NULL, OPT_RANDOM },
        { "draft-random", required_argument, NULL, OPT_DRAFT_RANDOM },
        { "q-bits", required_argument, NULL, OPT_Q_BITS },
        { "q-group-size", required_argument, NULL, OPT_Q_GROUP_SIZE },
        { "synthetic-acceptance", required_argument, NULL, OPT_SYNTHETIC },
        { "bandwidth-gbs", required_argument, NULL, OPT_BANDWIDTH },
        SPEC_LONG_OPTIONS,
        { 0 },
    };
    spec_options spec = { 0 };
    double temperature = 0.0;
    const char *model_dir = NULL;
    long prompt_tokens = 512, gen_tokens = 128, threads = 0, repeat = 5, bits = 4, group = 64;
    bench_random br = { .synthetic = -1 };
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
        case OPT_RANDOM: br.preset = optarg; break;
        case OPT_DRAFT_RANDOM: br.draft_preset = optarg; break;
        case OPT_Q_BITS: r = tool_parse_int(optarg, "--q-bits", 0, 8, &bits); break;
        case OPT_Q_GROUP_SIZE: r = tool_parse_int(optarg, "--q-group-size", 1, 1024, &group); break;
        case OPT_SYNTHETIC:
            r = tool_parse_double(optarg, "--synthetic-acceptance", &br.synthetic);
            if (r == 0 && !(br.synthetic >= 0 && br.synthetic <= 1))
                r = -tool_fail("--synthetic-acceptance: expected a rate from 0 to 1, got %s", optarg);
            break;
        case OPT_BANDWIDTH:
            r = tool_parse_double(optarg, "--bandwidth-gbs", &br.bandwidth_gbs);
            if (r == 0 && !(br.bandwidth_gbs > 0))
                r = -tool_fail("--bandwidth-gbs: expected a positive figure in GB/s, got %s", optarg);
            break;
        case 'h':
            printf("usage: alm-engine bench (--model DIR | --random PRESET [--q-bits 4] [--q-group-size 64])\n"
                   "         [--prompt-tokens 512] [--gen-tokens 128] [--threads N] [--repeat R]\n"
                   "         [--temperature T] [--draft-random PRESET] [--synthetic-acceptance A]\n"
                   "         [--bandwidth-gbs X]\n" SPEC_USAGE);
            return 0;
        default: r = spec_options_take(&spec, c, optarg) ? 0 : -1;
        }
        if (r < 0)
            return 2;
    }
    if (!model_dir == !br.preset)
        return tool_fail("bench needs --model DIR or --random PRESET (one of them)");
    br.params = (alm_random_params){ .bits = (int)bits, .group_size = (int)group };
    if (br.draft_preset) {
        if (spec.draft_dir)
            return tool_fail("--draft and --draft-random: give one draft");
        if (spec.mode && strcmp(spec.mode, "draft") != 0)
            return tool_fail("--draft-random needs --speculative draft, not %s", spec.mode);
        spec.mode = "off"; /* resolved below, where the draft is built */
    }
    if (br.synthetic >= 0 && temperature != 0)
        return tool_fail("--synthetic-acceptance needs greedy decoding (--temperature 0)");
    if (br.synthetic >= 0 && !br.draft_preset && !spec.draft_dir)
        return tool_fail("--synthetic-acceptance needs a draft model (--draft or --draft-random)");

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
    double build_seconds = 0;

    alm_model_params mp = tool_model_params(spec.device);
    if (br.preset) {
        if (build_random(br.preset, &br, &mp, &model, &build_seconds) < 0)
            goto out;
        model_dir = alm_model_dir(model);
    } else if (alm_model_load(model_dir, &mp, &model, &err) < 0) {
        tool_fail("%s", err.message);
        goto out;
    }
    if (alm_seq_new(model, (int)(prompt_tokens + gen_tokens + 16), &seq, &err) < 0) {
        tool_fail("%s", err.message);
        goto out;
    }
    if (alm_pool_new((int)threads, &pool) < 0) {
        tool_fail("cannot start threads");
        goto out;
    }
    if (spec_options_resolve(&spec, &gp.speculative, &draft_model) < 0)
        goto out;
    if (br.draft_preset) {
        double draft_seconds;
        if (build_random(br.draft_preset, &br, &mp, &draft_model, &draft_seconds) < 0)
            goto out;
        if (!alm_speculative_uses_draft(gp.speculative.mode))
            gp.speculative.mode = ALM_SPECULATIVE_DRAFT;
    }
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
    random_ids(prompt, prompt_tokens, vocab, 12345);

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
            if (spec_bench_run(model, draft_model, pool, &gp, (int)gen_tokens, rep, br.synthetic,
                               &sb, &err) < 0) {
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
    add_random_info(b, &br, model, build_seconds, median(decode, n_rep));
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
        json_builder_add_string_value(b, alm_speculative_mode_name(gp.speculative.mode));
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
        if (br.synthetic >= 0) {
            /* The rate asked for, and the fraction of the proposals the
             * target verified that it kept (the same up to chance); the
             * runs whose output differed from the plain run's (a near-tie
             * decided otherwise in a pass of several tokens: acceptance
             * falls after it). */
            json_builder_set_member_name(b, "synthetic_acceptance");
            json_builder_add_double_value(b, br.synthetic);
            json_builder_set_member_name(b, "verified_acceptance");
            json_builder_add_double_value(b, sb.looked_at ? (double)sb.kept / (double)sb.looked_at : 0);
            json_builder_set_member_name(b, "runs_diverged");
            json_builder_add_int_value(b, sb.diverged);
        }
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
