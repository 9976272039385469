/* safetensors files written as MLX writes them: tensors by name in the
 * header and the data, "__metadata__" last, the header padded with spaces
 * to 8 bytes, no holes between tensors. */
#include "loader/safetensors_writer.h"

#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <json-glib/json-glib.h>

#include "core/cleanup.h"
#include "core/error.h"

static int compare_by_name(const void *a, const void *b)
{
    const tensor_out *x = *(const tensor_out *const *)a, *y = *(const tensor_out *const *)b;
    return strcmp(x->name, y->name);
}

/* The header JSON, unpadded; offsets[i] for the tensor at by_name[i]. */
static char *header_json(const tensor_out *const *by_name, const size_t *offsets, size_t n,
                         size_t *len)
{
    JsonBuilder *b = json_builder_new();
    json_builder_begin_object(b);
    for (size_t i = 0; i < n; i++) {
        const tensor_out *t = by_name[i];
        json_builder_set_member_name(b, t->name);
        json_builder_begin_object(b);
        json_builder_set_member_name(b, "dtype");
        json_builder_add_string_value(b, alm_dtype_name(t->dtype));
        json_builder_set_member_name(b, "shape");
        json_builder_begin_array(b);
        for (int d = 0; d < t->n_dims; d++)
            json_builder_add_int_value(b, t->shape[d]);
        json_builder_end_array(b);
        json_builder_set_member_name(b, "data_offsets");
        json_builder_begin_array(b);
        json_builder_add_int_value(b, (gint64)offsets[i]);
        json_builder_add_int_value(b, (gint64)(offsets[i] + t->n_bytes));
        json_builder_end_array(b);
        json_builder_end_object(b);
    }
    /* last, where MLX writes it */
    json_builder_set_member_name(b, "__metadata__");
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "format");
    json_builder_add_string_value(b, "mlx");
    json_builder_end_object(b);
    json_builder_end_object(b);
    JsonGenerator *gen = json_generator_new();
    JsonNode *root = json_builder_get_root(b);
    json_generator_set_root(gen, root);
    gsize glen = 0;
    char *text = json_generator_to_data(gen, &glen);
    json_node_unref(root);
    g_object_unref(gen);
    g_object_unref(b);
    *len = glen;
    return text;
}

static size_t padded(size_t len)
{
    return (len + 7) / 8 * 8;
}

/* The tensors in name order (the header's and the data's), and their
 * offsets. */
static int plan_offsets(const tensor_out *tensors, size_t n, const tensor_out ***by_name_out,
                        size_t **offsets_out)
{
    const tensor_out **by_name = malloc(sizeof *by_name * (n ? n : 1));
    size_t *offsets = malloc(sizeof *offsets * (n ? n : 1));
    if (!by_name || !offsets) {
        free(by_name);
        free(offsets);
        return -ENOMEM;
    }
    for (size_t i = 0; i < n; i++)
        by_name[i] = &tensors[i];
    qsort(by_name, n, sizeof *by_name, compare_by_name);
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        offsets[i] = at;
        at += by_name[i]->n_bytes;
    }
    *by_name_out = by_name;
    *offsets_out = offsets;
    return 0;
}

size_t safetensors_file_bytes(const tensor_out *tensors, size_t n)
{
    const tensor_out **by_name;
    size_t *offsets, len = 0, data = 0;
    if (plan_offsets(tensors, n, &by_name, &offsets) < 0)
        return 0;
    g_free(header_json(by_name, offsets, n, &len));
    for (size_t i = 0; i < n; i++)
        data += tensors[i].n_bytes;
    free(by_name);
    free(offsets);
    return 8 + padded(len) + data;
}

static int write_all(int fd, const void *buf, size_t len, const char *path, alm_error *err)
{
    const uint8_t *p = buf;
    while (len > 0) {
        ssize_t w = write(fd, p, len);
        if (w < 0 && errno == EINTR)
            continue;
        if (w < 0)
            return alm_error_set(err, -errno, "%s: cannot write: %s", path, strerror(errno));
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

int safetensors_write(const char *path, const tensor_out *tensors, size_t n, tensor_fill_fn fill,
                      void *ctx, alm_error *err)
{
    _cleanup_free_ const tensor_out **by_name = NULL;
    _cleanup_free_ size_t *offsets = NULL;
    if (plan_offsets(tensors, n, &by_name, &offsets) < 0)
        return alm_error_set(err, -ENOMEM, "%s: out of memory", path);
    for (size_t i = 1; i < n; i++)
        if (strcmp(by_name[i - 1]->name, by_name[i]->name) == 0)
            return alm_error_set(err, -EINVAL, "%s: tensor %s given twice", path, by_name[i]->name);

    size_t len = 0;
    char *json = header_json(by_name, offsets, n, &len);
    size_t header_len = padded(len);
    _cleanup_free_ char *header = malloc(8 + header_len);
    if (!json || !header) {
        g_free(json);
        return alm_error_set(err, -ENOMEM, "%s: out of memory", path);
    }
    uint64_t le_len = htole64((uint64_t)header_len);
    memcpy(header, &le_len, 8);
    memcpy(header + 8, json, len);
    memset(header + 8 + len, ' ', header_len - len);
    g_free(json);

    size_t largest = 0;
    for (size_t i = 0; i < n; i++)
        largest = tensors[i].n_bytes > largest ? tensors[i].n_bytes : largest;
    _cleanup_free_ void *buf = malloc(largest ? largest : 1);
    if (!buf)
        return alm_error_set(err, -ENOMEM, "%s: out of memory for a tensor of %zu bytes", path, largest);

    _cleanup_close_ int fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0)
        return alm_error_set(err, -errno, "%s: cannot create: %s", path, strerror(errno));
    int r = write_all(fd, header, 8 + header_len, path, err);
    for (size_t i = 0; r == 0 && i < n; i++) {
        r = fill(ctx, by_name[i], buf, err);
        if (r == 0)
            r = write_all(fd, buf, by_name[i]->n_bytes, path, err);
    }
    int last = fd;
    fd = -1;
    if (close(last) < 0 && r == 0)
        r = alm_error_set(err, -errno, "%s: cannot write: %s", path, strerror(errno));
    return r;
}
