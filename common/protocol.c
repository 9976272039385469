/* The almd protocol: the method table, request validation, and the builders
 * of every kind of line the daemon sends. See protocol.h and
 * docs/PROTOCOL.md. */
#include "protocol.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------ error codes */

static const char *const error_code_names[PROTOCOL_ERROR_COUNT_] = {
    [PROTOCOL_ERROR_BAD_REQUEST] = "bad_request",
    [PROTOCOL_ERROR_UNSUPPORTED_VERSION] = "unsupported_version",
    [PROTOCOL_ERROR_UNKNOWN_METHOD] = "unknown_method",
    [PROTOCOL_ERROR_TOO_LARGE] = "too_large",
    [PROTOCOL_ERROR_FORBIDDEN] = "forbidden",
    [PROTOCOL_ERROR_NOT_FOUND] = "not_found",
    [PROTOCOL_ERROR_INVALID_VALUE] = "invalid_value",
    [PROTOCOL_ERROR_BUSY] = "busy",
    [PROTOCOL_ERROR_CANCELLED] = "cancelled",
    [PROTOCOL_ERROR_INTERNAL] = "internal",
};

const char *protocol_error_code_name(protocol_error_code code)
{
    return (unsigned)code < PROTOCOL_ERROR_COUNT_ ? error_code_names[code] : "internal";
}

int protocol_error_code_from_name(const char *name, protocol_error_code *code)
{
    for (int i = 0; name && i < PROTOCOL_ERROR_COUNT_; i++)
        if (strcmp(name, error_code_names[i]) == 0) {
            *code = (protocol_error_code)i;
            return 0;
        }
    return -EINVAL;
}

/* ------------------------------------------------------------ ids */

void protocol_id_set_int(protocol_id *id, int64_t number)
{
    memset(id, 0, sizeof *id);
    id->kind = PROTOCOL_ID_INT;
    id->number = number;
}

int protocol_id_set_string(protocol_id *id, const char *s)
{
    memset(id, 0, sizeof *id);
    size_t n = strlen(s);
    if (n > PROTOCOL_MAX_ID_BYTES)
        return -EINVAL;
    id->kind = PROTOCOL_ID_STRING;
    memcpy(id->string, s, n + 1);
    return 0;
}

bool protocol_id_equal(const protocol_id *a, const protocol_id *b)
{
    if (a->kind != b->kind)
        return false;
    switch (a->kind) {
    case PROTOCOL_ID_INT: return a->number == b->number;
    case PROTOCOL_ID_STRING: return strcmp(a->string, b->string) == 0;
    default: return true;
    }
}

/* ------------------------------------------------------------ the table */

#define RANGE(lo, hi) .has_range = true, .min = (lo), .max = (hi)
#define N_OF(a) (sizeof(a) / sizeof((a)[0]))

static const protocol_param key_params[] = {
    { .name = "key", .type = PROTOCOL_PARAM_STRING, .required = true,
      .help = "the setting's name, e.g. draft_model" },
};

static const protocol_param set_params[] = {
    { .name = "key", .type = PROTOCOL_PARAM_STRING, .required = true,
      .help = "the setting's name, e.g. draft_model" },
    { .name = "value", .type = PROTOCOL_PARAM_SCALAR, .required = true,
      .help = "the new value (string, number or boolean)" },
};

/* Sampling overrides have the ranges the settings store enforces for the
 * same keys; the daemon applies its stored defaults for those absent. */
static const protocol_param generate_params[] = {
    { .name = "prompt", .type = PROTOCOL_PARAM_STRING, .required = true,
      .help = "the prompt text (UTF-8)" },
    { .name = "chat", .type = PROTOCOL_PARAM_BOOL,
      .help = "wrap the prompt in the model's chat template" },
    { .name = "max_tokens", .type = PROTOCOL_PARAM_INT, RANGE(1, 1 << 24),
      .help = "most tokens to generate" },
    { .name = "temperature", .type = PROTOCOL_PARAM_NUMBER, RANGE(0, 100),
      .help = "0 is greedy" },
    { .name = "top_p", .type = PROTOCOL_PARAM_NUMBER, RANGE(0, 1),
      .help = "nucleus sampling mass" },
    { .name = "top_k", .type = PROTOCOL_PARAM_INT, RANGE(0, 1 << 24),
      .help = "keep the k most likely tokens (0: all)" },
    { .name = "min_p", .type = PROTOCOL_PARAM_NUMBER, RANGE(0, 1),
      .help = "drop tokens less likely than min_p times the most likely" },
    { .name = "seed", .type = PROTOCOL_PARAM_INT, RANGE(0, 18446744073709551615.0),
      .help = "random seed (default: random)" },
    { .name = "draft", .type = PROTOCOL_PARAM_BOOL,
      .help = "false: do not use the draft model for this request" },
    { .name = "ignore_eos", .type = PROTOCOL_PARAM_BOOL,
      .help = "keep generating past end-of-sequence tokens (up to max_tokens or the context)" },
};

static const protocol_method methods[PROTOCOL_METHOD_COUNT_] = {
    [PROTOCOL_METHOD_STATUS] = {
        .id = PROTOCOL_METHOD_STATUS, .name = "status",
        .summary = "whether almd is ready, what is loaded and since when" },
    [PROTOCOL_METHOD_STATS] = {
        .id = PROTOCOL_METHOD_STATS, .name = "stats",
        .summary = "request, token, speed and speculation counters" },
    [PROTOCOL_METHOD_GENERATE] = {
        .id = PROTOCOL_METHOD_GENERATE, .name = "generate", .streams = true,
        .params = generate_params, .n_params = N_OF(generate_params),
        .summary = "generate text: token events, then done with the stats" },
    [PROTOCOL_METHOD_CONFIG_GET] = {
        .id = PROTOCOL_METHOD_CONFIG_GET, .name = "config.get",
        .params = key_params, .n_params = N_OF(key_params),
        .summary = "one setting's value" },
    [PROTOCOL_METHOD_CONFIG_LIST] = {
        .id = PROTOCOL_METHOD_CONFIG_LIST, .name = "config.list",
        .summary = "every setting with its value and whether it is the default" },
    [PROTOCOL_METHOD_CONFIG_SET] = {
        .id = PROTOCOL_METHOD_CONFIG_SET, .name = "config.set", .needs_admin = true,
        .params = set_params, .n_params = N_OF(set_params),
        .summary = "validate and store a setting" },
    [PROTOCOL_METHOD_CONFIG_UNSET] = {
        .id = PROTOCOL_METHOD_CONFIG_UNSET, .name = "config.unset", .needs_admin = true,
        .params = key_params, .n_params = N_OF(key_params),
        .summary = "return a setting to its default" },
    [PROTOCOL_METHOD_RESTART] = {
        .id = PROTOCOL_METHOD_RESTART, .name = "restart", .needs_admin = true,
        .streams = true,
        .summary = "reload the models with the stored settings (progress events, "
                   "then done); the old ones serve until the new ones are ready" },
};

const protocol_method *protocol_methods(size_t *n)
{
    if (n)
        *n = PROTOCOL_METHOD_COUNT_;
    return methods;
}

const protocol_method *protocol_method_find(const char *name)
{
    for (size_t i = 0; name && i < PROTOCOL_METHOD_COUNT_; i++)
        if (strcmp(methods[i].name, name) == 0)
            return &methods[i];
    return NULL;
}

const protocol_method *protocol_method_get(protocol_method_id id)
{
    return (unsigned)id < PROTOCOL_METHOD_COUNT_ ? &methods[id] : NULL;
}

const char *protocol_param_type_name(protocol_param_type type)
{
    switch (type) {
    case PROTOCOL_PARAM_STRING: return "a string";
    case PROTOCOL_PARAM_INT: return "an integer";
    case PROTOCOL_PARAM_NUMBER: return "a number";
    case PROTOCOL_PARAM_BOOL: return "a boolean";
    case PROTOCOL_PARAM_SCALAR: return "a string, number or boolean";
    }
    return "?";
}

/* ------------------------------------------------------------ parsing */

static int refuse(protocol_error *error, protocol_error_code code, int errnum,
                  const char *fmt, ...) __attribute__((format(printf, 4, 5)));

static int refuse(protocol_error *error, protocol_error_code code, int errnum,
                  const char *fmt, ...)
{
    error->code = code;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(error->message, sizeof error->message, fmt, ap);
    va_end(ap);
    return -errnum;
}

/* Deepest nesting of [ and { outside strings, stopping early past limit. */
static size_t json_depth(const char *s, size_t len, size_t limit)
{
    size_t depth = 0, deepest = 0;
    bool in_string = false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (in_string) {
            if (c == '\\')
                i++;
            else if (c == '"')
                in_string = false;
        } else if (c == '"') {
            in_string = true;
        } else if (c == '[' || c == '{') {
            if (++depth > deepest && (deepest = depth) > limit)
                return deepest;
        } else if ((c == ']' || c == '}') && depth > 0) {
            depth--;
        }
    }
    return deepest;
}

static const char *json_kind(JsonNode *node)
{
    switch (json_node_get_node_type(node)) {
    case JSON_NODE_OBJECT: return "an object";
    case JSON_NODE_ARRAY: return "an array";
    case JSON_NODE_NULL: return "null";
    case JSON_NODE_VALUE: break;
    }
    GType t = json_node_get_value_type(node);
    if (t == G_TYPE_STRING)
        return "a string";
    if (t == G_TYPE_BOOLEAN)
        return "a boolean";
    if (t == G_TYPE_INT64)
        return "an integer";
    return "a number";
}

static bool node_is(JsonNode *node, GType type)
{
    return JSON_NODE_HOLDS_VALUE(node) && json_node_get_value_type(node) == type;
}

static bool node_is_number(JsonNode *node)
{
    return node_is(node, G_TYPE_INT64) || node_is(node, G_TYPE_DOUBLE);
}

static double node_number(JsonNode *node)
{
    return node_is(node, G_TYPE_INT64) ? (double)json_node_get_int(node)
                                       : json_node_get_double(node);
}

/* Reads "id" into *id: an integer or a short string. */
static int read_id(JsonObject *root, protocol_id *id, protocol_error *error)
{
    JsonNode *node = json_object_get_member(root, "id");
    if (!node)
        return refuse(error, PROTOCOL_ERROR_BAD_REQUEST, EINVAL, "missing \"id\"");
    if (node_is(node, G_TYPE_INT64)) {
        protocol_id_set_int(id, json_node_get_int(node));
        return 0;
    }
    if (node_is(node, G_TYPE_STRING)) {
        if (protocol_id_set_string(id, json_node_get_string(node)) < 0)
            return refuse(error, PROTOCOL_ERROR_BAD_REQUEST, EINVAL,
                          "\"id\" longer than %d bytes", PROTOCOL_MAX_ID_BYTES);
        return 0;
    }
    return refuse(error, PROTOCOL_ERROR_BAD_REQUEST, EINVAL,
                  "\"id\" must be an integer or a string, not %s", json_kind(node));
}

static int check_param(const protocol_method *method, const protocol_param *p,
                       JsonNode *node, protocol_error *error)
{
    bool ok;
    switch (p->type) {
    case PROTOCOL_PARAM_STRING: ok = node_is(node, G_TYPE_STRING); break;
    case PROTOCOL_PARAM_INT: ok = node_is(node, G_TYPE_INT64); break;
    case PROTOCOL_PARAM_NUMBER: ok = node_is_number(node); break;
    case PROTOCOL_PARAM_BOOL: ok = node_is(node, G_TYPE_BOOLEAN); break;
    case PROTOCOL_PARAM_SCALAR:
        ok = node_is(node, G_TYPE_STRING) || node_is(node, G_TYPE_BOOLEAN) ||
             node_is_number(node);
        break;
    default: ok = false;
    }
    if (!ok)
        return refuse(error, PROTOCOL_ERROR_BAD_REQUEST, EINVAL,
                      "%s: param \"%s\" must be %s, not %s", method->name, p->name,
                      protocol_param_type_name(p->type), json_kind(node));
    if (p->has_range && node_is_number(node)) {
        double v = node_number(node);
        if (!(v >= p->min && v <= p->max))
            return refuse(error, PROTOCOL_ERROR_INVALID_VALUE, ERANGE,
                          "%s: param \"%s\" is %.15g, outside %.15g..%.15g", method->name,
                          p->name, v, p->min, p->max);
    }
    return 0;
}

static int check_params(const protocol_method *method, JsonObject *params,
                        protocol_error *error)
{
    /* Unknown names first: a misspelt optional param must not pass unseen. */
    JsonObjectIter iter;
    const char *name;
    JsonNode *node;
    json_object_iter_init(&iter, params);
    while (json_object_iter_next(&iter, &name, &node)) {
        const protocol_param *p = NULL;
        for (size_t i = 0; i < method->n_params && !p; i++)
            if (strcmp(method->params[i].name, name) == 0)
                p = &method->params[i];
        if (!p) {
            char known[160] = "";
            size_t used = 0;
            for (size_t i = 0; i < method->n_params && used < sizeof known; i++)
                used += (size_t)snprintf(known + used, sizeof known - used, "%s%s",
                                         i ? ", " : "", method->params[i].name);
            return refuse(error, PROTOCOL_ERROR_BAD_REQUEST, EINVAL,
                          "%s: unknown param \"%.40s\" (%s%s)", method->name, name,
                          method->n_params ? "known: " : "it takes none", known);
        }
        int r = check_param(method, p, node, error);
        if (r < 0)
            return r;
    }
    for (size_t i = 0; i < method->n_params; i++)
        if (method->params[i].required &&
            !json_object_has_member(params, method->params[i].name))
            return refuse(error, PROTOCOL_ERROR_BAD_REQUEST, EINVAL,
                          "%s: missing param \"%s\" (%s)", method->name,
                          method->params[i].name, method->params[i].help);
    return 0;
}

static int parse_object(JsonObject *root, protocol_request *req, protocol_error *error)
{
    int r = read_id(root, &error->id, error);
    if (r < 0)
        return r;

    JsonObjectIter iter;
    const char *name;
    JsonNode *node;
    json_object_iter_init(&iter, root);
    while (json_object_iter_next(&iter, &name, &node))
        if (strcmp(name, "id") != 0 && strcmp(name, "method") != 0 &&
            strcmp(name, "params") != 0 && strcmp(name, "version") != 0)
            return refuse(error, PROTOCOL_ERROR_BAD_REQUEST, EINVAL,
                          "unknown member \"%.40s\" (a request has version, id, method, "
                          "params)", name);

    node = json_object_get_member(root, "version");
    if (node) {
        if (!node_is(node, G_TYPE_INT64))
            return refuse(error, PROTOCOL_ERROR_BAD_REQUEST, EINVAL,
                          "\"version\" must be an integer, not %s", json_kind(node));
        if (json_node_get_int(node) != PROTOCOL_VERSION)
            return refuse(error, PROTOCOL_ERROR_UNSUPPORTED_VERSION, EPROTO,
                          "protocol version %" G_GINT64_FORMAT " is not supported "
                          "(this almd speaks version %d)",
                          json_node_get_int(node), PROTOCOL_VERSION);
    }

    node = json_object_get_member(root, "method");
    if (!node)
        return refuse(error, PROTOCOL_ERROR_BAD_REQUEST, EINVAL, "missing \"method\"");
    if (!node_is(node, G_TYPE_STRING))
        return refuse(error, PROTOCOL_ERROR_BAD_REQUEST, EINVAL,
                      "\"method\" must be a string, not %s", json_kind(node));
    const protocol_method *method = protocol_method_find(json_node_get_string(node));
    if (!method) {
        char known[200] = "";
        size_t used = 0;
        for (size_t i = 0; i < PROTOCOL_METHOD_COUNT_ && used < sizeof known; i++)
            used += (size_t)snprintf(known + used, sizeof known - used, "%s%s",
                                     i ? ", " : "", methods[i].name);
        return refuse(error, PROTOCOL_ERROR_UNKNOWN_METHOD, ENOSYS,
                      "unknown method \"%.40s\" (known: %s)", json_node_get_string(node),
                      known);
    }

    JsonObject *params;
    node = json_object_get_member(root, "params");
    if (!node || JSON_NODE_HOLDS_NULL(node))
        params = json_object_new();
    else if (JSON_NODE_HOLDS_OBJECT(node))
        params = json_object_ref(json_node_get_object(node));
    else
        return refuse(error, PROTOCOL_ERROR_BAD_REQUEST, EINVAL,
                      "\"params\" must be an object, not %s", json_kind(node));
    r = check_params(method, params, error);
    if (r < 0) {
        json_object_unref(params);
        return r;
    }
    req->id = error->id;
    req->method = method;
    req->params = params;
    return 0;
}

int protocol_request_parse(const char *line, size_t len, size_t max_bytes,
                           protocol_request *req, protocol_error *error)
{
    memset(req, 0, sizeof *req);
    memset(error, 0, sizeof *error);
    if (!line && len)
        return refuse(error, PROTOCOL_ERROR_INTERNAL, EINVAL, "no line");
    if (max_bytes && len > max_bytes)
        return refuse(error, PROTOCOL_ERROR_TOO_LARGE, EMSGSIZE,
                      "request of %zu bytes, more than max_request_bytes (%zu)", len,
                      max_bytes);
    if (len && memchr(line, '\0', len))
        return refuse(error, PROTOCOL_ERROR_BAD_REQUEST, EINVAL,
                      "request contains a NUL byte, which JSON text cannot hold");
    if (len > (size_t)G_MAXSSIZE || !g_utf8_validate(line ? line : "", (gssize)len, NULL))
        return refuse(error, PROTOCOL_ERROR_BAD_REQUEST, EINVAL,
                      "request is not valid UTF-8 text");
    if (json_depth(line, len, PROTOCOL_MAX_DEPTH) > PROTOCOL_MAX_DEPTH)
        return refuse(error, PROTOCOL_ERROR_BAD_REQUEST, EINVAL,
                      "JSON nested deeper than %d levels", PROTOCOL_MAX_DEPTH);

    JsonParser *parser = json_parser_new_immutable();
    GError *gerr = NULL;
    int r;
    if (!json_parser_load_from_data(parser, line ? line : "", (gssize)len, &gerr)) {
        r = refuse(error, PROTOCOL_ERROR_BAD_REQUEST, EINVAL, "malformed JSON: %s",
                   gerr ? gerr->message : "unknown error");
        g_clear_error(&gerr);
    } else {
        JsonNode *root = json_parser_get_root(parser);
        if (!root || !JSON_NODE_HOLDS_OBJECT(root))
            r = refuse(error, PROTOCOL_ERROR_BAD_REQUEST, EINVAL,
                       "a request must be a JSON object, not %s",
                       root ? json_kind(root) : "empty");
        else
            r = parse_object(json_node_get_object(root), req, error);
    }
    g_object_unref(parser);
    if (r < 0)
        memset(req, 0, sizeof *req);
    return r;
}

void protocol_request_clear(protocol_request *req)
{
    if (!req)
        return;
    if (req->params)
        json_object_unref(req->params);
    memset(req, 0, sizeof *req);
}

/* ------------------------------------------------------------ params */

static JsonNode *param_node(const protocol_request *req, const char *name)
{
    if (!req || !req->params)
        return NULL;
    JsonNode *node = json_object_get_member(req->params, name);
    return node && JSON_NODE_HOLDS_VALUE(node) ? node : NULL;
}

bool protocol_param_string(const protocol_request *req, const char *name, const char **out)
{
    JsonNode *node = param_node(req, name);
    if (!node || !node_is(node, G_TYPE_STRING))
        return false;
    *out = json_node_get_string(node);
    return true;
}

bool protocol_param_int(const protocol_request *req, const char *name, int64_t *out)
{
    JsonNode *node = param_node(req, name);
    if (!node || !node_is(node, G_TYPE_INT64))
        return false;
    *out = json_node_get_int(node);
    return true;
}

bool protocol_param_number(const protocol_request *req, const char *name, double *out)
{
    JsonNode *node = param_node(req, name);
    if (!node || !node_is_number(node))
        return false;
    *out = node_number(node);
    return true;
}

bool protocol_param_bool(const protocol_request *req, const char *name, bool *out)
{
    JsonNode *node = param_node(req, name);
    if (!node || !node_is(node, G_TYPE_BOOLEAN))
        return false;
    *out = json_node_get_boolean(node);
    return true;
}

char *protocol_param_scalar_text(const protocol_request *req, const char *name)
{
    JsonNode *node = param_node(req, name);
    if (!node)
        return NULL;
    char buf[64];
    if (node_is(node, G_TYPE_STRING))
        return strdup(json_node_get_string(node));
    if (node_is(node, G_TYPE_BOOLEAN))
        return strdup(json_node_get_boolean(node) ? "true" : "false");
    if (node_is(node, G_TYPE_INT64)) {
        snprintf(buf, sizeof buf, "%" G_GINT64_FORMAT, json_node_get_int(node));
        return strdup(buf);
    }
    if (node_is(node, G_TYPE_DOUBLE)) {
        /* Shortest form that reads back as the same double: 0.1, not
         * 0.10000000000000001. */
        double v = json_node_get_double(node);
        for (int digits = 1; digits <= 17; digits++) {
            snprintf(buf, sizeof buf, "%.*g", digits, v);
            if (strtod(buf, NULL) == v)
                break;
        }
        return strdup(buf);
    }
    return NULL;
}

/* ------------------------------------------------------------ builders */

static void set_id(JsonBuilder *b, const protocol_id *id)
{
    json_builder_set_member_name(b, "id");
    if (id && id->kind == PROTOCOL_ID_INT)
        json_builder_add_int_value(b, id->number);
    else if (id && id->kind == PROTOCOL_ID_STRING)
        json_builder_add_string_value(b, id->string);
    else
        json_builder_add_null_value(b);
}

/* Strings must be valid UTF-8 for the line to be JSON: bad bytes become
 * U+FFFD. */
static void add_text(JsonBuilder *b, const char *member, const char *text, gssize len)
{
    json_builder_set_member_name(b, member);
    char *valid = g_utf8_make_valid(text ? text : "", text ? len : 0);
    json_builder_add_string_value(b, valid);
    g_free(valid);
}

static void add_object(JsonBuilder *b, const char *member, JsonObject *object)
{
    json_builder_set_member_name(b, member);
    JsonNode *node = json_node_new(JSON_NODE_OBJECT);
    if (object)
        json_node_set_object(node, object);
    else
        json_node_take_object(node, json_object_new());
    json_builder_add_value(b, node);    /* takes node */
}

/* Serialises the builder's object as one line ending in '\n' (malloc'ed). */
static char *finish_line(JsonBuilder *b)
{
    json_builder_end_object(b);
    JsonNode *root = json_builder_get_root(b);
    g_object_unref(b);
    if (!root)
        return NULL;
    JsonGenerator *gen = json_generator_new();
    json_generator_set_root(gen, root);
    gsize n = 0;
    char *text = json_generator_to_data(gen, &n);
    g_object_unref(gen);
    json_node_unref(root);
    char *line = text ? malloc(n + 2) : NULL;
    if (line) {
        memcpy(line, text, n);
        line[n] = '\n';
        line[n + 1] = '\0';
    }
    g_free(text);
    return line;
}

static JsonBuilder *begin_line(const protocol_id *id)
{
    JsonBuilder *b = json_builder_new();
    json_builder_begin_object(b);
    set_id(b, id);
    return b;
}

char *protocol_request_line(const protocol_id *id, const char *method, JsonObject *params)
{
    JsonBuilder *b = json_builder_new();
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "version");
    json_builder_add_int_value(b, PROTOCOL_VERSION);
    set_id(b, id);
    add_text(b, "method", method, -1);
    add_object(b, "params", params);
    return finish_line(b);
}

char *protocol_result_line(const protocol_id *id, JsonObject *result)
{
    JsonBuilder *b = begin_line(id);
    add_object(b, "result", result);
    return finish_line(b);
}

char *protocol_token_event_line(const protocol_id *id, const char *text, size_t len)
{
    JsonBuilder *b = begin_line(id);
    add_text(b, "event", "token", -1);
    add_text(b, "text", text, (gssize)len);
    return finish_line(b);
}

char *protocol_event_line(const protocol_id *id, const char *event, JsonObject *fields)
{
    JsonBuilder *b = begin_line(id);
    add_text(b, "event", event, -1);
    if (fields) {
        JsonObjectIter iter;
        const char *name;
        JsonNode *node;
        json_object_iter_init(&iter, fields);
        while (json_object_iter_next(&iter, &name, &node)) {
            if (strcmp(name, "id") == 0 || strcmp(name, "event") == 0)
                continue;
            json_builder_set_member_name(b, name);
            json_builder_add_value(b, json_node_copy(node));
        }
    }
    return finish_line(b);
}

char *protocol_done_event_line(const protocol_id *id, JsonObject *result)
{
    JsonBuilder *b = begin_line(id);
    add_text(b, "event", "done", -1);
    add_object(b, "result", result);
    return finish_line(b);
}

static char *error_line(const protocol_id *id, protocol_error_code code, const char *message)
{
    JsonBuilder *b = begin_line(id);
    json_builder_set_member_name(b, "error");
    json_builder_begin_object(b);
    add_text(b, "code", protocol_error_code_name(code), -1);
    add_text(b, "message", message, -1);
    json_builder_end_object(b);
    return finish_line(b);
}

char *protocol_error_line(const protocol_id *id, protocol_error_code code, const char *fmt,
                          ...)
{
    va_list ap;
    va_start(ap, fmt);
    char *message = g_strdup_vprintf(fmt, ap);
    va_end(ap);
    char *line = error_line(id, code, message);
    g_free(message);
    return line;
}

char *protocol_error_line_for(const protocol_error *error)
{
    return error_line(&error->id, error->code, error->message);
}

/* ------------------------------------------------------------ replies */

int protocol_reply_parse(const char *line, size_t len, protocol_reply *reply,
                         protocol_error *error)
{
    memset(reply, 0, sizeof *reply);
    memset(error, 0, sizeof *error);
    if ((!line && len) || len > (size_t)G_MAXSSIZE ||
        !g_utf8_validate(line ? line : "", (gssize)len, NULL))
        return refuse(error, PROTOCOL_ERROR_BAD_REQUEST, EINVAL, "reply is not UTF-8 text");
    if (json_depth(line, len, PROTOCOL_MAX_DEPTH * 2) > PROTOCOL_MAX_DEPTH * 2)
        return refuse(error, PROTOCOL_ERROR_BAD_REQUEST, EINVAL, "reply nested too deeply");
    JsonParser *parser = json_parser_new_immutable();
    GError *gerr = NULL;
    if (!json_parser_load_from_data(parser, line ? line : "", (gssize)len, &gerr)) {
        int r = refuse(error, PROTOCOL_ERROR_BAD_REQUEST, EINVAL, "malformed reply: %s",
                       gerr ? gerr->message : "unknown error");
        g_clear_error(&gerr);
        g_object_unref(parser);
        return r;
    }
    JsonNode *root = json_parser_get_root(parser);
    if (!root || !JSON_NODE_HOLDS_OBJECT(root)) {
        g_object_unref(parser);
        return refuse(error, PROTOCOL_ERROR_BAD_REQUEST, EINVAL, "reply is not an object");
    }
    JsonObject *obj = json_object_ref(json_node_get_object(root));
    g_object_unref(parser);

    int r = 0;
    JsonNode *id = json_object_get_member(obj, "id");
    JsonNode *result = json_object_get_member(obj, "result");
    JsonNode *event = json_object_get_member(obj, "event");
    JsonNode *err = json_object_get_member(obj, "error");
    if (id && node_is(id, G_TYPE_INT64))
        protocol_id_set_int(&reply->id, json_node_get_int(id));
    else if (id && node_is(id, G_TYPE_STRING))
        r = protocol_id_set_string(&reply->id, json_node_get_string(id)) < 0
                ? refuse(error, PROTOCOL_ERROR_BAD_REQUEST, EINVAL, "reply id too long")
                : 0;
    else if (!id || !JSON_NODE_HOLDS_NULL(id))
        r = refuse(error, PROTOCOL_ERROR_BAD_REQUEST, EINVAL,
                   "reply without a valid \"id\"");

    if (r == 0 && err) {
        JsonObject *e = JSON_NODE_HOLDS_OBJECT(err) ? json_node_get_object(err) : NULL;
        JsonNode *code = e ? json_object_get_member(e, "code") : NULL;
        JsonNode *message = e ? json_object_get_member(e, "message") : NULL;
        if (!code || !node_is(code, G_TYPE_STRING) || !message ||
            !node_is(message, G_TYPE_STRING) || result || event) {
            r = refuse(error, PROTOCOL_ERROR_BAD_REQUEST, EINVAL,
                       "malformed error reply");
        } else {
            reply->kind = PROTOCOL_REPLY_ERROR;
            if (protocol_error_code_from_name(json_node_get_string(code),
                                              &reply->error_code) < 0)
                reply->error_code = PROTOCOL_ERROR_INTERNAL;
            reply->error_message = json_node_get_string(message);
        }
    } else if (r == 0 && event) {
        if (!node_is(event, G_TYPE_STRING) ||
            strlen(json_node_get_string(event)) >= sizeof reply->event) {
            r = refuse(error, PROTOCOL_ERROR_BAD_REQUEST, EINVAL, "malformed event name");
        } else {
            strcpy(reply->event, json_node_get_string(event));
            reply->kind = PROTOCOL_REPLY_EVENT;
            if (strcmp(reply->event, "done") == 0) {
                reply->kind = PROTOCOL_REPLY_DONE;
                if (!result || !JSON_NODE_HOLDS_OBJECT(result))
                    r = refuse(error, PROTOCOL_ERROR_BAD_REQUEST, EINVAL,
                               "\"done\" event without a result object");
                else
                    reply->result = json_node_get_object(result);
            }
        }
    } else if (r == 0 && result) {
        if (!JSON_NODE_HOLDS_OBJECT(result))
            r = refuse(error, PROTOCOL_ERROR_BAD_REQUEST, EINVAL,
                       "\"result\" is not an object");
        reply->kind = PROTOCOL_REPLY_RESULT;
        if (r == 0)
            reply->result = json_node_get_object(result);
    } else if (r == 0) {
        r = refuse(error, PROTOCOL_ERROR_BAD_REQUEST, EINVAL,
                   "reply has none of result, event, error");
    }
    if (r < 0) {
        json_object_unref(obj);
        memset(reply, 0, sizeof *reply);
        return r;
    }
    reply->object = obj;
    return 0;
}

void protocol_reply_clear(protocol_reply *reply)
{
    if (!reply)
        return;
    if (reply->object)
        json_object_unref(reply->object);
    memset(reply, 0, sizeof *reply);
}
