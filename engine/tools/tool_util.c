#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "tools/tool.h"

int tool_fail(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("alm-engine: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
    return 1;
}

int tool_parse_ids(const char *text, int32_t **ids, size_t *n)
{
    size_t cap = 16, count = 0;
    int32_t *out = malloc(cap * sizeof *out);
    if (!out)
        return -ENOMEM;
    const char *p = text;
    while (*p) {
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || errno || v < 0 || v > INT32_MAX || (*end && *end != ',')) {
            free(out);
            return -EINVAL;
        }
        if (count == cap) {
            int32_t *grown = realloc(out, (cap *= 2) * sizeof *out);
            if (!grown) {
                free(out);
                return -ENOMEM;
            }
            out = grown;
        }
        out[count++] = (int32_t)v;
        p = *end ? end + 1 : end;
    }
    *ids = out;
    *n = count;
    return 0;
}

int tool_parse_int(const char *text, const char *option, long min, long max, long *out)
{
    char *end;
    errno = 0;
    long v = strtol(text, &end, 10);
    if (end == text || *end || errno || v < min || v > max) {
        tool_fail("%s: expected an integer from %ld to %ld, got \"%s\"", option, min, max, text);
        return -EINVAL;
    }
    *out = v;
    return 0;
}

int tool_parse_double(const char *text, const char *option, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(text, &end);
    if (end == text || *end || errno || !isfinite(v)) {
        tool_fail("%s: expected a number, got \"%s\"", option, text);
        return -EINVAL;
    }
    *out = v;
    return 0;
}

int tool_read_file(const char *path, char **data, size_t *len)
{
    gchar *contents;
    gsize length;
    GError *error = NULL;
    if (!g_file_get_contents(path, &contents, &length, &error)) {
        tool_fail("%s", error->message);
        g_error_free(error);
        return -EIO;
    }
    *data = contents; /* g_malloc'ed: glib uses the system allocator */
    *len = length;
    return 0;
}

void tool_print_json(JsonBuilder *b)
{
    JsonNode *root = json_builder_get_root(b);
    JsonGenerator *gen = json_generator_new();
    json_generator_set_root(gen, root);
    gsize len;
    gchar *text = json_generator_to_data(gen, &len);
    fwrite(text, 1, len, stdout);
    fputc('\n', stdout);
    fflush(stdout);
    g_free(text);
    g_object_unref(gen);
    json_node_unref(root);
}

void tool_add_ids(JsonBuilder *b, const char *member, const int32_t *ids, size_t n)
{
    json_builder_set_member_name(b, member);
    json_builder_begin_array(b);
    for (size_t i = 0; i < n; i++)
        json_builder_add_int_value(b, ids[i]);
    json_builder_end_array(b);
}

