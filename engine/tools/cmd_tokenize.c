/* alm-engine tokenize / detokenize: need only the tokenizer files. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tools/tool.h"

int cmd_tokenize(int argc, char **argv)
{
    static const struct option opts[] = {
        { "model", required_argument, NULL, 'm' },
        { "text", required_argument, NULL, 't' },
        { "file", required_argument, NULL, 'f' },
        { "add-special", no_argument, NULL, 's' },
        { "help", no_argument, NULL, 'h' },
        { 0 },
    };
    const char *model = NULL, *text = NULL, *file = NULL;
    bool add_special = false;
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model = optarg; break;
        case 't': text = optarg; break;
        case 'f': file = optarg; break;
        case 's': add_special = true; break;
        case 'h':
            printf("usage: alm-engine tokenize --model DIR (--text STR | --file PATH) [--add-special]\n");
            return 0;
        default: return 2;
        }
    }
    if (!model || (!text == !file))
        return tool_fail("tokenize needs --model and one of --text or --file");

    char *owned = NULL;
    size_t len = 0;
    if (file) {
        if (tool_read_file(file, &owned, &len) < 0)
            return 1;
        text = owned;
    } else {
        len = strlen(text);
    }
    alm_error err = { 0 };
    alm_tokenizer *tok;
    if (alm_tokenizer_load(model, &tok, &err) < 0) {
        free(owned);
        return tool_fail("%s", err.message);
    }
    int32_t *ids = NULL;
    size_t n = 0;
    int r = alm_tokenizer_encode(tok, text, len, add_special, &ids, &n, &err);
    free(owned);
    alm_tokenizer_free(tok);
    if (r < 0)
        return tool_fail("%s", err.message);
    JsonBuilder *b = json_builder_new();
    json_builder_begin_object(b);
    tool_add_ids(b, "ids", ids, n);
    json_builder_end_object(b);
    tool_print_json(b);
    g_object_unref(b);
    free(ids);
    return 0;
}

int cmd_detokenize(int argc, char **argv)
{
    static const struct option opts[] = {
        { "model", required_argument, NULL, 'm' },
        { "ids", required_argument, NULL, 'i' },
        { "skip-special", no_argument, NULL, 's' },
        { "help", no_argument, NULL, 'h' },
        { 0 },
    };
    const char *model = NULL, *ids_text = NULL;
    bool skip_special = false;
    int c;
    while ((c = getopt_long(argc, argv, "", opts, NULL)) != -1) {
        switch (c) {
        case 'm': model = optarg; break;
        case 'i': ids_text = optarg; break;
        case 's': skip_special = true; break;
        case 'h':
            printf("usage: alm-engine detokenize --model DIR --ids 1,2,3 [--skip-special]\n");
            return 0;
        default: return 2;
        }
    }
    if (!model || !ids_text)
        return tool_fail("detokenize needs --model and --ids");
    int32_t *ids;
    size_t n;
    if (tool_parse_ids(ids_text, &ids, &n) < 0)
        return tool_fail("--ids: expected comma-separated token ids, got \"%s\"", ids_text);
    alm_error err = { 0 };
    alm_tokenizer *tok;
    if (alm_tokenizer_load(model, &tok, &err) < 0) {
        free(ids);
        return tool_fail("%s", err.message);
    }
    char *text = NULL;
    size_t len = 0;
    int r = alm_tokenizer_decode(tok, ids, n, skip_special, &text, &len, &err);
    free(ids);
    alm_tokenizer_free(tok);
    if (r < 0)
        return tool_fail("%s", err.message);
    JsonBuilder *b = json_builder_new();
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "text");
    json_builder_add_string_value(b, text);
    json_builder_end_object(b);
    tool_print_json(b);
    g_object_unref(b);
    free(text);
    return 0;
}
