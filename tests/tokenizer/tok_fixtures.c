#include "tok_fixtures.h"

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>


static char *join(const char *a, const char *b)
{
    size_t n = strlen(a) + strlen(b) + 2;
    char *p = malloc(n);
    if (p)
        snprintf(p, n, "%s/%s", a, b);
    return p;
}

char *tok_data_path(const char *rel)
{
    const char *base = getenv("ALM_TEST_DATA");
    return base ? join(base, rel) : NULL;
}

char *tok_shared_path(const char *rel)
{
    const char *base = getenv("ALM_SHARED_DIR");
    struct stat st;
    if (!base || stat(base, &st) != 0 || !S_ISDIR(st.st_mode))
        return NULL;
    return join(base, rel);
}

JsonParser *tok_read_json(const char *path)
{
    JsonParser *p = json_parser_new();
    GError *e = NULL;
    if (!json_parser_load_from_file(p, path, &e)) {
        tap_diag("cannot read %s: %s", path, e->message);
        g_error_free(e);
        g_object_unref(p);
        return NULL;
    }
    return p;
}

/* Parses the string literal at s[*i] (which is '"'), advancing *i. */
static bool parse_string(const char *s, size_t n, size_t *i, GString *out)
{
    size_t k = *i + 1;
    g_string_truncate(out, 0);
    while (k < n && s[k] != '"') {
        if (s[k] != '\\') {
            g_string_append_c(out, s[k++]);
            continue;
        }
        if (++k >= n)
            return false;
        char e = s[k++];
        switch (e) {
        case 'b': g_string_append_c(out, '\b'); break;
        case 'f': g_string_append_c(out, '\f'); break;
        case 'n': g_string_append_c(out, '\n'); break;
        case 'r': g_string_append_c(out, '\r'); break;
        case 't': g_string_append_c(out, '\t'); break;
        case 'u': {
            if (k + 4 > n)
                return false;
            char hex[5] = { s[k], s[k + 1], s[k + 2], s[k + 3], 0 };
            gunichar c = (gunichar)strtoul(hex, NULL, 16);
            k += 4;
            if (c >= 0xD800 && c < 0xDC00 && k + 6 <= n && s[k] == '\\' && s[k + 1] == 'u') {
                char lo[5] = { s[k + 2], s[k + 3], s[k + 4], s[k + 5], 0 };
                gunichar l = (gunichar)strtoul(lo, NULL, 16);
                c = 0x10000 + ((c - 0xD800) << 10) + (l - 0xDC00);
                k += 6;
            }
            if (c == 0)
                g_string_append_len(out, "", 1);
            else
                g_string_append_unichar(out, c);
            break;
        }
        default: g_string_append_c(out, e); break;
        }
    }
    if (k >= n)
        return false;
    *i = k + 1;
    return true;
}

tok_string *tok_json_strings(const char *path, const char *key, size_t *count)
{
    gchar *data;
    gsize n;
    *count = 0;
    if (!g_file_get_contents(path, &data, &n, NULL))
        return NULL;
    tok_string *list = NULL;
    GString *str = g_string_new(NULL);
    for (size_t i = 0; i < n;) {
        if (data[i] != '"') {
            i++;
            continue;
        }
        if (!parse_string(data, n, &i, str))
            break;
        size_t j = i;
        while (j < n && (data[j] == ' ' || data[j] == '\n' || data[j] == '\t' || data[j] == '\r'))
            j++;
        if (j >= n || data[j] != ':' || strlen(key) != str->len || strcmp(str->str, key) != 0)
            continue;
        /* A value of the key: a string, or null (kept as s == NULL). */
        j++;
        while (j < n && (data[j] == ' ' || data[j] == '\n' || data[j] == '\t' || data[j] == '\r'))
            j++;
        tok_string item = { NULL, 0 };
        if (j < n && data[j] == '"') {
            i = j;
            if (!parse_string(data, n, &i, str))
                break;
            item.s = malloc(str->len + 1);
            memcpy(item.s, str->str, str->len + 1);
            item.len = str->len;
        } else if (j + 4 <= n && memcmp(data + j, "null", 4) == 0) {
            i = j + 4;
        } else {
            continue; /* not a string value: not ours */
        }
        list = realloc(list, (*count + 1) * sizeof *list);
        list[(*count)++] = item;
    }
    g_string_free(str, TRUE);
    g_free(data);
    return list;
}

void tok_json_strings_free(tok_string *list, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(list[i].s);
    free(list);
}

int32_t *tok_json_ids(JsonArray *a, size_t *n)
{
    *n = json_array_get_length(a);
    int32_t *ids = malloc((*n ? *n : 1) * sizeof *ids);
    for (size_t i = 0; ids && i < *n; i++)
        ids[i] = (int32_t)json_array_get_int_element(a, (guint)i);
    return ids;
}

const char *tok_preview(const char *s, size_t len, char *out, size_t size)
{
    size_t o = 0;
    for (size_t i = 0; i < len && o + 8 < size; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '\n')
            o += (size_t)snprintf(out + o, size - o, "\\n");
        else if (c < 0x20 || c == 0x7F || c == '#' || c == '\\')
            o += (size_t)snprintf(out + o, size - o, "\\x%02X", c);
        else
            out[o++] = (char)c;
    }
    /* Never cut a UTF-8 sequence in half. */
    while (o > 0 && ((unsigned char)out[o - 1] & 0xC0) == 0x80 && o < size) {
        size_t k = o - 1;
        while (k > 0 && ((unsigned char)out[k] & 0xC0) == 0x80)
            k--;
        unsigned char lead = (unsigned char)out[k];
        size_t need = lead >= 0xF0 ? 4 : lead >= 0xE0 ? 3 : lead >= 0xC0 ? 2 : 1;
        if (o - k >= need)
            break;
        o = k;
    }
    out[o] = '\0';
    return out;
}

bool tok_ids_equal(const int32_t *a, size_t na, const int32_t *b, size_t nb)
{
    return na == nb && (na == 0 || memcmp(a, b, na * sizeof *a) == 0);
}

void tok_diag_ids(const char *label, const int32_t *ids, size_t n)
{
    char line[2048];
    size_t o = 0;
    for (size_t i = 0; i < n && o + 16 < sizeof line; i++)
        o += (size_t)snprintf(line + o, sizeof line - o, "%s%d", i ? " " : "", ids[i]);
    line[o] = '\0';
    tap_diag("%s (%zu): %s", label, n, line);
}

int32_t *tok_encode(const alm_tokenizer *tok, const char *text, size_t len, bool add_special,
                    size_t *n)
{
    int32_t *ids = NULL;
    alm_error err = { 0 };
    if (alm_tokenizer_encode(tok, text, len, add_special, &ids, n, &err) < 0) {
        tap_diag("encode failed: %s", err.message);
        *n = 0;
        return NULL;
    }
    return ids;
}

char *tok_decode(const alm_tokenizer *tok, const int32_t *ids, size_t n, bool skip_special,
                 size_t *len)
{
    char *text = NULL;
    alm_error err = { 0 };
    if (alm_tokenizer_decode(tok, ids, n, skip_special, &text, len, &err) < 0) {
        tap_diag("decode failed: %s", err.message);
        return NULL;
    }
    return text;
}

char *tok_stream(const alm_tokenizer *tok, const int32_t *ids, size_t n, bool skip_special,
                 size_t *len)
{
    alm_detokenizer *d;
    if (alm_detokenizer_new(tok, skip_special, &d) < 0)
        return NULL;
    char *all = NULL;
    size_t total = 0;
    bool ok = true;
    for (size_t i = 0; i <= n && ok; i++) {
        char *piece = NULL;
        int r = i < n ? alm_detokenizer_push(d, ids[i], &piece) : alm_detokenizer_flush(d, &piece);
        if (r >= 0 && !piece) {
            tap_diag("push/flush left no string behind");
            r = -1;
        }
        if (r < 0) {
            ok = false;
        } else {
            char *p = realloc(all, total + (size_t)r + 1);
            if (!p) {
                ok = false;
            } else {
                all = p;
                memcpy(all + total, piece, (size_t)r);
                total += (size_t)r;
                all[total] = '\0';
            }
        }
        free(piece);
    }
    alm_detokenizer_free(d);
    if (!ok) {
        free(all);
        return NULL;
    }
    if (!all)
        all = calloc(1, 1);
    *len = total;
    return all;
}

char *tok_tmpdir(void)
{
    const char *base = getenv("TMPDIR");
    char tmpl[512];
    snprintf(tmpl, sizeof tmpl, "%s/alm-tok-XXXXXX", base && *base ? base : "/tmp");
    if (!mkdtemp(tmpl))
        return NULL;
    return strdup(tmpl);
}

void tok_rmtree(char *dir)
{
    if (!dir)
        return;
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d))) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
                continue;
            char *p = join(dir, e->d_name);
            if (p)
                unlink(p);
            free(p);
        }
        closedir(d);
    }
    rmdir(dir);
    free(dir);
}

bool tok_write_file(const char *dir, const char *name, const char *text)
{
    char *p = join(dir, name);
    if (!p)
        return false;
    FILE *f = fopen(p, "wb");
    free(p);
    if (!f)
        return false;
    size_t n = strlen(text);
    bool ok = fwrite(text, 1, n, f) == n;
    return fclose(f) == 0 && ok;
}
