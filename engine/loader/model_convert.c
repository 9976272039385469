/* Quantizing a model folder into the MLX layout: plan the output tensors
 * from the source's, split them into shards, write each shard (quantizing a
 * matrix when its turn comes, rows spread over the threads), then the
 * index, config.json and the side files; all under a temporary folder that
 * becomes DST at the end. */
#include "loader/model_convert.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <glib.h>
#include <json-glib/json-glib.h>

#include "core/cleanup.h"
#include "core/error.h"
#include "core/threadpool.h"
#include "loader/mlx_quantize.h"
#include "loader/model_config.h"
#include "loader/safetensors.h"
#include "loader/safetensors_writer.h"

#define DEFAULT_SHARD_BYTES ((size_t)5 << 30)
#define INDEX_NAME "model.safetensors.index.json"

/* What an output tensor is made of. */
typedef enum out_kind { OUT_COPY, OUT_PACKED, OUT_SCALES, OUT_BIASES } out_kind;

typedef struct converter {
    const convert_params *p;
    tensor_store *store;
    alm_pool *pool;
    tensor_out *outs;
    out_kind *kinds;       /* per output */
    const stored_tensor **sources;
    size_t n_outs;
    convert_report *report;
} converter;

static bool has_suffix(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

static void converter_clear(converter *c)
{
    for (size_t i = 0; i < c->n_outs; i++)
        free(c->outs[i].name);
    free(c->outs);
    free(c->kinds);
    free(c->sources);
    tensor_store_free(c->store);
    alm_pool_free(c->pool);
}

static int add_out(converter *c, const stored_tensor *src, const char *name, alm_dtype dtype,
                   int n_dims, const int64_t *shape, out_kind kind)
{
    size_t i = c->n_outs++;
    tensor_out *t = &c->outs[i];
    memset(t, 0, sizeof *t);
    t->name = strdup(name);
    if (!t->name)
        return -ENOMEM;
    t->dtype = dtype;
    t->n_dims = n_dims;
    t->n_bytes = alm_dtype_size(dtype);
    for (int d = 0; d < n_dims; d++) {
        t->shape[d] = shape[d];
        t->n_bytes *= (size_t)shape[d];
    }
    t->source = i;
    c->kinds[i] = kind;
    c->sources[i] = src;
    return 0;
}

/* The output tensors: each matrix becomes NAME.weight (U32), NAME.scales
 * and NAME.biases; everything else is copied. */
static int plan_outputs(converter *c, const char *src_dir, alm_error *err)
{
    size_t n = tensor_store_count(c->store);
    c->outs = calloc(3 * n + 1, sizeof *c->outs);
    c->kinds = calloc(3 * n + 1, sizeof *c->kinds);
    c->sources = calloc(3 * n + 1, sizeof *c->sources);
    if (!c->outs || !c->kinds || !c->sources)
        return alm_error_set(err, -ENOMEM, "out of memory");
    const int bits = c->p->bits, g = c->p->group_size;
    for (size_t i = 0; i < n; i++) {
        const stored_tensor *t = tensor_store_at(c->store, i);
        if (t->dtype == ALM_DTYPE_U32 || has_suffix(t->name, ".scales"))
            return alm_error_set(err, -EINVAL,
                                 "%s: tensor %s (%s) is already quantized: convert needs F32, F16 or BF16 weights",
                                 t->file, t->name, alm_dtype_name(t->dtype));
        int r;
        if (!has_suffix(t->name, ".weight") || t->n_dims < 2) {
            r = add_out(c, t, t->name, t->dtype, t->n_dims, t->shape, OUT_COPY);
            c->report->tensors_copied++;
        } else {
            int64_t cols = t->shape[t->n_dims - 1];
            if (cols % g != 0)
                return alm_error_set(err, -EINVAL,
                                     "%s: tensor %s has %lld columns, not a multiple of the group size %d",
                                     t->file, t->name, (long long)cols, g);
            char module[512];
            snprintf(module, sizeof module, "%.*s", (int)(strlen(t->name) - strlen(".weight")), t->name);
            char name[560];
            int64_t shape[TENSOR_MAX_DIMS];
            memcpy(shape, t->shape, sizeof shape);
            shape[t->n_dims - 1] = cols * bits / 32;
            snprintf(name, sizeof name, "%s.weight", module);
            r = add_out(c, t, name, ALM_DTYPE_U32, t->n_dims, shape, OUT_PACKED);
            shape[t->n_dims - 1] = cols / g;
            snprintf(name, sizeof name, "%s.scales", module);
            r |= add_out(c, t, name, t->dtype, t->n_dims, shape, OUT_SCALES);
            snprintf(name, sizeof name, "%s.biases", module);
            r |= add_out(c, t, name, t->dtype, t->n_dims, shape, OUT_BIASES);
            c->report->tensors_quantized++;
        }
        if (r)
            return alm_error_set(err, -ENOMEM, "out of memory");
    }
    if (n == 0)
        return alm_error_set(err, -EINVAL, "%s: no tensors to convert", src_dir);
    return 0;
}

/* ------------------------------------------------------------ filling */

typedef struct quantize_job {
    const stored_tensor *src;
    int cols, bits, group_size;
    size_t rows;
    uint32_t *q;
    void *scales, *biases;
    bool finite[256];   /* per thread */
} quantize_job;

static void quantize_thread(void *ctx, int index, int n_threads)
{
    quantize_job *j = ctx;
    size_t per = (j->rows + (size_t)n_threads - 1) / (size_t)n_threads;
    size_t r0 = (size_t)index * per, r1 = r0 + per < j->rows ? r0 + per : j->rows;
    j->finite[index] = r0 >= r1 || mlx_quantize_rows(j->src->data, j->src->dtype, j->cols, j->bits,
                                                     j->group_size, r0, r1, j->q, j->scales, j->biases);
}

static int fill_output(void *ctx, const tensor_out *t, void *buf, alm_error *err)
{
    converter *c = ctx;
    const stored_tensor *src = c->sources[t->source];
    out_kind kind = c->kinds[t->source];
    if (kind == OUT_COPY) {
        memcpy(buf, src->data, t->n_bytes);
        return 0;
    }
    int cols = (int)src->shape[src->n_dims - 1];
    quantize_job *j = calloc(1, sizeof *j);
    if (!j)
        return alm_error_set(err, -ENOMEM, "out of memory");
    *j = (quantize_job){
        .src = src, .cols = cols, .bits = c->p->bits, .group_size = c->p->group_size,
        .rows = src->n_bytes / alm_dtype_size(src->dtype) / (size_t)cols,
        .q = kind == OUT_PACKED ? buf : NULL,
        .scales = kind == OUT_SCALES ? buf : NULL,
        .biases = kind == OUT_BIASES ? buf : NULL,
    };
    alm_pool_run(c->pool, quantize_thread, j);
    bool finite = true;
    for (int i = 0; i < alm_pool_size(c->pool) && i < 256; i++)
        finite = finite && j->finite[i];
    free(j);
    if (!finite)
        return alm_error_set(err, -EINVAL, "%s: tensor %s holds a value that is not finite",
                             src->file, src->name);
    return 0;
}

/* ------------------------------------------------------------ files */

static int write_text(const char *path, const char *text, size_t len, alm_error *err)
{
    GError *gerr = NULL;
    if (!g_file_set_contents(path, text, (gssize)len, &gerr)) {
        int r = alm_error_set(err, -EIO, "%s: %s", path, gerr->message);
        g_error_free(gerr);
        return r;
    }
    return 0;
}

static int copy_file(const char *from, const char *to, alm_error *err)
{
    gchar *data = NULL;
    gsize len = 0;
    GError *gerr = NULL;
    if (!g_file_get_contents(from, &data, &len, &gerr)) {
        int r = alm_error_set(err, -EIO, "%s: %s", from, gerr->message);
        g_error_free(gerr);
        return r;
    }
    int r = write_text(to, data, len, err);
    g_free(data);
    return r;
}

/* The files besides the weights that a model folder needs: tokenizer,
 * generation settings, chat template. */
static bool is_side_file(const char *name)
{
    static const char *const exact[] = {
        "special_tokens_map.json", "added_tokens.json", "generation_config.json",
        "vocab.json", "merges.txt",
    };
    if (name[0] == '.')
        return false;
    for (size_t i = 0; i < sizeof exact / sizeof exact[0]; i++)
        if (strcmp(name, exact[i]) == 0)
            return true;
    return strncmp(name, "tokenizer", 9) == 0 || strncmp(name, "chat_template", 13) == 0
           || has_suffix(name, ".tiktoken");
}

static int copy_side_files(const char *src, const char *dst, alm_error *err)
{
    DIR *d = opendir(src);
    if (!d)
        return alm_error_set(err, -errno, "%s: cannot open folder: %s", src, strerror(errno));
    int r = 0;
    struct dirent *e;
    while (r == 0 && (e = readdir(d)) != NULL) {
        if (!is_side_file(e->d_name))
            continue;
        char *from = g_build_filename(src, e->d_name, NULL);
        char *to = g_build_filename(dst, e->d_name, NULL);
        struct stat st;
        if (stat(from, &st) == 0 && S_ISREG(st.st_mode))
            r = copy_file(from, to, err);
        g_free(from);
        g_free(to);
    }
    closedir(d);
    return r;
}

/* config.json with the quantization entries added before its closing
 * brace, the text before it as it was (key order, number spellings). */
static int write_config(const char *src, const char *dst, const convert_params *p, alm_error *err)
{
    char *path = g_build_filename(src, "config.json", NULL);
    gchar *text = NULL;
    gsize len = 0;
    GError *gerr = NULL;
    int r = 0;
    if (!g_file_get_contents(path, &text, &len, &gerr)) {
        r = alm_error_set(err, -ENOENT, "%s: %s", path, gerr->message);
        g_error_free(gerr);
        g_free(path);
        return r;
    }
    model_config cfg;
    r = model_config_parse(text, len, path, &cfg, err);
    if (r == 0) {
        quant_spec had = cfg.quant;
        model_config_clear(&cfg);
        if (had.bits)
            r = alm_error_set(err, -EINVAL, "%s: the model is already quantized (%d bits, group %d)",
                              path, had.bits, had.group_size);
    }
    const char *close = r == 0 ? strrchr(text, '}') : NULL;
    if (r == 0 && !close)
        r = alm_error_set(err, -EINVAL, "%s: not a JSON object", path);
    if (r == 0) {
        /* after the last member (or the opening brace of an empty object) */
        const char *end = close;
        while (end > text && g_ascii_isspace(end[-1]))
            end--;
        bool empty = end > text && end[-1] == '{';
        GString *out = g_string_new_len(text, end - text);
        g_string_append_printf(out,
                               "%s\n  \"quantization\": {\n    \"group_size\": %d,\n    \"bits\": %d\n  },\n"
                               "  \"quantization_config\": {\n    \"group_size\": %d,\n    \"bits\": %d\n  }\n",
                               empty ? "" : ",", p->group_size, p->bits, p->group_size, p->bits);
        /* ends at the brace, as Python's json.dump leaves it */
        g_string_append_c(out, '}');
        char *to = g_build_filename(dst, "config.json", NULL);
        /* what was written must read back as the quantized model */
        r = model_config_parse(out->str, out->len, to, &cfg, err);
        if (r == 0) {
            model_config_clear(&cfg);
            r = write_text(to, out->str, out->len, err);
        }
        g_free(to);
        g_string_free(out, TRUE);
    }
    g_free(text);
    g_free(path);
    return r;
}

static int compare_outs_by_name(const void *a, const void *b)
{
    return strcmp(((const tensor_out *)a)->name, ((const tensor_out *)b)->name);
}

/* Shards of at most max bytes of tensors (a larger tensor alone), in name
 * order; then the index naming each tensor's shard. */
static int write_shards(converter *c, const char *dst, alm_error *err)
{
    qsort(c->outs, c->n_outs, sizeof *c->outs, compare_outs_by_name);
    size_t max = c->p->max_shard_bytes ? c->p->max_shard_bytes : DEFAULT_SHARD_BYTES;
    size_t *first = malloc(sizeof *first * (c->n_outs + 1));
    if (!first)
        return alm_error_set(err, -ENOMEM, "out of memory");
    int n_shards = 0;
    size_t in_shard = 0, total = 0;
    for (size_t i = 0; i < c->n_outs; i++) {
        if (i == 0 || (in_shard > 0 && in_shard + c->outs[i].n_bytes > max)) {
            first[n_shards++] = i;
            in_shard = 0;
        }
        in_shard += c->outs[i].n_bytes;
        total += c->outs[i].n_bytes;
    }
    first[n_shards] = c->n_outs;

    JsonBuilder *b = json_builder_new();
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "metadata");
    json_builder_begin_object(b);
    json_builder_set_member_name(b, "total_size");
    json_builder_add_int_value(b, (gint64)total);
    json_builder_end_object(b);
    json_builder_set_member_name(b, "weight_map");
    json_builder_begin_object(b);
    int r = 0;
    for (int s = 0; r == 0 && s < n_shards; s++) {
        char file[64];
        if (n_shards == 1)
            snprintf(file, sizeof file, "model.safetensors");
        else
            snprintf(file, sizeof file, "model-%05d-of-%05d.safetensors", s + 1, n_shards);
        char *path = g_build_filename(dst, file, NULL);
        size_t n = first[s + 1] - first[s];
        r = safetensors_write(path, c->outs + first[s], n, fill_output, c, err);
        c->report->bytes_out += safetensors_file_bytes(c->outs + first[s], n);
        g_free(path);
        for (size_t i = first[s]; i < first[s + 1]; i++) {
            json_builder_set_member_name(b, c->outs[i].name);
            json_builder_add_string_value(b, file);
        }
    }
    json_builder_end_object(b);
    json_builder_end_object(b);
    c->report->shards = n_shards;
    free(first);
    if (r == 0) {
        JsonGenerator *gen = json_generator_new();
        JsonNode *root = json_builder_get_root(b);
        json_generator_set_root(gen, root);
        json_generator_set_pretty(gen, TRUE);
        json_generator_set_indent(gen, 2);
        gsize len = 0;
        char *text = json_generator_to_data(gen, &len);
        char *path = g_build_filename(dst, INDEX_NAME, NULL);
        r = write_text(path, text, len, err);
        g_free(path);
        g_free(text);
        json_node_unref(root);
        g_object_unref(gen);
    }
    g_object_unref(b);
    return r;
}

/* ------------------------------------------------------------ entry */

static int check_destination(const char *dst, bool *exists, alm_error *err)
{
    struct stat st;
    *exists = stat(dst, &st) == 0;
    if (!*exists)
        return errno == ENOENT ? 0 : alm_error_set(err, -errno, "%s: %s", dst, strerror(errno));
    if (!S_ISDIR(st.st_mode))
        return alm_error_set(err, -EEXIST, "%s exists and is not a folder", dst);
    DIR *d = opendir(dst);
    if (!d)
        return alm_error_set(err, -errno, "%s: cannot open folder: %s", dst, strerror(errno));
    struct dirent *e;
    bool empty = true;
    while (empty && (e = readdir(d)) != NULL)
        empty = strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0;
    closedir(d);
    if (!empty)
        return alm_error_set(err, -EEXIST, "%s exists and is not empty: convert writes a new folder", dst);
    return 0;
}

/* Removes the temporary folder and what was written into it. */
static void remove_partial(const char *dir)
{
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
                continue;
            char *path = g_build_filename(dir, e->d_name, NULL);
            unlink(path);
            g_free(path);
        }
        closedir(d);
    }
    rmdir(dir);
}

int model_convert(const char *src, const char *dst, const convert_params *p,
                  convert_report *report, alm_error *err)
{
    memset(report, 0, sizeof *report);
    if (p->bits != 2 && p->bits != 4 && p->bits != 8)
        return alm_error_set(err, -EINVAL, "%d bits: alm runs 2, 4 or 8", p->bits);
    if (p->group_size != 32 && p->group_size != 64 && p->group_size != 128)
        return alm_error_set(err, -EINVAL, "group size %d: alm runs 32, 64 or 128", p->group_size);
    bool exists;
    int r = check_destination(dst, &exists, err);
    if (r < 0)
        return r;

    _cleanup_(converter_clear) converter c = { .p = p, .report = report };
    r = tensor_store_open_dir(src, &c.store, err);
    if (r < 0)
        return r;
    report->bytes_in = tensor_store_mapped_bytes(c.store);
    r = plan_outputs(&c, src, err);
    if (r < 0)
        return r;
    if (alm_pool_new(p->n_threads, &c.pool) < 0)
        return alm_error_set(err, -ENOMEM, "cannot start threads");

    char *tmp = g_strdup_printf("%s.partial-XXXXXX", dst);
    if (!g_mkdtemp_full(tmp, 0755)) {
        r = alm_error_set(err, -errno, "%s: cannot create a folder next to it: %s", dst, strerror(errno));
        g_free(tmp);
        return r;
    }
    r = write_config(src, tmp, p, err);
    if (r == 0)
        r = write_shards(&c, tmp, err);
    if (r == 0)
        r = copy_side_files(src, tmp, err);
    if (r == 0 && exists && rmdir(dst) < 0)
        r = alm_error_set(err, -errno, "%s: %s", dst, strerror(errno));
    if (r == 0 && rename(tmp, dst) < 0)
        r = alm_error_set(err, -errno, "%s: cannot rename %s to it: %s", dst, tmp, strerror(errno));
    if (r < 0)
        remove_partial(tmp);
    g_free(tmp);
    return r;
}
