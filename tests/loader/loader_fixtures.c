#include "loader_fixtures.h"

#include <dirent.h>
#include <endian.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <glib.h>

char *fixture_tmpdir(void)
{
    gchar *dir = g_dir_make_tmp("alm-loader-XXXXXX", NULL);
    if (!dir)
        return NULL;
    char *copy = strdup(dir);
    g_free(dir);
    return copy;
}

static void remove_tree(const char *dir, int depth)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        char *p = fixture_path(dir, e->d_name);
        struct stat st;
        if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode) && depth > 0)
            remove_tree(p, depth - 1);
        else
            unlink(p);
        free(p);
    }
    closedir(d);
    rmdir(dir);
}

void fixture_rmtree(const char *dir)
{
    if (dir)
        remove_tree(dir, 1);
}

char *fixture_path(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    if (p)
        snprintf(p, n, "%s/%s", dir, name);
    return p;
}

bool fixture_write(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return false;
    bool ok = len == 0 || fwrite(data, 1, len, f) == len;
    return fclose(f) == 0 && ok;
}

char *fixture_read(const char *path, size_t *len)
{
    gchar *text;
    gsize n;
    if (!g_file_get_contents(path, &text, &n, NULL))
        return NULL;
    char *copy = malloc(n + 1);
    if (copy) {
        memcpy(copy, text, n);
        copy[n] = '\0';
        if (len)
            *len = n;
    }
    g_free(text);
    return copy;
}

bool st_write_raw(const char *path, uint64_t declared_len, const char *header, size_t header_len,
                  const void *data, size_t data_len)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return false;
    uint64_t le = htole64(declared_len);
    bool ok = fwrite(&le, 1, 8, f) == 8
              && (header_len == 0 || fwrite(header, 1, header_len, f) == header_len)
              && (data_len == 0 || fwrite(data, 1, data_len, f) == data_len);
    return fclose(f) == 0 && ok;
}

bool st_write(const char *path, const st_tensor *tensors, size_t n, const char *metadata)
{
    GString *h = g_string_new("{");
    if (metadata)
        g_string_append_printf(h, "\"__metadata__\":%s", metadata);
    size_t offset = 0;
    for (size_t i = 0; i < n; i++) {
        const st_tensor *t = &tensors[i];
        g_string_append_printf(h, "%s\"%s\":{\"dtype\":\"%s\",\"shape\":[",
                               (metadata || i) ? "," : "", t->name, t->dtype);
        for (int d = 0; d < t->n_dims; d++)
            g_string_append_printf(h, "%s%lld", d ? "," : "", (long long)t->shape[d]);
        g_string_append_printf(h, "],\"data_offsets\":[%zu,%zu]}", offset, offset + t->n_bytes);
        offset += t->n_bytes;
    }
    g_string_append_c(h, '}');
    while (h->len % 8)
        g_string_append_c(h, ' ');

    uint8_t *data = malloc(offset ? offset : 1);
    bool ok = data != NULL;
    size_t at = 0;
    for (size_t i = 0; ok && i < n; i++) {
        if (tensors[i].n_bytes)
            memcpy(data + at, tensors[i].data, tensors[i].n_bytes);
        at += tensors[i].n_bytes;
    }
    ok = ok && st_write_raw(path, h->len, h->str, h->len, data, offset);
    free(data);
    g_string_free(h, TRUE);
    return ok;
}

st_tensor *st_from_store(const tensor_store *s, size_t *n)
{
    *n = tensor_store_count(s);
    st_tensor *t = calloc(*n ? *n : 1, sizeof *t);
    for (size_t i = 0; t && i < *n; i++) {
        const stored_tensor *x = tensor_store_at(s, i);
        t[i] = (st_tensor){ .name = x->name, .dtype = alm_dtype_name(x->dtype), .n_dims = x->n_dims,
                            .data = x->data, .n_bytes = x->n_bytes };
        memcpy(t[i].shape, x->shape, sizeof t[i].shape);
    }
    return t;
}

bool st_remove(st_tensor *t, size_t *n, const char *name)
{
    for (size_t i = 0; i < *n; i++) {
        if (strcmp(t[i].name, name) == 0) {
            memmove(&t[i], &t[i + 1], (*n - i - 1) * sizeof *t);
            (*n)--;
            return true;
        }
    }
    return false;
}

st_tensor *st_find(st_tensor *t, size_t n, const char *name)
{
    for (size_t i = 0; i < n; i++)
        if (strcmp(t[i].name, name) == 0)
            return &t[i];
    return NULL;
}

bool fixture_config(const char *dir, const char *src_config, const char *extra)
{
    size_t len;
    char *text = fixture_read(src_config, &len);
    if (!text)
        return false;
    char *end = strrchr(text, '}');
    if (!end) {
        free(text);
        return false;
    }
    *end = '\0';
    GString *out = g_string_new(text);
    if (extra)
        g_string_append_printf(out, ",\n  %s\n", extra);
    g_string_append(out, "}\n");
    char *path = fixture_path(dir, "config.json");
    bool ok = fixture_write(path, out->str, out->len);
    free(path);
    g_string_free(out, TRUE);
    free(text);
    return ok;
}

bool message_has(const char *message, const char *needle)
{
    if (strstr(message, needle))
        return true;
    printf("# expected \"%s\" in: %s\n", needle, message);
    return false;
}
