/* Speculative-decoding options and statistics for alm-engine. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tools/tool.h"

int spec_options_take(spec_options *o, int c, const char *arg)
{
    switch (c) {
    case 'D': o->draft_dir = arg; return 1;
    case 'X': o->mode = arg; return 1;
    case 'K': o->k = arg; return 1;
    case 'Q': o->p_min = arg; return 1;
    case 'G': o->ngram = arg; return 1;
    case 'V': o->device = arg; return 1;
    case 'W': o->draft_vocab = arg; return 1;
    default: return 0;
    }
}

alm_model_params tool_model_params(const char *device)
{
    alm_model_params p = alm_model_default_params();
    if (device)
        p.device = device;
    return p;
}

int spec_options_resolve(const spec_options *o, alm_speculative_params *out,
                         alm_model **draft_model)
{
    alm_speculative_params p = alm_generate_default_params().speculative;
    *draft_model = NULL;
    const char *mode = o->mode ? o->mode : (o->draft_dir ? "draft" : "off");
    if (strcmp(mode, "draft") == 0)
        p.mode = ALM_SPECULATIVE_DRAFT;
    else if (strcmp(mode, "ngram") == 0)
        p.mode = ALM_SPECULATIVE_NGRAM;
    else if (strcmp(mode, "hybrid") == 0)
        p.mode = ALM_SPECULATIVE_HYBRID;
    else if (strcmp(mode, "off") == 0)
        p.mode = ALM_SPECULATIVE_OFF;
    else
        return tool_fail("--speculative: expected draft, ngram, hybrid or off, got \"%s\"", mode), -1;
    if (alm_speculative_uses_draft(p.mode) && !o->draft_dir)
        return tool_fail("--speculative %s needs --draft DIR", mode), -1;
    if (o->k) {
        long k;
        if (strcmp(o->k, "auto") == 0)
            p.num_draft_tokens = 0;
        else if (tool_parse_int(o->k, "--num-draft-tokens", 1, ALM_MAX_DRAFT_TOKENS, &k) < 0)
            return -1;
        else
            p.num_draft_tokens = (int)k;
    }
    if (o->p_min) {
        double v;
        if (tool_parse_double(o->p_min, "--draft-p-min", &v) < 0)
            return -1;
        if (v < 0 || v >= 1)
            return tool_fail("--draft-p-min: expected a probability in [0, 1), got %g", v), -1;
        p.draft_p_min = (float)v;
    }
    if (o->draft_vocab) {
        long n;
        if (tool_parse_int(o->draft_vocab, "--draft-vocab", 0, INT32_MAX, &n) < 0)
            return -1;
        p.draft_vocab = (int)n;
    }
    if (o->ngram) {
        int max, min;
        char extra;
        int n = sscanf(o->ngram, "%d:%d%c", &max, &min, &extra);
        if (n == 1)
            min = 1;
        if ((n != 1 && n != 2) || min < 1 || max < min || max > 64)
            return tool_fail("--ngram: expected MAX or MAX:MIN with 1 <= MIN <= MAX <= 64, got \"%s\"",
                             o->ngram), -1;
        p.ngram_max = max;
        p.ngram_min = min;
    }
    if (alm_speculative_uses_draft(p.mode)) {
        alm_error err = { 0 };
        alm_model_params mp = tool_model_params(o->device);
        if (alm_model_load(o->draft_dir, &mp, draft_model, &err) < 0)
            return tool_fail("draft model: %s", err.message), -1;
    }
    *out = p;
    return 0;
}

void spec_stats_add(JsonBuilder *b, const alm_speculative_stats *s, int generated_tokens)
{
    json_builder_set_member_name(b, "drafted");
    json_builder_add_int_value(b, s->drafted);
    json_builder_set_member_name(b, "accepted");
    json_builder_add_int_value(b, s->accepted);
    json_builder_set_member_name(b, "acceptance_rate");
    json_builder_add_double_value(b, s->drafted ? (double)s->accepted / (double)s->drafted : 0.0);
    int depth = 0;
    for (int i = 0; i < ALM_MAX_DRAFT_TOKENS; i++)
        if (s->drafted_by_position[i])
            depth = i + 1;
    json_builder_set_member_name(b, "accepted_by_position");
    json_builder_begin_array(b);
    for (int i = 0; i < depth; i++)
        json_builder_add_int_value(b, s->accepted_by_position[i]);
    json_builder_end_array(b);
    json_builder_set_member_name(b, "drafted_by_position");
    json_builder_begin_array(b);
    for (int i = 0; i < depth; i++)
        json_builder_add_int_value(b, s->drafted_by_position[i]);
    json_builder_end_array(b);
    /* The first token comes from the prompt pass. */
    json_builder_set_member_name(b, "tokens_per_target_pass");
    json_builder_add_double_value(b, s->target_passes
                                         ? (double)(generated_tokens - 1) / (double)s->target_passes
                                         : 0.0);
    json_builder_set_member_name(b, "target_passes");
    json_builder_add_int_value(b, s->target_passes);
    json_builder_set_member_name(b, "draft_passes");
    json_builder_add_int_value(b, s->draft_passes);
    json_builder_set_member_name(b, "lookup_passes");
    json_builder_add_int_value(b, s->lookup_passes);
    json_builder_set_member_name(b, "draft_seconds");
    json_builder_add_double_value(b, s->draft_seconds);
    json_builder_set_member_name(b, "target_seconds");
    json_builder_add_double_value(b, s->target_seconds);
}
