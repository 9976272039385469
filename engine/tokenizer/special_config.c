#include "tokenizer/special_config.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "tokenizer/json_util.h"

/* Loads dir/name; *root is NULL (and 0 returned) when the file is absent. */
static int load_optional(const char *dir, const char *name, char *path, size_t path_size,
                         JsonParser **parser, JsonObject **root, alm_error *err)
{
    snprintf(path, path_size, "%s/%s", dir, name);
    *root = NULL;
    JsonNode *node;
    int r = json_load_file(path, parser, &node, err);
    if (r == -ENOENT) {
        if (err)
            err->code = 0;
        return 0;
    }
    if (r < 0)
        return r;
    if (!JSON_NODE_HOLDS_OBJECT(node)) {
        g_object_unref(*parser);
        *parser = NULL;
        return alm_error_set(err, -EINVAL, "%s: the top level must be an object", path);
    }
    *root = json_node_get_object(node);
    return 0;
}

/* A token given as "text" or as {"content": "text", ...} (AddedToken). */
static int token_string(JsonObject *o, const char *name, char **out, const char *where,
                        alm_error *err)
{
    JsonNode *n = json_member(o, name);
    if (!n)
        return 0;
    const char *s = json_node_string(n);
    if (!s && JSON_NODE_HOLDS_OBJECT(n)) {
        int r = json_get_string(json_node_get_object(n), "content", true, &s, where, err);
        if (r < 0)
            return r;
    }
    if (!s)
        return alm_error_set(err, -EINVAL, "%s: \"%s\" must be a string or {\"content\": ...}",
                             where, name);
    *out = strdup(s);
    return *out ? 0 : alm_error_set(err, -ENOMEM, "out of memory");
}

/* eos_token_id: an integer or a list of integers. */
static int id_list(JsonObject *o, const char *name, idvec *out, const char *where,
                   alm_error *err)
{
    JsonNode *n = json_member(o, name);
    if (!n)
        return 0;
    JsonArray *a = JSON_NODE_HOLDS_ARRAY(n) ? json_node_get_array(n) : NULL;
    guint count = a ? json_array_get_length(a) : 1;
    for (guint i = 0; i < count; i++) {
        JsonNode *e = a ? json_array_get_element(a, i) : n;
        if (!JSON_NODE_HOLDS_VALUE(e) || json_node_get_value_type(e) != G_TYPE_INT64 ||
            json_node_get_int(e) < 0 || json_node_get_int(e) > INT32_MAX)
            return alm_error_set(err, -EINVAL,
                                 "%s: \"%s\" must be a token id or a list of token ids", where,
                                 name);
        if (idvec_push(out, (int32_t)json_node_get_int(e)) < 0)
            return alm_error_set(err, -ENOMEM, "out of memory");
    }
    return 0;
}

int special_config_load(special_config *c, const char *dir, alm_error *err)
{
    memset(c, 0, sizeof *c);
    char path[4096];
    JsonParser *parser = NULL;
    JsonObject *o;
    int r;

    if ((r = load_optional(dir, "tokenizer_config.json", path, sizeof path, &parser, &o, err)) <
        0)
        goto fail;
    if (o) {
        c->has_add_bos = json_member(o, "add_bos_token") != NULL;
        c->has_add_eos = json_member(o, "add_eos_token") != NULL;
        if ((r = json_get_bool(o, "add_bos_token", false, &c->add_bos, path, err)) < 0 ||
            (r = json_get_bool(o, "add_eos_token", false, &c->add_eos, path, err)) < 0 ||
            (r = token_string(o, "bos_token", &c->bos_token, path, err)) < 0 ||
            (r = token_string(o, "eos_token", &c->eos_token, path, err)) < 0)
            goto fail;
        g_object_unref(parser);
        parser = NULL;
    }

    if ((r = load_optional(dir, "generation_config.json", path, sizeof path, &parser, &o, err)) <
        0)
        goto fail;
    if (o) {
        if ((r = id_list(o, "eos_token_id", &c->generation_eos, path, err)) < 0)
            goto fail;
        g_object_unref(parser);
        parser = NULL;
    }

    if ((r = load_optional(dir, "config.json", path, sizeof path, &parser, &o, err)) < 0)
        goto fail;
    if (o) {
        if ((r = id_list(o, "eos_token_id", &c->config_eos, path, err)) < 0)
            goto fail;
        g_object_unref(parser);
        parser = NULL;
    }
    return 0;
fail:
    if (parser)
        g_object_unref(parser);
    special_config_free(c);
    return r;
}

void special_config_free(special_config *c)
{
    free(c->bos_token);
    free(c->eos_token);
    idvec_free(&c->generation_eos);
    idvec_free(&c->config_eos);
    memset(c, 0, sizeof *c);
}
