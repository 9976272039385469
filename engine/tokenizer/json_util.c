#include "tokenizer/json_util.h"

#include <errno.h>
#include <string.h>

#include "core/error.h"

int json_load_file(const char *path, JsonParser **parser, JsonNode **root, alm_error *err)
{
    gchar *data = NULL;
    gsize len = 0;
    GError *gerr = NULL;
    *parser = NULL;
    *root = NULL;
    if (!g_file_get_contents(path, &data, &len, &gerr)) {
        int code = gerr->domain == G_FILE_ERROR && gerr->code == G_FILE_ERROR_NOENT ? -ENOENT : -EIO;
        alm_error_set(err, code, "%s", gerr->message);
        g_error_free(gerr);
        return code;
    }
    JsonParser *p = json_parser_new();
    if (!json_parser_load_from_data(p, data, (gssize)len, &gerr)) {
        alm_error_set(err, -EINVAL, "%s: malformed JSON: %s", path, gerr->message);
        g_error_free(gerr);
        g_free(data);
        g_object_unref(p);
        return -EINVAL;
    }
    g_free(data);
    JsonNode *r = json_parser_get_root(p);
    if (!r) {
        g_object_unref(p);
        return alm_error_set(err, -EINVAL, "%s: empty JSON document", path);
    }
    *parser = p;
    *root = r;
    return 0;
}

JsonNode *json_member(JsonObject *o, const char *name)
{
    if (!o)
        return NULL;
    JsonNode *n = json_object_get_member(o, name);
    if (!n || JSON_NODE_HOLDS_NULL(n))
        return NULL;
    return n;
}

const char *json_node_kind(JsonNode *node)
{
    if (!node || JSON_NODE_HOLDS_NULL(node))
        return "null";
    if (JSON_NODE_HOLDS_OBJECT(node))
        return "an object";
    if (JSON_NODE_HOLDS_ARRAY(node))
        return "an array";
    GType t = json_node_get_value_type(node);
    if (t == G_TYPE_STRING)
        return "a string";
    if (t == G_TYPE_BOOLEAN)
        return "a boolean";
    return "a number";
}

const char *json_node_string(JsonNode *node)
{
    if (!node || !JSON_NODE_HOLDS_VALUE(node) || json_node_get_value_type(node) != G_TYPE_STRING)
        return NULL;
    return json_node_get_string(node);
}

int json_get_bool(JsonObject *o, const char *name, bool dflt, bool *out, const char *where,
                  alm_error *err)
{
    JsonNode *n = json_member(o, name);
    if (!n) {
        *out = dflt;
        return 0;
    }
    if (!JSON_NODE_HOLDS_VALUE(n) || json_node_get_value_type(n) != G_TYPE_BOOLEAN)
        return alm_error_set(err, -EINVAL, "%s: \"%s\" must be a boolean, not %s", where, name,
                             json_node_kind(n));
    *out = json_node_get_boolean(n);
    return 0;
}

int json_get_string(JsonObject *o, const char *name, bool required, const char **out,
                    const char *where, alm_error *err)
{
    JsonNode *n = json_member(o, name);
    *out = NULL;
    if (!n) {
        if (required)
            return alm_error_set(err, -EINVAL, "%s: missing \"%s\"", where, name);
        return 0;
    }
    const char *s = json_node_string(n);
    if (!s)
        return alm_error_set(err, -EINVAL, "%s: \"%s\" must be a string, not %s", where, name,
                             json_node_kind(n));
    *out = s;
    return 0;
}

int json_get_uint(JsonObject *o, const char *name, uint64_t dflt, uint64_t *out,
                  const char *where, alm_error *err)
{
    JsonNode *n = json_member(o, name);
    if (!n) {
        *out = dflt;
        return 0;
    }
    if (!JSON_NODE_HOLDS_VALUE(n) || json_node_get_value_type(n) != G_TYPE_INT64 ||
        json_node_get_int(n) < 0)
        return alm_error_set(err, -EINVAL, "%s: \"%s\" must be a non-negative integer", where,
                             name);
    *out = (uint64_t)json_node_get_int(n);
    return 0;
}

int json_get_object(JsonObject *o, const char *name, bool required, JsonObject **out,
                    const char *where, alm_error *err)
{
    JsonNode *n = json_member(o, name);
    *out = NULL;
    if (!n) {
        if (required)
            return alm_error_set(err, -EINVAL, "%s: missing \"%s\"", where, name);
        return 0;
    }
    if (!JSON_NODE_HOLDS_OBJECT(n))
        return alm_error_set(err, -EINVAL, "%s: \"%s\" must be an object, not %s", where, name,
                             json_node_kind(n));
    *out = json_node_get_object(n);
    return 0;
}

int json_get_array(JsonObject *o, const char *name, bool required, JsonArray **out,
                   const char *where, alm_error *err)
{
    JsonNode *n = json_member(o, name);
    *out = NULL;
    if (!n) {
        if (required)
            return alm_error_set(err, -EINVAL, "%s: missing \"%s\"", where, name);
        return 0;
    }
    if (!JSON_NODE_HOLDS_ARRAY(n))
        return alm_error_set(err, -EINVAL, "%s: \"%s\" must be an array, not %s", where, name,
                             json_node_kind(n));
    *out = json_node_get_array(n);
    return 0;
}

int json_component_head(JsonNode *node, const char *what, const char *list_key, int depth,
                        const char *where, json_component_fn parse, void *ctx,
                        JsonObject **obj, const char **type, alm_error *err)
{
    if (depth > 16)
        return alm_error_set(err, -EINVAL, "%s: %s nested too deeply", where, list_key);
    if (!JSON_NODE_HOLDS_OBJECT(node))
        return alm_error_set(err, -EINVAL, "%s: %s must be an object, not %s", where, what,
                             json_node_kind(node));
    JsonObject *o = json_node_get_object(node);
    int r = json_get_string(o, "type", true, type, where, err);
    if (r < 0)
        return r;
    if (strcmp(*type, "Sequence") != 0) {
        *obj = o;
        return 0;
    }
    JsonArray *list;
    if ((r = json_get_array(o, list_key, true, &list, where, err)) < 0)
        return r;
    for (guint i = 0; i < json_array_get_length(list); i++)
        if ((r = parse(ctx, json_array_get_element(list, i), where, depth + 1, err)) < 0)
            return r;
    return 1;
}
