#include "loader/json_document.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/cleanup.h"
#include "core/error.h"

static bool is_json_space(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* One pass over the raw text before json-glib sees it: exactly one object,
 * nothing but whitespace after it, bounded nesting, no NUL bytes. Strings
 * are skipped with their escapes so that brackets inside them do not
 * count. */
static int check_structure(const char *text, size_t len, const char *what,
                           int max_depth, alm_error *err)
{
    size_t i = 0;
    while (i < len && is_json_space(text[i]))
        i++;
    if (i == len)
        return alm_error_set(err, -EINVAL, "%s: malformed JSON: empty document", what);
    if (text[i] != '{')
        return alm_error_set(err, -EINVAL, "%s: malformed JSON: expected an object", what);

    int depth = 0;
    bool in_string = false;
    for (; i < len; i++) {
        char c = text[i];
        if (c == '\0')
            return alm_error_set(err, -EINVAL,
                                 "%s: malformed JSON: NUL byte at offset %zu", what, i);
        if (in_string) {
            if (c == '\\')
                i++; /* the escaped character cannot end the string */
            else if (c == '"')
                in_string = false;
            continue;
        }
        if (c == '"') {
            in_string = true;
        } else if (c == '{' || c == '[') {
            if (++depth > max_depth)
                return alm_error_set(err, -EINVAL,
                                     "%s: malformed JSON: nesting deeper than %d",
                                     what, max_depth);
        } else if (c == '}' || c == ']') {
            if (--depth == 0) {
                i++;
                break;
            }
            if (depth < 0)
                break; /* json-glib reports the mismatch */
        }
    }
    for (; i < len; i++) {
        if (text[i] == '\0')
            return alm_error_set(err, -EINVAL,
                                 "%s: malformed JSON: NUL byte at offset %zu", what, i);
        if (!is_json_space(text[i]))
            return alm_error_set(err, -EINVAL,
                                 "%s: malformed JSON: unexpected text after the object at offset %zu",
                                 what, i);
    }
    return 0;
}

/* Watches the parser to find top-level member names given twice. */
typedef struct duplicate_watch {
    int depth;
    GHashTable *seen;
    char *duplicate;
} duplicate_watch;

static void on_object_start(JsonParser *parser, gpointer data)
{
    duplicate_watch *w = data;
    w->depth++;
}

static void on_object_end(JsonParser *parser, JsonObject *object, gpointer data)
{
    duplicate_watch *w = data;
    w->depth--;
}

static void on_object_member(JsonParser *parser, JsonObject *object,
                             gchar *name, gpointer data)
{
    duplicate_watch *w = data;
    if (w->depth != 1 || w->duplicate)
        return;
    if (g_hash_table_contains(w->seen, name))
        w->duplicate = g_strdup(name);
    else
        g_hash_table_add(w->seen, g_strdup(name));
}

int json_document_parse(const char *text, size_t len, const char *what,
                        int max_depth, bool refuse_duplicates,
                        json_document *out, alm_error *err)
{
    memset(out, 0, sizeof *out);
    int r = check_structure(text, len, what, max_depth, err);
    if (r < 0)
        return r;
    if (len > G_MAXSSIZE || !g_utf8_validate_len(text, len, NULL))
        return alm_error_set(err, -EINVAL, "%s: malformed JSON: invalid UTF-8", what);

    JsonParser *parser = json_parser_new();
    duplicate_watch watch = { 0 };
    if (refuse_duplicates) {
        watch.seen = g_hash_table_new_full(g_str_hash, g_str_equal, g_free, NULL);
        g_signal_connect(parser, "object-start", G_CALLBACK(on_object_start), &watch);
        g_signal_connect(parser, "object-end", G_CALLBACK(on_object_end), &watch);
        g_signal_connect(parser, "object-member", G_CALLBACK(on_object_member), &watch);
    }

    GError *gerr = NULL;
    gboolean parsed = json_parser_load_from_data(parser, text, (gssize)len, &gerr);
    if (refuse_duplicates) {
        /* The watch lives on this stack frame: disconnect before leaving. */
        g_signal_handlers_disconnect_by_data(parser, &watch);
        g_hash_table_unref(watch.seen);
    }
    if (!parsed) {
        r = alm_error_set(err, -EINVAL, "%s: malformed JSON: %s", what,
                          gerr ? gerr->message : "parse error");
        g_clear_error(&gerr);
        g_free(watch.duplicate);
        g_object_unref(parser);
        return r;
    }
    if (watch.duplicate) {
        r = alm_error_set(err, -EINVAL, "%s: duplicate entry \"%s\"", what, watch.duplicate);
        g_free(watch.duplicate);
        g_object_unref(parser);
        return r;
    }
    JsonNode *root = json_parser_get_root(parser);
    if (!root || !JSON_NODE_HOLDS_OBJECT(root)) {
        g_object_unref(parser);
        return alm_error_set(err, -EINVAL, "%s: malformed JSON: expected an object", what);
    }
    out->parser = parser;
    out->root = json_node_get_object(root);
    return 0;
}

int read_small_file(const char *path, size_t max_bytes, char **text,
                    size_t *len, alm_error *err)
{
    *text = NULL;
    *len = 0;
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return alm_error_set(err, -errno, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) < 0)
        return alm_error_set(err, -errno, "%s: cannot stat: %s", path, strerror(errno));
    if (!S_ISREG(st.st_mode))
        return alm_error_set(err, -EINVAL, "%s: not a regular file", path);
    if ((uint64_t)st.st_size > max_bytes)
        return alm_error_set(err, -EFBIG, "%s: %lld bytes, more than the %zu allowed",
                             path, (long long)st.st_size, max_bytes);
    size_t size = (size_t)st.st_size;
    _cleanup_free_ char *buf = malloc(size + 1);
    if (!buf)
        return alm_error_set(err, -ENOMEM, "%s: out of memory", path);
    size_t done = 0;
    while (done < size) {
        ssize_t n = read(fd, buf + done, size - done);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return alm_error_set(err, -errno, "%s: cannot read: %s", path, strerror(errno));
        if (n == 0)
            break; /* the file shrank under us: parse what we have */
        done += (size_t)n;
    }
    buf[done] = '\0';
    *len = done;
    *text = TAKE_PTR(buf);
    return 0;
}

int json_document_load(const char *path, size_t max_bytes, int max_depth,
                       json_document *out, alm_error *err)
{
    memset(out, 0, sizeof *out);
    _cleanup_free_ char *text = NULL;
    size_t len;
    int r = read_small_file(path, max_bytes, &text, &len, err);
    if (r < 0)
        return r;
    return json_document_parse(text, len, path, max_depth, false, out, err);
}

void json_document_clear(json_document *doc)
{
    if (doc->parser)
        g_object_unref(doc->parser);
    doc->parser = NULL;
    doc->root = NULL;
}
