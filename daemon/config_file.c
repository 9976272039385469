/* almd.yaml: libyaml's document loader gives every node its position, so each
 * message can point at the exact line and column. The file is parsed into a
 * private daemon_config that replaces *out only when everything is valid. */
#include "config_file.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <yaml.h>

#include "core/cleanup.h"
#include "core/error.h"

static const char *const log_level_names[] = {
    [DAEMON_LOG_DEBUG] = "debug",
    [DAEMON_LOG_INFO] = "info",
    [DAEMON_LOG_NOTICE] = "notice",
    [DAEMON_LOG_WARNING] = "warning",
    [DAEMON_LOG_ERROR] = "error",
};
#define N_LOG_LEVELS (sizeof log_level_names / sizeof log_level_names[0])

const char *daemon_log_level_name(daemon_log_level level)
{
    return (unsigned)level < N_LOG_LEVELS ? log_level_names[level] : "?";
}

int daemon_log_level_from_name(const char *name, daemon_log_level *level)
{
    for (size_t i = 0; i < N_LOG_LEVELS; i++)
        if (strcmp(name, log_level_names[i]) == 0) {
            *level = (daemon_log_level)i;
            return 0;
        }
    return -EINVAL;
}

/* ------------------------------------------------------------ defaults */

static int copy_path(char *dst, const char *what, alm_error *err, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));

static int copy_path(char *dst, const char *what, alm_error *err, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(dst, PATH_MAX, fmt, ap);
    va_end(ap);
    if (n < 0 || n >= PATH_MAX)
        return alm_error_set(err, -ENAMETOOLONG, "%s: path too long", what);
    return 0;
}

static int set_models_dir(daemon_config_defaults *d, const char *default_models_dir,
                          alm_error *err)
{
    if (!default_models_dir || default_models_dir[0] == '\0')
        return alm_error_set(err, -EINVAL, "default models folder not given");
    return copy_path(d->default_models_dir, "default models folder", err, "%s",
                     default_models_dir);
}

int daemon_config_defaults_system(daemon_config_defaults *d,
                                  const char *default_models_dir, alm_error *err)
{
    if (!d)
        return alm_error_set(err, -EINVAL, "daemon_config_defaults_system: no defaults");
    memset(d, 0, sizeof *d);
    strcpy(d->socket_path, "/run/alm/almd.sock");
    strcpy(d->database_path, "/var/lib/alm/alm.db");
    return set_models_dir(d, default_models_dir, err);
}

int daemon_config_defaults_user(daemon_config_defaults *d, const char *default_models_dir,
                                const char *xdg_runtime_dir, const char *xdg_state_home,
                                const char *home, alm_error *err)
{
    if (!d)
        return alm_error_set(err, -EINVAL, "daemon_config_defaults_user: no defaults");
    memset(d, 0, sizeof *d);
    /* The XDG base directory spec says relative values are to be ignored. */
    if (!xdg_runtime_dir || xdg_runtime_dir[0] != '/')
        return alm_error_set(err, -EINVAL,
                             "XDG_RUNTIME_DIR is not set to an absolute path: "
                             "a user instance needs it for its socket");
    int r = copy_path(d->socket_path, "socket", err, "%s/alm/almd.sock", xdg_runtime_dir);
    if (r < 0)
        return r;
    if (xdg_state_home && xdg_state_home[0] == '/')
        r = copy_path(d->database_path, "database", err, "%s/alm/alm.db", xdg_state_home);
    else if (home && home[0] == '/')
        r = copy_path(d->database_path, "database", err, "%s/.local/state/alm/alm.db", home);
    else
        return alm_error_set(err, -EINVAL,
                             "neither XDG_STATE_HOME nor HOME is an absolute path: "
                             "a user instance needs one for its database");
    if (r < 0)
        return r;
    return set_models_dir(d, default_models_dir, err);
}

/* ------------------------------------------------------------ config life */

void daemon_config_clear(daemon_config *config)
{
    if (!config)
        return;
    free(config->socket_path);
    free(config->socket_group);
    free(config->admin_group);
    free(config->database_path);
    for (size_t i = 0; i < config->n_model_dirs; i++)
        free(config->model_dirs[i]);
    free(config->model_dirs);
    memset(config, 0, sizeof *config);
}

static int dup_into(char **dst, const char *src, alm_error *err)
{
    char *copy = strdup(src);
    if (!copy)
        return alm_error_set(err, -ENOMEM, "out of memory");
    free(*dst);
    *dst = copy;
    return 0;
}

static int config_init_defaults(daemon_config *c, const daemon_config_defaults *d,
                                alm_error *err)
{
    memset(c, 0, sizeof *c);
    c->socket_mode = DAEMON_CONFIG_DEFAULT_SOCKET_MODE;
    c->log_level = DAEMON_LOG_INFO;
    c->max_clients = DAEMON_CONFIG_DEFAULT_MAX_CLIENTS;
    c->max_request_bytes = DAEMON_CONFIG_DEFAULT_MAX_REQUEST_BYTES;
    c->max_prompt_tokens = DAEMON_CONFIG_DEFAULT_MAX_PROMPT_TOKENS;
    int r;
    if ((r = dup_into(&c->socket_path, d->socket_path, err)) < 0 ||
        (r = dup_into(&c->socket_group, DAEMON_CONFIG_DEFAULT_SOCKET_GROUP, err)) < 0 ||
        (r = dup_into(&c->admin_group, DAEMON_CONFIG_DEFAULT_ADMIN_GROUP, err)) < 0 ||
        (r = dup_into(&c->database_path, d->database_path, err)) < 0)
        return r;
    return 0;
}

/* The default models' folder goes last, once, whatever the file says. */
static int config_add_default_models_dir(daemon_config *c, const daemon_config_defaults *d,
                                         alm_error *err)
{
    for (size_t i = 0; i < c->n_model_dirs; i++)
        if (strcmp(c->model_dirs[i], d->default_models_dir) == 0)
            return 0;
    char **dirs = realloc(c->model_dirs, (c->n_model_dirs + 1) * sizeof *dirs);
    if (!dirs)
        return alm_error_set(err, -ENOMEM, "out of memory");
    c->model_dirs = dirs;
    dirs[c->n_model_dirs] = strdup(d->default_models_dir);
    if (!dirs[c->n_model_dirs])
        return alm_error_set(err, -ENOMEM, "out of memory");
    c->n_model_dirs++;
    return 0;
}

/* ------------------------------------------------------------ YAML values */

typedef struct yaml_ctx {
    const char *name;       /* file name for messages */
    yaml_document_t *doc;
    alm_error *err;
} yaml_ctx;

static int node_error(const yaml_ctx *ctx, const yaml_node_t *node, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* "FILE:LINE:COLUMN: message", with libyaml's 0-based marks made 1-based. */
static int node_error(const yaml_ctx *ctx, const yaml_node_t *node, const char *fmt, ...)
{
    char what[400];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return alm_error_set(ctx->err, -EINVAL, "%s:%zu:%zu: %s", ctx->name,
                         node->start_mark.line + 1, node->start_mark.column + 1, what);
}

static const char *node_kind(const yaml_node_t *node)
{
    switch (node->type) {
    case YAML_SCALAR_NODE: return "a scalar";
    case YAML_SEQUENCE_NODE: return "a list";
    case YAML_MAPPING_NODE: return "a mapping";
    default: return "nothing";
    }
}

static const char *scalar_text(const yaml_node_t *node)
{
    return (const char *)node->data.scalar.value;
}

static bool scalar_is_plain(const yaml_node_t *node)
{
    return node->data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
}

/* A plain scalar that YAML reads as null: an empty value, "~" or "null". */
static bool scalar_is_null(const yaml_node_t *node)
{
    if (!scalar_is_plain(node))
        return false;
    const char *s = scalar_text(node);
    return s[0] == '\0' || strcmp(s, "~") == 0 || strcmp(s, "null") == 0 ||
           strcmp(s, "Null") == 0 || strcmp(s, "NULL") == 0;
}

static int want_scalar(const yaml_ctx *ctx, const char *key, const yaml_node_t *node,
                       const char *expected)
{
    if (node->type != YAML_SCALAR_NODE)
        return node_error(ctx, node, "%s: expected %s, got %s", key, expected,
                          node_kind(node));
    if (scalar_is_null(node))
        return node_error(ctx, node,
                          "%s: no value (expected %s; remove the key to use the default)",
                          key, expected);
    if (node->data.scalar.length != strlen(scalar_text(node)))
        return node_error(ctx, node, "%s: value contains a NUL character", key);
    return 0;
}

static int parse_string(const yaml_ctx *ctx, const char *key, const yaml_node_t *node,
                        char **dst)
{
    int r = want_scalar(ctx, key, node, "a string");
    if (r < 0)
        return r;
    return dup_into(dst, scalar_text(node), ctx->err);
}

static int parse_absolute_path(const yaml_ctx *ctx, const char *key,
                               const yaml_node_t *node, char **dst)
{
    int r = want_scalar(ctx, key, node, "an absolute path");
    if (r < 0)
        return r;
    const char *s = scalar_text(node);
    if (s[0] != '/')
        return node_error(ctx, node, "%s: \"%s\" is not an absolute path", key, s);
    if (strlen(s) >= PATH_MAX)
        return node_error(ctx, node, "%s: path longer than %d bytes", key, PATH_MAX - 1);
    return dup_into(dst, s, ctx->err);
}

/* A group name as groupadd accepts it: no spaces, colons or slashes. */
static int parse_group(const yaml_ctx *ctx, const char *key, const yaml_node_t *node,
                       char **dst)
{
    int r = parse_string(ctx, key, node, dst);
    if (r < 0)
        return r;
    const char *s = *dst;
    if (strlen(s) > 64 || s[0] == '-' || strpbrk(s, " \t:/,\n") != NULL)
        return node_error(ctx, node, "%s: \"%s\" is not a valid group name", key, s);
    return 0;
}

/* Decimal digits only, in a plain (unquoted) scalar, with an optional binary
 * suffix when units is true: K/KiB = 1024, M/MiB = 1024^2, G/GiB = 1024^3. */
static int parse_unsigned(const yaml_ctx *ctx, const char *key, const yaml_node_t *node,
                          bool units, uint64_t min, uint64_t max, uint64_t *out)
{
    const char *expected = units ? "an integer (optionally with K, M or G)" : "an integer";
    int r = want_scalar(ctx, key, node, expected);
    if (r < 0)
        return r;
    const char *s = scalar_text(node);
    if (!scalar_is_plain(node))
        return node_error(ctx, node, "%s: expected %s, got the quoted string \"%s\"", key,
                          expected, s);
    uint64_t value = 0;
    size_t i = 0;
    for (; s[i] >= '0' && s[i] <= '9'; i++) {
        if (value > (UINT64_MAX - 9) / 10)
            return node_error(ctx, node, "%s: %s is out of range (%" PRIu64 "..%" PRIu64 ")",
                              key, s, min, max);
        value = value * 10 + (uint64_t)(s[i] - '0');
    }
    uint64_t scale = 1;
    const char *suffix = s + i;
    if (i > 0 && units && *suffix) {
        if (strcmp(suffix, "K") == 0 || strcmp(suffix, "KiB") == 0 || strcmp(suffix, "k") == 0)
            scale = 1ull << 10;
        else if (strcmp(suffix, "M") == 0 || strcmp(suffix, "MiB") == 0)
            scale = 1ull << 20;
        else if (strcmp(suffix, "G") == 0 || strcmp(suffix, "GiB") == 0)
            scale = 1ull << 30;
        else
            scale = 0;
        if (scale)
            suffix = "";
    }
    if (i == 0 || *suffix || scale == 0)
        return node_error(ctx, node, "%s: expected %s, got \"%s\"", key, expected, s);
    if (value > UINT64_MAX / scale || value * scale < min || value * scale > max)
        return node_error(ctx, node, "%s: %s is out of range (%" PRIu64 "..%" PRIu64 ")", key,
                          s, min, max);
    *out = value * scale;
    return 0;
}

/* Always octal, as with chmod and systemd's SocketMode=: 0660, 660 and 0o660
 * mean the same. Quoted or not, since "0660" is the usual way to stop YAML
 * 1.2 readers from taking it as decimal. */
static int parse_mode(const yaml_ctx *ctx, const char *key, const yaml_node_t *node,
                      mode_t *out)
{
    int r = want_scalar(ctx, key, node, "an octal mode such as 0660");
    if (r < 0)
        return r;
    const char *s = scalar_text(node);
    const char *digits = strncmp(s, "0o", 2) == 0 ? s + 2 : s;
    unsigned value = 0;
    size_t i = 0;
    for (; digits[i] >= '0' && digits[i] <= '7' && i < 8; i++)
        value = value * 8 + (unsigned)(digits[i] - '0');
    if (i == 0 || digits[i] != '\0')
        return node_error(ctx, node, "%s: expected an octal mode such as 0660, got \"%s\"",
                          key, s);
    if (value > 0777)
        return node_error(ctx, node, "%s: %s is out of range (0000..0777)", key, s);
    if ((value & 0600) != 0600)
        return node_error(ctx, node,
                          "%s: %s does not give the owner (almd) read and write access", key,
                          s);
    *out = (mode_t)value;
    return 0;
}

static int parse_log_level(const yaml_ctx *ctx, const char *key, const yaml_node_t *node,
                           daemon_log_level *out)
{
    int r = want_scalar(ctx, key, node, "a log level");
    if (r < 0)
        return r;
    if (daemon_log_level_from_name(scalar_text(node), out) < 0)
        return node_error(ctx, node,
                          "%s: unknown level \"%s\" (known: debug, info, notice, warning, error)",
                          key, scalar_text(node));
    return 0;
}

static int parse_model_dirs(const yaml_ctx *ctx, const char *key, const yaml_node_t *node,
                            daemon_config *c)
{
    if (node->type != YAML_SEQUENCE_NODE)
        return node_error(ctx, node, "%s: expected a list of absolute paths, got %s", key,
                          node_kind(node));
    for (size_t i = 0; i < c->n_model_dirs; i++)
        free(c->model_dirs[i]);
    free(c->model_dirs);
    c->model_dirs = NULL;
    c->n_model_dirs = 0;
    size_t n = (size_t)(node->data.sequence.items.top - node->data.sequence.items.start);
    if (n == 0)
        return 0;
    c->model_dirs = calloc(n, sizeof *c->model_dirs);
    if (!c->model_dirs)
        return alm_error_set(ctx->err, -ENOMEM, "out of memory");
    for (size_t i = 0; i < n; i++) {
        const yaml_node_t *item =
            yaml_document_get_node(ctx->doc, node->data.sequence.items.start[i]);
        char *dir = NULL;
        int r = parse_absolute_path(ctx, key, item, &dir);
        if (r < 0)
            return r;
        /* Listing a folder twice is harmless but almost surely a mistake
         * made while editing; keep the first. */
        bool seen = false;
        for (size_t j = 0; j < c->n_model_dirs; j++)
            seen = seen || strcmp(c->model_dirs[j], dir) == 0;
        if (seen)
            free(dir);
        else
            c->model_dirs[c->n_model_dirs++] = dir;
    }
    return 0;
}

/* ------------------------------------------------------------ the keys */

typedef int (*key_parser)(const yaml_ctx *ctx, const char *key, const yaml_node_t *node,
                          daemon_config *c);

static int key_socket(const yaml_ctx *ctx, const char *key, const yaml_node_t *node,
                      daemon_config *c)
{
    return parse_absolute_path(ctx, key, node, &c->socket_path);
}

static int key_socket_mode(const yaml_ctx *ctx, const char *key, const yaml_node_t *node,
                           daemon_config *c)
{
    return parse_mode(ctx, key, node, &c->socket_mode);
}

static int key_socket_group(const yaml_ctx *ctx, const char *key, const yaml_node_t *node,
                            daemon_config *c)
{
    return parse_group(ctx, key, node, &c->socket_group);
}

static int key_admin_group(const yaml_ctx *ctx, const char *key, const yaml_node_t *node,
                           daemon_config *c)
{
    return parse_group(ctx, key, node, &c->admin_group);
}

static int key_database(const yaml_ctx *ctx, const char *key, const yaml_node_t *node,
                        daemon_config *c)
{
    return parse_absolute_path(ctx, key, node, &c->database_path);
}

static int key_model_dirs(const yaml_ctx *ctx, const char *key, const yaml_node_t *node,
                          daemon_config *c)
{
    return parse_model_dirs(ctx, key, node, c);
}

static int key_log_level(const yaml_ctx *ctx, const char *key, const yaml_node_t *node,
                         daemon_config *c)
{
    return parse_log_level(ctx, key, node, &c->log_level);
}

static int key_max_clients(const yaml_ctx *ctx, const char *key, const yaml_node_t *node,
                           daemon_config *c)
{
    uint64_t v = 0;
    int r = parse_unsigned(ctx, key, node, false, 1, 65536, &v);
    if (r == 0)
        c->max_clients = (unsigned)v;
    return r;
}

static int key_max_request_bytes(const yaml_ctx *ctx, const char *key,
                                 const yaml_node_t *node, daemon_config *c)
{
    /* Below 1 KiB even a config.set cannot be sent; above 1 GiB one client
     * could hold the daemon's memory hostage. */
    uint64_t v = 0;
    int r = parse_unsigned(ctx, key, node, true, 1024, 1ull << 30, &v);
    if (r == 0)
        c->max_request_bytes = (size_t)v;
    return r;
}

static int key_max_prompt_tokens(const yaml_ctx *ctx, const char *key,
                                 const yaml_node_t *node, daemon_config *c)
{
    uint64_t v = 0;
    int r = parse_unsigned(ctx, key, node, false, 1, 1u << 24, &v);
    if (r == 0)
        c->max_prompt_tokens = (size_t)v;
    return r;
}

static const struct {
    const char *name;
    key_parser parse;
} config_keys[] = {
    { "socket", key_socket },
    { "socket_mode", key_socket_mode },
    { "socket_group", key_socket_group },
    { "admin_group", key_admin_group },
    { "database", key_database },
    { "model_dirs", key_model_dirs },
    { "log_level", key_log_level },
    { "max_clients", key_max_clients },
    { "max_request_bytes", key_max_request_bytes },
    { "max_prompt_tokens", key_max_prompt_tokens },
};
#define N_CONFIG_KEYS (sizeof config_keys / sizeof config_keys[0])

static int unknown_key(const yaml_ctx *ctx, const yaml_node_t *node)
{
    char known[300] = "";
    size_t used = 0;
    for (size_t i = 0; i < N_CONFIG_KEYS && used < sizeof known; i++)
        used += (size_t)snprintf(known + used, sizeof known - used, "%s%s", i ? ", " : "",
                                 config_keys[i].name);
    return node_error(ctx, node, "unknown key \"%s\" (known: %s)", scalar_text(node), known);
}

static int apply_mapping(const yaml_ctx *ctx, const yaml_node_t *root, daemon_config *c)
{
    if (root->type != YAML_MAPPING_NODE)
        return node_error(ctx, root, "the top level must be a mapping of keys to values, "
                          "not %s", node_kind(root));
    const yaml_node_t *seen[N_CONFIG_KEYS] = { 0 };
    for (yaml_node_pair_t *pair = root->data.mapping.pairs.start;
         pair < root->data.mapping.pairs.top; pair++) {
        const yaml_node_t *key = yaml_document_get_node(ctx->doc, pair->key);
        const yaml_node_t *value = yaml_document_get_node(ctx->doc, pair->value);
        if (!key || !value)
            return alm_error_set(ctx->err, -EINVAL, "%s: malformed document", ctx->name);
        if (key->type != YAML_SCALAR_NODE)
            return node_error(ctx, key, "a key must be a plain name, not %s", node_kind(key));
        size_t k = 0;
        while (k < N_CONFIG_KEYS && strcmp(config_keys[k].name, scalar_text(key)) != 0)
            k++;
        if (k == N_CONFIG_KEYS)
            return unknown_key(ctx, key);
        if (seen[k])
            return node_error(ctx, key, "duplicate key \"%s\" (first set at line %zu)",
                              config_keys[k].name, seen[k]->start_mark.line + 1);
        seen[k] = key;
        int r = config_keys[k].parse(ctx, config_keys[k].name, value, c);
        if (r < 0)
            return r;
    }
    return 0;
}

/* The reader (encoding errors) reports a byte offset, not a mark: turn it
 * into a line and column so that every message has the same form. */
static int syntax_error(const yaml_parser_t *parser, const char *text, size_t len,
                        const char *name, alm_error *err)
{
    size_t line = parser->problem_mark.line, column = parser->problem_mark.column;
    if (parser->error == YAML_READER_ERROR) {
        line = column = 0;
        for (size_t i = 0; i < parser->problem_offset && i < len; i++) {
            if (text[i] == '\n') {
                line++;
                column = 0;
            } else if (((unsigned char)text[i] & 0xc0) != 0x80) {
                column++;
            }
        }
    }
    return alm_error_set(err, -EINVAL, "%s:%zu:%zu: YAML syntax error: %s%s%s", name,
                         line + 1, column + 1,
                         parser->problem ? parser->problem : "unknown problem",
                         parser->context ? " " : "", parser->context ? parser->context : "");
}

/* Parses the one document of the stream (none at all, e.g. only comments,
 * leaves the defaults). */
static int apply_yaml(const char *text, size_t len, const char *name, daemon_config *c,
                      alm_error *err)
{
    yaml_parser_t parser;
    if (!yaml_parser_initialize(&parser))
        return alm_error_set(err, -ENOMEM, "%s: cannot initialise the YAML parser", name);
    yaml_parser_set_input_string(&parser, (const unsigned char *)text, len);
    yaml_parser_set_encoding(&parser, YAML_UTF8_ENCODING);

    yaml_document_t doc;
    int r = 0;
    if (!yaml_parser_load(&parser, &doc)) {
        r = syntax_error(&parser, text, len, name, err);
        yaml_parser_delete(&parser);
        return r;
    }
    yaml_ctx ctx = { .name = name, .doc = &doc, .err = err };
    const yaml_node_t *root = yaml_document_get_root_node(&doc);
    if (root) {
        /* "---" alone is a document holding one empty scalar: no keys. */
        bool empty = root->type == YAML_SCALAR_NODE && scalar_is_null(root);
        r = empty ? 0 : apply_mapping(&ctx, root, c);
        if (r == 0) {
            /* A second document would be silently ignored: refuse it. */
            yaml_document_t next;
            if (!yaml_parser_load(&parser, &next)) {
                r = syntax_error(&parser, text, len, name, err);
            } else {
                const yaml_node_t *extra = yaml_document_get_root_node(&next);
                if (extra)
                    r = alm_error_set(err, -EINVAL,
                                      "%s:%zu:%zu: a second YAML document; the file must "
                                      "hold exactly one",
                                      name, next.start_mark.line + 1,
                                      next.start_mark.column + 1);
                yaml_document_delete(&next);
            }
        }
    }
    yaml_document_delete(&doc);
    yaml_parser_delete(&parser);
    return r;
}

int daemon_config_load_string(const char *text, size_t len, const char *name,
                              const daemon_config_defaults *defaults,
                              daemon_config *out, alm_error *err)
{
    if (!out || !defaults || (!text && len))
        return alm_error_set(err, -EINVAL, "daemon_config_load_string: bad arguments");
    memset(out, 0, sizeof *out);
    if (!name)
        name = "<config>";
    if (len > DAEMON_CONFIG_MAX_FILE_BYTES)
        return alm_error_set(err, -EFBIG, "%s: %zu bytes, more than the %zu a config may have",
                             name, len, DAEMON_CONFIG_MAX_FILE_BYTES);
    daemon_config c;
    int r = config_init_defaults(&c, defaults, err);
    if (r == 0)
        r = apply_yaml(text ? text : "", len, name, &c, err);
    if (r == 0)
        r = config_add_default_models_dir(&c, defaults, err);
    if (r < 0) {
        daemon_config_clear(&c);
        return r;
    }
    c.source = DAEMON_CONFIG_FROM_FILE;
    *out = c;
    return 0;
}

static int defaults_only(daemon_config_source source, const daemon_config_defaults *d,
                         daemon_config *out, alm_error *err)
{
    daemon_config c;
    int r = config_init_defaults(&c, d, err);
    if (r == 0)
        r = config_add_default_models_dir(&c, d, err);
    if (r < 0) {
        daemon_config_clear(&c);
        return r;
    }
    c.source = source;
    *out = c;
    return 0;
}

int daemon_config_load(const char *path, const daemon_config_defaults *defaults,
                       daemon_config *out, alm_error *err)
{
    if (!out || !defaults)
        return alm_error_set(err, -EINVAL, "daemon_config_load: bad arguments");
    memset(out, 0, sizeof *out);
    if (!path)
        return defaults_only(DAEMON_CONFIG_NO_PATH, defaults, out, err);

    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT)
            return defaults_only(DAEMON_CONFIG_FILE_ABSENT, defaults, out, err);
        int e = errno;
        return alm_error_set(err, -e, "%s: cannot open: %s", path, strerror(e));
    }
    struct stat st;
    if (fstat(fd, &st) < 0) {
        int e = errno;
        return alm_error_set(err, -e, "%s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode))
        return alm_error_set(err, -EINVAL, "%s: not a regular file", path);
    if ((uint64_t)st.st_size > DAEMON_CONFIG_MAX_FILE_BYTES)
        return alm_error_set(err, -EFBIG, "%s: %jd bytes, more than the %zu a config may have",
                             path, (intmax_t)st.st_size, DAEMON_CONFIG_MAX_FILE_BYTES);
    _cleanup_free_ char *text = malloc((size_t)st.st_size + 1);
    if (!text)
        return alm_error_set(err, -ENOMEM, "out of memory");
    size_t len = 0;
    for (;;) {
        ssize_t n = read(fd, text + len, (size_t)st.st_size + 1 - len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int e = errno;
            return alm_error_set(err, -e, "%s: cannot read: %s", path, strerror(e));
        }
        if (n == 0)
            break;
        len += (size_t)n;
        /* The file grew while we read it: refuse rather than guess. */
        if (len > (size_t)st.st_size)
            return alm_error_set(err, -EAGAIN, "%s: changed while being read", path);
    }
    return daemon_config_load_string(text, len, path, defaults, out, err);
}
