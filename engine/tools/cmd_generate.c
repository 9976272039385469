/* alm-engine generate: sample a continuation of a prompt. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tools/tool.h"

typedef struct collected_text {
    GString *text;
} collected_text;

static int collect(void *user, const char *piece, size_t len)
{
    collected_text *c = user;
    g_string_append_len(c->text, piece, (gssize)len);
    return 0;
}

static const char generate_usage[] =
    "usage: alm-engine generate --model DIR (--prompt STR | --prompt-ids 1,2,3) --max-tokens N\n"
    "         [--temperature T] [--top-k K] [--top-p P] [--min-p M] [--seed S]\n"
    "         [--stop STR]... [--ignore-eos] [--threads N] [--context N]\n"
    SPEC_USAGE;

int cmd_generate(int argc, char **argv)
{
    static const struct option opts[] = {
        { "model", required_argument, NULL, 'm' },
        { "prompt", required_argument, NULL, 'p' },
        { "prompt-ids", required_argument, NULL, 'i' },
        { "max-tokens", required_argument, NULL, 'n' },
        { "temperature", required_argument, NULL, 'T' },
        { "top-k", required_argument, NULL, 'k' },
        { "top-p", required_argument, NULL, 'P' },
        { "min-p", required_argument, NULL, 'M' },
        { "seed", required_argument, NULL, 's' },
        { "stop", required_argument, NULL, 'S' },
        { "ignore-eos", no_argument, NULL, 'e' },
        { "threads", required_argument, NULL, 't' },
        { "context", required_argument, NULL, 'c' },
        { "help", no_argument, NULL, 'h' },
        SPEC_LONG_OPTIONS,
        { 0 },
    };
    spec_options spec = { 0 };
    const char *model_dir = NULL, *prompt = NULL, *prompt_ids = NULL;
    alm_generate_params gp = alm_generate_default_params();
    long max_tokens = -1, threads = 0, context = 0, top_k = 0, seed = 0;
    double temperature = 0.0, top_p = 1.0, min_p = 0.0;
    const char **stops = NULL;
    size_t n_stops = 0;
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        int r = 0;
        switch (c) {
        case 'm': model_dir = optarg; break;
        case 'p': prompt = optarg; break;
        case 'i': prompt_ids = optarg; break;
        case 'n': r = tool_parse_int(optarg, "--max-tokens", 0, 1 << 24, &max_tokens); break;
        case 'T': r = tool_parse_double(optarg, "--temperature", &temperature); break;
        case 'k': r = tool_parse_int(optarg, "--top-k", 0, 1 << 30, &top_k); break;
        case 'P': r = tool_parse_double(optarg, "--top-p", &top_p); break;
        case 'M': r = tool_parse_double(optarg, "--min-p", &min_p); break;
        case 's': r = tool_parse_int(optarg, "--seed", 0, INT64_MAX, &seed); break;
        case 'S': {
            const char **grown = realloc(stops, sizeof *stops * (n_stops + 1));
            if (!grown)
                r = -1;
            else
                (stops = grown)[n_stops++] = optarg;
            break;
        }
        case 'e': gp.ignore_eos = true; break;
        case 't': r = tool_parse_int(optarg, "--threads", 0, 1024, &threads); break;
        case 'c': r = tool_parse_int(optarg, "--context", 1, 1 << 24, &context); break;
        case 'h': fputs(generate_usage, stdout); free(stops); return 0;
        default: r = spec_options_take(&spec, c, optarg) ? 0 : -1;
        }
        if (r < 0) {
            free(stops);
            return 2;
        }
    }
    if (!model_dir || (!prompt == !prompt_ids) || max_tokens < 0) {
        free(stops);
        return tool_fail("generate needs --model, --max-tokens and one of --prompt or --prompt-ids");
    }
    gp.max_tokens = (int)max_tokens;
    gp.sampling = (alm_sampling){ (float)temperature, (int)top_k, (float)top_p, (float)min_p,
                                  (uint64_t)seed };
    gp.stop = stops;
    gp.n_stop = n_stops;

    alm_error err = { 0 };
    alm_model *model = NULL, *draft_model = NULL;
    alm_seq *seq = NULL, *draft = NULL;
    alm_pool *pool = NULL;
    int32_t *ids = NULL, *out_ids = NULL;
    size_t n_ids = 0, n_out = 0;
    collected_text text = { g_string_new(NULL) };
    int status = 1;

    alm_model_params mp = tool_model_params(spec.device);
    if (alm_model_load(model_dir, &mp, &model, &err) < 0) {
        tool_fail("%s", err.message);
        goto out;
    }
    if (spec_options_resolve(&spec, &gp.speculative, &draft_model) < 0)
        goto out;
    if (draft_model && alm_check_draft(model, draft_model, &err) < 0) {
        tool_fail("%s", err.message);
        goto out;
    }
    if (prompt) {
        if (alm_tokenizer_encode(alm_model_tokenizer(model), prompt, strlen(prompt), true,
                                 &ids, &n_ids, &err) < 0) {
            tool_fail("%s", err.message);
            goto out;
        }
    } else if (tool_parse_ids(prompt_ids, &ids, &n_ids) < 0) {
        tool_fail("--prompt-ids: expected comma-separated token ids, got \"%s\"", prompt_ids);
        goto out;
    }
    int capacity = context ? (int)context : (int)n_ids + gp.max_tokens;
    if (capacity > alm_model_max_context(model))
        capacity = alm_model_max_context(model);
    if (alm_seq_new(model, capacity, &seq, &err) < 0 ||
        (draft_model && alm_seq_new(draft_model, capacity, &draft, &err) < 0)) {
        tool_fail("%s", err.message);
        goto out;
    }
    if (alm_pool_new((int)threads, &pool) < 0) {
        tool_fail("cannot start threads");
        goto out;
    }
    alm_generate_stats st;
    if (alm_generate(seq, draft, pool, ids, n_ids, &gp, collect, &text, &out_ids, &n_out, &st, &err) < 0) {
        tool_fail("%s", err.message);
        goto out;
    }

    JsonBuilder *b = json_builder_new();
    json_builder_begin_object(b);
    tool_add_ids(b, "ids", out_ids, n_out);
    json_builder_set_member_name(b, "text");
    json_builder_add_string_value(b, text.text->str);
    json_builder_set_member_name(b, "finish_reason");
    json_builder_add_string_value(b, alm_finish_reason_name(st.finish));
    json_builder_set_member_name(b, "stats");
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "prompt_tokens");
    json_builder_add_int_value(b, st.prompt_tokens);
    json_builder_set_member_name(b, "generated_tokens");
    json_builder_add_int_value(b, st.generated_tokens);
    json_builder_set_member_name(b, "prefill_tok_s");
    json_builder_add_double_value(b, st.prefill_tok_s);
    json_builder_set_member_name(b, "decode_tok_s");
    json_builder_add_double_value(b, st.decode_tok_s);
    json_builder_set_member_name(b, "threads");
    json_builder_add_int_value(b, alm_pool_size(pool));
    if (gp.speculative.mode != ALM_SPECULATIVE_OFF)
        spec_stats_add(b, &st.speculative, st.generated_tokens);
    json_builder_end_object(b);
    json_builder_end_object(b);
    tool_print_json(b);
    g_object_unref(b);
    status = 0;
out:
    g_string_free(text.text, TRUE);
    free(ids);
    free(out_ids);
    free(stops);
    alm_seq_free(seq);
    alm_seq_free(draft);
    alm_pool_free(pool);
    alm_model_free(model);
    alm_model_free(draft_model);
    return status;
}
