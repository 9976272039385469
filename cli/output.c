/* Output formatting for alm. */
#include "output.h"

#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

void cli_error(const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fputs("alm: ", stderr);
    vfprintf(stderr, fmt, ap);
    fputc('\n', stderr);
    va_end(ap);
}

static char *number_text(double v)
{
    char buf[64];
    if (v == floor(v) && fabs(v) < 1e15)
        snprintf(buf, sizeof buf, "%.0f", v);
    else
        g_ascii_dtostr(buf, sizeof buf, v);   /* shortest round-trip form */
    return strdup(buf);
}

char *cli_json_text(JsonNode *node)
{
    if (!node || JSON_NODE_HOLDS_NULL(node))
        return strdup("");
    if (JSON_NODE_HOLDS_VALUE(node)) {
        GType type = json_node_get_value_type(node);
        if (type == G_TYPE_STRING)
            return strdup(json_node_get_string(node));
        if (type == G_TYPE_BOOLEAN)
            return strdup(json_node_get_boolean(node) ? "true" : "false");
        if (type == G_TYPE_INT64) {
            char buf[32];
            snprintf(buf, sizeof buf, "%lld", (long long)json_node_get_int(node));
            return strdup(buf);
        }
        return number_text(json_node_get_double(node));
    }
    if (JSON_NODE_HOLDS_ARRAY(node)) {
        JsonArray *a = json_node_get_array(node);
        GString *s = g_string_new("");
        for (guint i = 0; i < json_array_get_length(a); i++) {
            char *item = cli_json_text(json_array_get_element(a, i));
            g_string_append_printf(s, "%s%s", i ? " " : "", item ? item : "");
            free(item);
        }
        char *out = strdup(s->str);
        g_string_free(s, TRUE);
        return out;
    }
    gchar *json = json_to_string(node, FALSE);
    char *out = strdup(json);
    g_free(json);
    return out;
}

void cli_print_json(FILE *out, JsonObject *object, bool pretty)
{
    JsonNode *node = json_node_new(JSON_NODE_OBJECT);
    json_node_set_object(node, object);
    gchar *text = json_to_string(node, pretty);
    fprintf(out, "%s\n", text);
    g_free(text);
    json_node_unref(node);
}

void cli_format_duration(double s, char *buf, size_t size)
{
    if (!isfinite(s) || s < 0)
        s = 0;
    if (s < 60) {
        snprintf(buf, size, "%.1fs", s);
        return;
    }
    long long t = (long long)s;
    long long d = t / 86400, h = t / 3600 % 24, m = t / 60 % 60, sec = t % 60;
    if (d > 0)
        snprintf(buf, size, "%lldd %02lldh %02lldm", d, h, m);
    else if (h > 0)
        snprintf(buf, size, "%lldh %02lldm %02llds", h, m, sec);
    else
        snprintf(buf, size, "%lldm %02llds", m, sec);
}

void cli_format_bytes(double bytes, char *buf, size_t size)
{
    static const char *const units[] = { "B", "KiB", "MiB", "GiB", "TiB" };
    size_t u = 0;
    while (bytes >= 1024 && u + 1 < sizeof units / sizeof units[0]) {
        bytes /= 1024;
        u++;
    }
    if (u == 0)
        snprintf(buf, size, "%.0f B", bytes);
    else
        snprintf(buf, size, "%.1f %s", bytes, units[u]);
}

void cli_table_add(cli_table *t, const char *label, const char *value)
{
    if (t->n == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 16;
        cli_table_row *rows = realloc(t->rows, cap * sizeof *rows);
        if (!rows) {
            t->failed = true;
            return;
        }
        t->rows = rows;
        t->cap = cap;
    }
    char *l = strdup(label), *v = strdup(value ? value : "");
    if (!l || !v) {
        free(l);
        free(v);
        t->failed = true;
        return;
    }
    t->rows[t->n++] = (cli_table_row){ l, v };
}

static bool ends_with(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcmp(s + n - k, suffix) == 0;
}

static bool is_number(JsonNode *node)
{
    if (!node || !JSON_NODE_HOLDS_VALUE(node))
        return false;
    GType type = json_node_get_value_type(node);
    return type == G_TYPE_INT64 || type == G_TYPE_DOUBLE;
}

/* The value formatted for people by what its name says it is. */
static char *format_member(const char *name, JsonNode *node)
{
    if (!is_number(node))
        return cli_json_text(node);
    double v = json_node_get_double(node);
    char buf[64];
    if (ends_with(name, "tok_s"))
        snprintf(buf, sizeof buf, "%.1f tok/s", v);
    else if (ends_with(name, "_bytes") || strcmp(name, "bytes") == 0)
        cli_format_bytes(v, buf, sizeof buf);
    else if (ends_with(name, "_rate"))
        snprintf(buf, sizeof buf, "%.1f%%", v * 100);
    else if (ends_with(name, "_s") || ends_with(name, "_seconds"))
        cli_format_duration(v, buf, sizeof buf);
    else
        return cli_json_text(node);
    return strdup(buf);
}

void cli_table_add_object(cli_table *t, const char *prefix, JsonObject *object)
{
    GList *names = json_object_get_members(object);
    for (GList *l = names; l; l = l->next) {
        const char *name = l->data;
        JsonNode *node = json_object_get_member(object, name);
        char *label = prefix ? g_strdup_printf("%s.%s", prefix, name) : g_strdup(name);
        if (JSON_NODE_HOLDS_OBJECT(node)) {
            cli_table_add_object(t, label, json_node_get_object(node));
        } else {
            char *value = format_member(name, node);
            if (!value)
                t->failed = true;
            else
                cli_table_add(t, label, value);
            free(value);
        }
        g_free(label);
    }
    g_list_free(names);
}

bool cli_table_flush(cli_table *t, FILE *out)
{
    int width = 0;
    for (size_t i = 0; i < t->n; i++)
        if ((int)strlen(t->rows[i].label) > width)
            width = (int)strlen(t->rows[i].label);
    for (size_t i = 0; i < t->n; i++)
        fprintf(out, "%-*s  %s\n", width, t->rows[i].label, t->rows[i].value);
    bool complete = !t->failed;
    for (size_t i = 0; i < t->n; i++) {
        free(t->rows[i].label);
        free(t->rows[i].value);
    }
    free(t->rows);
    memset(t, 0, sizeof *t);
    return complete;
}

