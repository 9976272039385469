#include "tokenizer/post_processor.h"

#include <errno.h>
#include <string.h>

#include "core/error.h"
#include "tokenizer/json_util.h"

/* Reads ["token", id] (the cls/sep members of Roberta and Bert). */
static int read_token_pair(JsonObject *o, const char *name, int32_t *id, const char *where,
                           alm_error *err)
{
    JsonArray *a;
    int r = json_get_array(o, name, true, &a, where, err);
    if (r < 0)
        return r;
    JsonNode *n = json_array_get_length(a) == 2 ? json_array_get_element(a, 1) : NULL;
    if (!n || !JSON_NODE_HOLDS_VALUE(n) || json_node_get_value_type(n) != G_TYPE_INT64 ||
        json_node_get_int(n) < 0 || json_node_get_int(n) >= (1 << 24))
        return alm_error_set(err, -EINVAL, "%s: \"%s\" must be [token, id]", where, name);
    *id = (int32_t)json_node_get_int(n);
    return 0;
}

/* The ids of one SpecialToken item of a template. */
static int template_special_ids(JsonObject *special_tokens, const char *name, idvec *out,
                                const char *where, alm_error *err)
{
    JsonObject *entry;
    int r = json_get_object(special_tokens, name, false, &entry, where, err);
    if (r < 0)
        return r;
    if (!entry)
        return alm_error_set(err, -EINVAL, "%s: template token '%s' is not in special_tokens",
                             where, name);
    JsonArray *ids;
    if ((r = json_get_array(entry, "ids", true, &ids, where, err)) < 0)
        return r;
    for (guint i = 0; i < json_array_get_length(ids); i++) {
        JsonNode *n = json_array_get_element(ids, i);
        if (!JSON_NODE_HOLDS_VALUE(n) || json_node_get_value_type(n) != G_TYPE_INT64 ||
            json_node_get_int(n) < 0 || json_node_get_int(n) >= (1 << 24))
            return alm_error_set(err, -EINVAL, "%s: special token '%s' has a bad id", where,
                                 name);
        if (idvec_push(out, (int32_t)json_node_get_int(n)) < 0)
            return alm_error_set(err, -ENOMEM, "out of memory");
    }
    return 0;
}

static int parse_template(JsonObject *o, idvec *prefix, idvec *suffix, const char *where,
                          alm_error *err)
{
    JsonArray *single;
    JsonObject *special;
    int r;
    if ((r = json_get_array(o, "single", true, &single, where, err)) < 0 ||
        (r = json_get_object(o, "special_tokens", false, &special, where, err)) < 0)
        return r;
    bool seen_sequence = false;
    for (guint i = 0; i < json_array_get_length(single); i++) {
        JsonNode *item = json_array_get_element(single, i);
        JsonObject *io = JSON_NODE_HOLDS_OBJECT(item) ? json_node_get_object(item) : NULL;
        JsonObject *tok = NULL, *seq = NULL;
        if (io && ((r = json_get_object(io, "SpecialToken", false, &tok, where, err)) < 0 ||
                   (r = json_get_object(io, "Sequence", false, &seq, where, err)) < 0))
            return r;
        if (seq) {
            const char *id;
            if ((r = json_get_string(seq, "id", true, &id, where, err)) < 0)
                return r;
            if (strcmp(id, "A") != 0 || seen_sequence)
                return alm_error_set(err, -EINVAL,
                                     "%s: the single template must hold sequence A once", where);
            seen_sequence = true;
        } else if (tok) {
            const char *name;
            if ((r = json_get_string(tok, "id", true, &name, where, err)) < 0 ||
                (r = template_special_ids(special, name, seen_sequence ? suffix : prefix, where,
                                          err)) < 0)
                return r;
        } else {
            return alm_error_set(err, -EINVAL,
                                 "%s: template items must be SpecialToken or Sequence", where);
        }
    }
    if (!seen_sequence)
        return alm_error_set(err, -EINVAL, "%s: the single template has no sequence A", where);
    return 0;
}

/* Wraps the ids already collected: new prefix before, new suffix after. */
static int wrap(post_processor *pp, const idvec *prefix, const idvec *suffix)
{
    idvec p = { 0 };
    if (idvec_append(&p, prefix->data, prefix->len) < 0 ||
        idvec_append(&p, pp->prefix.data, pp->prefix.len) < 0 ||
        idvec_append(&pp->suffix, suffix->data, suffix->len) < 0) {
        idvec_free(&p);
        return -ENOMEM;
    }
    idvec_free(&pp->prefix);
    pp->prefix = p;
    return 0;
}

static int parse_one(void *ctx, JsonNode *node, const char *where, int depth, alm_error *err)
{
    post_processor *pp = ctx;
    JsonObject *o;
    const char *type;
    int r = json_component_head(node, "a post-processor", "processors", depth, where, parse_one, ctx, &o,
                                &type, err);
    if (r != 0)
        return r < 0 ? r : 0;
    if (strcmp(type, "ByteLevel") == 0)
        return 0; /* only trims offsets */

    idvec prefix = { 0 }, suffix = { 0 };
    if (strcmp(type, "TemplateProcessing") == 0) {
        r = parse_template(o, &prefix, &suffix, where, err);
    } else if (strcmp(type, "RobertaProcessing") == 0 || strcmp(type, "BertProcessing") == 0) {
        int32_t cls, sep;
        if ((r = read_token_pair(o, "cls", &cls, where, err)) == 0 &&
            (r = read_token_pair(o, "sep", &sep, where, err)) == 0 &&
            (idvec_push(&prefix, cls) < 0 || idvec_push(&suffix, sep) < 0))
            r = alm_error_set(err, -ENOMEM, "out of memory");
    } else {
        r = alm_error_set(err, -ENOTSUP, "%s: post-processor type '%s' is not supported", where,
                          type);
    }
    if (r == 0 && wrap(pp, &prefix, &suffix) < 0)
        r = alm_error_set(err, -ENOMEM, "out of memory");
    idvec_free(&prefix);
    idvec_free(&suffix);
    return r;
}

int post_processor_from_json(post_processor *pp, JsonNode *node, const char *where,
                             alm_error *err)
{
    memset(pp, 0, sizeof *pp);
    if (!node || JSON_NODE_HOLDS_NULL(node))
        return 0;
    int r = parse_one(pp, node, where, 0, err);
    if (r < 0)
        post_processor_free(pp);
    return r;
}

void post_processor_free(post_processor *pp)
{
    idvec_free(&pp->prefix);
    idvec_free(&pp->suffix);
}
