/* alm-engine logits: the whole-vocabulary logits of a token sequence. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>

#include "tools/tool.h"

int cmd_logits(int argc, char **argv)
{
    static const struct option opts[] = {
        { "model", required_argument, NULL, 'm' },
        { "ids", required_argument, NULL, 'i' },
        { "positions", required_argument, NULL, 'p' },
        { "threads", required_argument, NULL, 't' },
        DEVICE_LONG_OPTION,
        { "help", no_argument, NULL, 'h' },
        { 0 },
    };
    const char *model_dir = NULL, *ids_text = NULL, *pos_text = NULL, *device = NULL;
    long threads = 0;
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model_dir = optarg; break;
        case 'i': ids_text = optarg; break;
        case 'p': pos_text = optarg; break;
        case 'V': device = optarg; break;
        case 't':
            if (tool_parse_int(optarg, "--threads", 0, 1024, &threads) < 0)
                return 2;
            break;
        case 'h':
            printf("usage: alm-engine logits --model DIR --ids 1,2,3 [--positions 0,5] [--threads N] " DEVICE_USAGE "\n");
            return 0;
        default: return 2;
        }
    }
    if (!model_dir || !ids_text)
        return tool_fail("logits needs --model and --ids");
    int32_t *ids = NULL, *positions = NULL;
    size_t n = 0, n_pos = 0;
    if (tool_parse_ids(ids_text, &ids, &n) < 0 || n == 0)
        return tool_fail("--ids: expected comma-separated token ids, got \"%s\"", ids_text);
    if (pos_text && tool_parse_ids(pos_text, &positions, &n_pos) < 0) {
        free(ids);
        return tool_fail("--positions: expected comma-separated positions, got \"%s\"", pos_text);
    }
    for (size_t i = 0; i < n_pos; i++) {
        if ((size_t)positions[i] >= n) {
            int bad = positions[i];
            free(ids);
            free(positions);
            return tool_fail("--positions: %d is past the last of the %zu ids", bad, n);
        }
    }

    alm_error err = { 0 };
    alm_model *model = NULL;
    alm_seq *seq = NULL;
    alm_pool *pool = NULL;
    float *logits = NULL;
    int status = 1;
    alm_model_params mp = tool_model_params(device);
    if (alm_model_load(model_dir, &mp, &model, &err) < 0 ||
        alm_seq_new(model, (int)n, &seq, &err) < 0) {
        tool_fail("%s", err.message);
        goto out;
    }
    if (alm_pool_new((int)threads, &pool) < 0) {
        tool_fail("cannot start threads");
        goto out;
    }
    size_t vocab = (size_t)alm_model_vocab_size(model);
    logits = malloc(sizeof(float) * vocab * n);
    if (!logits || alm_seq_forward(seq, pool, ids, (int)n, (int)n, logits, &err) < 0) {
        tool_fail("%s", logits ? err.message : "out of memory");
        goto out;
    }

    JsonBuilder *b = json_builder_new();
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "logits");
    json_builder_begin_object(b);
    size_t count = positions ? n_pos : n;
    for (size_t i = 0; i < count; i++) {
        size_t p = positions ? (size_t)positions[i] : i;
        char key[32];
        snprintf(key, sizeof key, "%zu", p);
        json_builder_set_member_name(b, key);
        json_builder_begin_array(b);
        for (size_t v = 0; v < vocab; v++)
            json_builder_add_double_value(b, logits[p * vocab + v]);
        json_builder_end_array(b);
    }
    json_builder_end_object(b);
    json_builder_end_object(b);
    tool_print_json(b);
    g_object_unref(b);
    status = 0;
out:
    free(logits);
    free(ids);
    free(positions);
    alm_seq_free(seq);
    alm_pool_free(pool);
    alm_model_free(model);
    return status;
}
