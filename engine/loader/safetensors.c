/* safetensors files: mapped read-only, every header entry validated before
 * a tensor is handed out. A model folder's shards become one store with one
 * name index. */
#include "loader/safetensors.h"

#include <dirent.h>
#include <endian.h>
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <glib.h>

#include "core/cleanup.h"
#include "core/error.h"
#include "loader/json_document.h"

/* Headers of real models are a few hundred KiB at most; the bound keeps a
 * hostile length from making us parse gigabytes. */
#define HEADER_MAX_BYTES ((uint64_t)100 << 20)
/* Root object, tensor entry, shape / data_offsets list: depth 3. */
#define HEADER_MAX_DEPTH 4
#define INDEX_MAX_BYTES ((size_t)64 << 20)
#define INDEX_NAME "model.safetensors.index.json"
/* Tensors whose data is not aligned to their element size are copied here
 * so that kernels may read them through typed pointers. */
#define COPY_ALIGNMENT 64

typedef struct mapped_file {
    char *path;
    void *base;
    size_t size;
    bool anonymous;    /* the memory of tensor_store_new_memory, not a file */
} mapped_file;

struct tensor_store {
    char *source;              /* what was opened: a file or a folder */
    mapped_file *files;
    size_t n_files;
    stored_tensor *tensors;
    size_t n_tensors;
    size_t cap_tensors;
    GHashTable *by_name;       /* name -> stored_tensor *, built last */
    GPtrArray *aligned_copies; /* owned copies of misaligned tensors */
    size_t mapped_bytes;
};

/* Spellings of dtypes that exist in safetensors but that alm cannot use:
 * named in the error so that the reader knows the file is not corrupt. */
static const char *const known_unsupported_dtypes[] = {
    "F64", "I8", "U8", "I16", "U16", "I32", "I64", "U64", "BOOL",
    "F8_E4M3", "F8_E5M2", "F8_E8M0", "F6_E2M3", "F6_E3M2", "F4", "C64",
};

static bool is_known_unsupported_dtype(const char *name)
{
    for (size_t i = 0; i < G_N_ELEMENTS(known_unsupported_dtypes); i++)
        if (strcmp(name, known_unsupported_dtypes[i]) == 0)
            return true;
    return false;
}

static tensor_store *store_new(const char *source)
{
    tensor_store *s = calloc(1, sizeof *s);
    if (!s)
        return NULL;
    s->source = strdup(source);
    s->aligned_copies = g_ptr_array_new_with_free_func(free);
    if (!s->source) {
        tensor_store_free(s);
        return NULL;
    }
    return s;
}

void tensor_store_free(tensor_store *s)
{
    if (!s)
        return;
    if (s->by_name)
        g_hash_table_unref(s->by_name);
    for (size_t i = 0; i < s->n_tensors; i++)
        free((char *)s->tensors[i].name);
    free(s->tensors);
    for (size_t i = 0; i < s->n_files; i++) {
        if (s->files[i].base)
            munmap(s->files[i].base, s->files[i].size);
        free(s->files[i].path);
    }
    free(s->files);
    if (s->aligned_copies)
        g_ptr_array_unref(s->aligned_copies);
    free(s->source);
    free(s);
}

static stored_tensor *append_tensor(tensor_store *s)
{
    if (s->n_tensors == s->cap_tensors) {
        size_t cap = s->cap_tensors ? s->cap_tensors * 2 : 64;
        stored_tensor *t = realloc(s->tensors, cap * sizeof *t);
        if (!t)
            return NULL;
        s->tensors = t;
        s->cap_tensors = cap;
    }
    stored_tensor *t = &s->tensors[s->n_tensors++];
    memset(t, 0, sizeof *t);
    return t;
}

/* Maps path read-only and records it in the store (so that it is unmapped
 * with the store whatever happens next). */
static int map_file(tensor_store *s, const char *path, mapped_file **out, alm_error *err)
{
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return alm_error_set(err, -errno, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) < 0)
        return alm_error_set(err, -errno, "%s: cannot stat: %s", path, strerror(errno));
    if (!S_ISREG(st.st_mode))
        return alm_error_set(err, -EINVAL, "%s: not a regular file", path);
    if (st.st_size < 8)
        return alm_error_set(err, -EINVAL,
                             "%s: file too short (%lld bytes): a safetensors file starts with an 8-byte header length",
                             path, (long long)st.st_size);
    if ((uint64_t)st.st_size > SIZE_MAX)
        return alm_error_set(err, -EFBIG, "%s: file too large", path);

    mapped_file *files = realloc(s->files, (s->n_files + 1) * sizeof *files);
    if (!files)
        return alm_error_set(err, -ENOMEM, "%s: out of memory", path);
    s->files = files;
    mapped_file *f = &files[s->n_files];
    memset(f, 0, sizeof *f);
    f->path = strdup(path);
    if (!f->path)
        return alm_error_set(err, -ENOMEM, "%s: out of memory", path);
    s->n_files++;

    void *base = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    if (base == MAP_FAILED)
        return alm_error_set(err, -errno, "%s: cannot map: %s", path, strerror(errno));
    f->base = base;
    f->size = (size_t)st.st_size;
    s->mapped_bytes += f->size;
    *out = f;
    return 0;
}

/* A JSON integer >= 0 (floats such as 2.0 are refused: writers emit
 * integers). */
static bool node_get_count(JsonNode *node, uint64_t *out)
{
    if (!node || !JSON_NODE_HOLDS_VALUE(node) || json_node_get_value_type(node) != G_TYPE_INT64)
        return false;
    gint64 v = json_node_get_int(node);
    if (v < 0)
        return false;
    *out = (uint64_t)v;
    return true;
}

typedef struct byte_range {
    uint64_t begin, end;
    size_t tensor;   /* index into the store */
} byte_range;

static int compare_ranges(const void *a, const void *b)
{
    const byte_range *x = a, *y = b;
    if (x->begin != y->begin)
        return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

static int check_metadata(JsonNode *node, const char *path, alm_error *err)
{
    if (JSON_NODE_HOLDS_NULL(node))
        return 0;
    if (!JSON_NODE_HOLDS_OBJECT(node))
        return alm_error_set(err, -EINVAL, "%s: __metadata__ is not an object", path);
    JsonObjectIter it;
    const char *key;
    JsonNode *value;
    json_object_iter_init(&it, json_node_get_object(node));
    while (json_object_iter_next(&it, &key, &value)) {
        if (!JSON_NODE_HOLDS_VALUE(value) || json_node_get_value_type(value) != G_TYPE_STRING)
            return alm_error_set(err, -EINVAL,
                                 "%s: __metadata__ entry \"%s\" is not a string", path, key);
    }
    return 0;
}

/* Validates one header entry and fills t (name excepted). */
static int parse_entry(const mapped_file *f, const char *name, JsonNode *node,
                       const uint8_t *data, uint64_t data_size, stored_tensor *t,
                       byte_range *range, alm_error *err)
{
    const char *path = f->path;
    if (!JSON_NODE_HOLDS_OBJECT(node))
        return alm_error_set(err, -EINVAL, "%s: tensor %s: entry is not an object", path, name);
    JsonObject *o = json_node_get_object(node);

    JsonNode *dtype_node = json_object_get_member(o, "dtype");
    if (!dtype_node || !JSON_NODE_HOLDS_VALUE(dtype_node)
        || json_node_get_value_type(dtype_node) != G_TYPE_STRING)
        return alm_error_set(err, -EINVAL, "%s: tensor %s: \"dtype\" missing or not a string",
                             path, name);
    const char *dtype_name = json_node_get_string(dtype_node);
    if (alm_dtype_parse(dtype_name, &t->dtype) < 0)
        return alm_error_set(err, -ENOTSUP, "%s: tensor %s: %s dtype \"%s\" (alm reads F32, F16, BF16 and U32)",
                             path, name,
                             is_known_unsupported_dtype(dtype_name) ? "unsupported" : "unsupported, unknown",
                             dtype_name);

    JsonNode *shape_node = json_object_get_member(o, "shape");
    if (!shape_node || !JSON_NODE_HOLDS_ARRAY(shape_node))
        return alm_error_set(err, -EINVAL, "%s: tensor %s: \"shape\" missing or not a list", path, name);
    JsonArray *shape = json_node_get_array(shape_node);
    guint n_dims = json_array_get_length(shape);
    if (n_dims > TENSOR_MAX_DIMS)
        return alm_error_set(err, -EINVAL, "%s: tensor %s: %u dimensions, at most %d supported",
                             path, name, n_dims, TENSOR_MAX_DIMS);
    uint64_t n_elements = 1;
    for (guint i = 0; i < n_dims; i++) {
        uint64_t d;
        if (!node_get_count(json_array_get_element(shape, i), &d) || d > INT64_MAX)
            return alm_error_set(err, -EINVAL,
                                 "%s: tensor %s: shape entry %u is not a non-negative integer",
                                 path, name, i);
        t->shape[i] = (int64_t)d;
        if (__builtin_mul_overflow(n_elements, d, &n_elements))
            return alm_error_set(err, -EINVAL, "%s: tensor %s: shape overflows", path, name);
    }
    t->n_dims = (int)n_dims;

    JsonNode *offsets_node = json_object_get_member(o, "data_offsets");
    if (!offsets_node || !JSON_NODE_HOLDS_ARRAY(offsets_node)
        || json_array_get_length(json_node_get_array(offsets_node)) != 2)
        return alm_error_set(err, -EINVAL, "%s: tensor %s: \"data_offsets\" missing or not [begin, end]",
                             path, name);
    JsonArray *offsets = json_node_get_array(offsets_node);
    uint64_t begin, end;
    if (!node_get_count(json_array_get_element(offsets, 0), &begin)
        || !node_get_count(json_array_get_element(offsets, 1), &end))
        return alm_error_set(err, -EINVAL,
                             "%s: tensor %s: data_offsets are not non-negative integers", path, name);
    if (begin > end)
        return alm_error_set(err, -EINVAL, "%s: tensor %s: data_offsets [%llu, %llu] end before they begin",
                             path, name, (unsigned long long)begin, (unsigned long long)end);
    if (end > data_size)
        return alm_error_set(err, -EINVAL,
                             "%s: tensor %s: data_offsets [%llu, %llu] out of range: the data area holds %llu bytes",
                             path, name, (unsigned long long)begin, (unsigned long long)end,
                             (unsigned long long)data_size);

    uint64_t n_bytes;
    size_t element_size = alm_dtype_size(t->dtype);
    if (__builtin_mul_overflow(n_elements, (uint64_t)element_size, &n_bytes) || n_bytes != end - begin)
        return alm_error_set(err, -EINVAL,
                             "%s: tensor %s: %s shape of %llu elements needs %llu bytes, data_offsets [%llu, %llu] hold %llu",
                             path, name, dtype_name, (unsigned long long)n_elements,
                             (unsigned long long)n_elements * element_size,
                             (unsigned long long)begin, (unsigned long long)end,
                             (unsigned long long)(end - begin));

    t->file = f->path;
    t->data = data + begin;
    t->n_bytes = (size_t)n_bytes;
    range->begin = begin;
    range->end = end;
    return 0;
}

/* Kernels read tensors through typed pointers: a tensor whose bytes do not
 * sit at a multiple of its element size (legal in the format, never written
 * by the usual tools) gets an aligned private copy. */
static int align_tensor(tensor_store *s, stored_tensor *t, const char *name, alm_error *err)
{
    if (t->n_bytes == 0 || (uintptr_t)t->data % alm_dtype_size(t->dtype) == 0)
        return 0;
    size_t rounded = (t->n_bytes + COPY_ALIGNMENT - 1) / COPY_ALIGNMENT * COPY_ALIGNMENT;
    void *copy = aligned_alloc(COPY_ALIGNMENT, rounded);
    if (!copy)
        return alm_error_set(err, -ENOMEM, "%s: tensor %s: out of memory", t->file, name);
    memcpy(copy, t->data, t->n_bytes);
    g_ptr_array_add(s->aligned_copies, copy);
    t->data = copy;
    return 0;
}

static int check_overlaps(const tensor_store *s, const mapped_file *f,
                          byte_range *ranges, size_t n, alm_error *err)
{
    qsort(ranges, n, sizeof *ranges, compare_ranges);
    const byte_range *prev = NULL;
    for (size_t i = 0; i < n; i++) {
        const byte_range *r = &ranges[i];
        if (r->begin == r->end)
            continue; /* empty tensors own no bytes */
        if (prev && r->begin < prev->end)
            return alm_error_set(err, -EINVAL,
                                 "%s: tensors %s [%llu, %llu] and %s [%llu, %llu] overlap",
                                 f->path, s->tensors[prev->tensor].name,
                                 (unsigned long long)prev->begin, (unsigned long long)prev->end,
                                 s->tensors[r->tensor].name,
                                 (unsigned long long)r->begin, (unsigned long long)r->end);
        prev = r;
    }
    return 0;
}

/* Maps one file and appends its tensors to the store. */
static int load_file(tensor_store *s, const char *path, alm_error *err)
{
    mapped_file *f = NULL;
    int r = map_file(s, path, &f, err);
    if (r < 0)
        return r;
    path = f->path;

    uint64_t header_len;
    memcpy(&header_len, f->base, sizeof header_len);
    header_len = le64toh(header_len);
    if (header_len > f->size - 8)
        return alm_error_set(err, -EINVAL,
                             "%s: header length %llu goes beyond the end of the file (%zu bytes)",
                             path, (unsigned long long)header_len, f->size);
    if (header_len > HEADER_MAX_BYTES)
        return alm_error_set(err, -EINVAL, "%s: header length %llu exceeds the %llu-byte limit",
                             path, (unsigned long long)header_len,
                             (unsigned long long)HEADER_MAX_BYTES);
    const char *header = (const char *)f->base + 8;
    const uint8_t *data = (const uint8_t *)f->base + 8 + header_len;
    uint64_t data_size = f->size - 8 - header_len;

    json_document doc;
    r = json_document_parse(header, (size_t)header_len, path, HEADER_MAX_DEPTH, true, &doc, err);
    if (r < 0)
        return r;

    size_t first = s->n_tensors;
    guint n_entries = json_object_get_size(doc.root);
    byte_range *ranges = calloc(n_entries ? n_entries : 1, sizeof *ranges);
    if (!ranges) {
        json_document_clear(&doc);
        return alm_error_set(err, -ENOMEM, "%s: out of memory", path);
    }
    size_t n_ranges = 0;

    JsonObjectIter it;
    const char *name;
    JsonNode *node;
    json_object_iter_init(&it, doc.root);
    while (json_object_iter_next(&it, &name, &node)) {
        if (strcmp(name, "__metadata__") == 0) {
            r = check_metadata(node, path, err);
            if (r < 0)
                break;
            continue;
        }
        stored_tensor *t = append_tensor(s);
        if (!t) {
            r = alm_error_set(err, -ENOMEM, "%s: out of memory", path);
            break;
        }
        t->name = strdup(name);
        if (!t->name) {
            r = alm_error_set(err, -ENOMEM, "%s: out of memory", path);
            break;
        }
        r = parse_entry(f, name, node, data, data_size, t, &ranges[n_ranges], err);
        if (r < 0)
            break;
        ranges[n_ranges++].tensor = s->n_tensors - 1;
    }
    if (r == 0)
        r = check_overlaps(s, f, ranges, n_ranges, err);
    for (size_t i = first; r == 0 && i < s->n_tensors; i++)
        r = align_tensor(s, &s->tensors[i], s->tensors[i].name, err);
    free(ranges);
    json_document_clear(&doc);
    return r;
}

static int compare_tensor_names(const void *a, const void *b)
{
    const stored_tensor *x = a, *y = b;
    return strcmp(x->name, y->name);
}

/* Sorts the tensors by name (a stable order for tensor_store_at), refuses a
 * name held by two files and builds the name index. */
static int finish_store(tensor_store *s, alm_error *err)
{
    if (s->n_tensors)
        qsort(s->tensors, s->n_tensors, sizeof *s->tensors, compare_tensor_names);
    for (size_t i = 1; i < s->n_tensors; i++) {
        if (strcmp(s->tensors[i - 1].name, s->tensors[i].name) == 0)
            return alm_error_set(err, -EINVAL, "tensor %s is in both %s and %s",
                                 s->tensors[i].name, s->tensors[i - 1].file, s->tensors[i].file);
    }
    s->by_name = g_hash_table_new(g_str_hash, g_str_equal);
    for (size_t i = 0; i < s->n_tensors; i++)
        g_hash_table_insert(s->by_name, (gpointer)s->tensors[i].name, &s->tensors[i]);
    return 0;
}

int tensor_store_open_file(const char *path, tensor_store **out, alm_error *err)
{
    *out = NULL;
    tensor_store *s = store_new(path);
    if (!s)
        return alm_error_set(err, -ENOMEM, "%s: out of memory", path);
    int r = load_file(s, path, err);
    if (r == 0)
        r = finish_store(s, err);
    if (r < 0) {
        tensor_store_free(s);
        return r;
    }
    *out = s;
    return 0;
}

static int compare_strings(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* A shard name from the index must be a plain file name in the folder. */
static bool is_plain_file_name(const char *name)
{
    return name[0] != '\0' && strchr(name, '/') == NULL
           && strcmp(name, ".") != 0 && strcmp(name, "..") != 0;
}

static int open_sharded(tensor_store *s, const char *dir, const char *index_path, alm_error *err)
{
    json_document doc;
    int r = json_document_load(index_path, INDEX_MAX_BYTES, 8, &doc, err);
    if (r < 0)
        return r;
    JsonNode *map_node = json_object_get_member(doc.root, "weight_map");
    if (!map_node || !JSON_NODE_HOLDS_OBJECT(map_node)) {
        json_document_clear(&doc);
        return alm_error_set(err, -EINVAL, "%s: \"weight_map\" missing or not an object", index_path);
    }
    JsonObject *map = json_node_get_object(map_node);

    /* Each shard once, in a stable order. */
    GHashTable *shard_set = g_hash_table_new(g_str_hash, g_str_equal);
    JsonObjectIter it;
    const char *tensor;
    JsonNode *value;
    json_object_iter_init(&it, map);
    while (json_object_iter_next(&it, &tensor, &value)) {
        if (!JSON_NODE_HOLDS_VALUE(value) || json_node_get_value_type(value) != G_TYPE_STRING) {
            r = alm_error_set(err, -EINVAL, "%s: weight_map entry %s is not a file name",
                              index_path, tensor);
            break;
        }
        const char *shard = json_node_get_string(value);
        if (!is_plain_file_name(shard)) {
            r = alm_error_set(err, -EINVAL,
                              "%s: weight_map entry %s names \"%s\", not a file of the folder",
                              index_path, tensor, shard);
            break;
        }
        g_hash_table_add(shard_set, (gpointer)shard);
    }
    guint n_shards = 0;
    const char **shards = r == 0 ? (const char **)g_hash_table_get_keys_as_array(shard_set, &n_shards) : NULL;
    if (shards)
        qsort(shards, n_shards, sizeof *shards, compare_strings);
    if (r == 0 && n_shards == 0)
        r = alm_error_set(err, -EINVAL, "%s: weight_map is empty", index_path);
    for (guint i = 0; r == 0 && i < n_shards; i++) {
        char *shard_path = g_build_filename(dir, shards[i], NULL);
        r = load_file(s, shard_path, err);
        if (r < 0)
            alm_error_prefix(err, "%s names shard %s", index_path, shards[i]);
        g_free(shard_path);
    }
    g_free(shards);
    g_hash_table_unref(shard_set);
    if (r == 0)
        r = finish_store(s, err);

    /* Every mapped tensor must be in the shard the index names. */
    json_object_iter_init(&it, map);
    while (r == 0 && json_object_iter_next(&it, &tensor, &value)) {
        const char *shard = json_node_get_string(value);
        const stored_tensor *t = tensor_store_find(s, tensor);
        if (!t) {
            r = alm_error_set(err, -EINVAL, "%s: tensor %s is mapped to %s, which does not hold it",
                              index_path, tensor, shard);
        } else {
            const char *base = strrchr(t->file, '/');
            base = base ? base + 1 : t->file;
            if (strcmp(base, shard) != 0)
                r = alm_error_set(err, -EINVAL, "%s: tensor %s is mapped to %s but found in %s",
                                  index_path, tensor, shard, t->file);
        }
    }
    json_document_clear(&doc);
    return r;
}

static bool has_suffix(const char *s, const char *suffix)
{
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

/* No index and no model.safetensors: every *.safetensors of the folder. */
static int open_all_files(tensor_store *s, const char *dir, alm_error *err)
{
    DIR *d = opendir(dir);
    if (!d)
        return alm_error_set(err, -errno, "%s: cannot open folder: %s", dir, strerror(errno));
    GPtrArray *names = g_ptr_array_new_with_free_func(g_free);
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (e->d_name[0] != '.' && has_suffix(e->d_name, ".safetensors"))
            g_ptr_array_add(names, g_strdup(e->d_name));
    }
    closedir(d);
    int r = 0;
    if (names->len == 0)
        r = alm_error_set(err, -ENOENT, "%s: no %s, model.safetensors or other *.safetensors file",
                          dir, INDEX_NAME);
    if (names->len)
        qsort(names->pdata, names->len, sizeof(gpointer), compare_strings);
    for (guint i = 0; r == 0 && i < names->len; i++) {
        char *path = g_build_filename(dir, (const char *)names->pdata[i], NULL);
        r = load_file(s, path, err);
        g_free(path);
    }
    g_ptr_array_unref(names);
    if (r == 0)
        r = finish_store(s, err);
    return r;
}

int tensor_store_open_dir(const char *dir, tensor_store **out, alm_error *err)
{
    *out = NULL;
    struct stat st;
    if (stat(dir, &st) < 0)
        return alm_error_set(err, -errno, "%s: %s", dir, strerror(errno));
    if (!S_ISDIR(st.st_mode))
        return alm_error_set(err, -ENOTDIR, "%s: not a folder", dir);

    tensor_store *s = store_new(dir);
    if (!s)
        return alm_error_set(err, -ENOMEM, "%s: out of memory", dir);
    char *index_path = g_build_filename(dir, INDEX_NAME, NULL);
    char *single_path = g_build_filename(dir, "model.safetensors", NULL);
    int r;
    if (access(index_path, F_OK) == 0)
        r = open_sharded(s, dir, index_path, err);
    else if (access(single_path, F_OK) == 0) {
        r = load_file(s, single_path, err);
        if (r == 0)
            r = finish_store(s, err);
    } else
        r = open_all_files(s, dir, err);
    g_free(index_path);
    g_free(single_path);
    if (r < 0) {
        tensor_store_free(s);
        return r;
    }
    *out = s;
    return 0;
}

const stored_tensor *tensor_store_find(const tensor_store *s, const char *name)
{
    if (!s || !s->by_name || !name)
        return NULL;
    return g_hash_table_lookup(s->by_name, name);
}

size_t tensor_store_count(const tensor_store *s)
{
    return s ? s->n_tensors : 0;
}

const stored_tensor *tensor_store_at(const tensor_store *s, size_t i)
{
    return s && i < s->n_tensors ? &s->tensors[i] : NULL;
}

size_t tensor_store_mapped_bytes(const tensor_store *s)
{
    return s ? s->mapped_bytes : 0;
}

const char *tensor_store_source(const tensor_store *s)
{
    return s ? s->source : NULL;
}

/* ------------------------------------------------------------ in memory */

int tensor_store_new_memory(const char *source, size_t bytes, tensor_store **out, void **base,
                            alm_error *err)
{
    *out = NULL;
    *base = NULL;
    tensor_store *s = store_new(source);
    mapped_file *files = s ? calloc(1, sizeof *files) : NULL;
    if (!files || !(files->path = strdup(source))) {
        free(files);
        tensor_store_free(s);
        return alm_error_set(err, -ENOMEM, "%s: out of memory", source);
    }
    s->files = files;
    s->n_files = 1;
    size_t size = bytes ? bytes : 1;
    /* MAP_NORESERVE: tens of GB are committed page by page as they are
     * written, once. */
    void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                   -1, 0);
    if (p == MAP_FAILED) {
        int e = errno;
        tensor_store_free(s);
        return alm_error_set(err, -e, "%s: cannot allocate %zu bytes of weights: %s", source,
                             bytes, strerror(e));
    }
#ifdef MADV_HUGEPAGE
    /* Fewer page faults while filling, fewer TLB misses while reading. */
    madvise(p, size, MADV_HUGEPAGE);
#endif
    files->base = p;
    files->size = size;
    files->anonymous = true;
    s->mapped_bytes = bytes;
    *out = s;
    *base = p;
    return 0;
}

int tensor_store_add(tensor_store *s, const char *name, alm_dtype dtype, int n_dims,
                     const int64_t *shape, size_t offset, alm_error *err)
{
    if (s->n_files != 1 || s->by_name)
        return alm_error_set(err, -EINVAL, "%s: not an open in-memory store", s->source);
    if (n_dims < 1 || n_dims > TENSOR_MAX_DIMS)
        return alm_error_set(err, -EINVAL, "%s: tensor %s: %d dimensions", s->source, name, n_dims);
    const mapped_file *f = &s->files[0];
    size_t n_bytes = alm_dtype_size(dtype);
    for (int i = 0; i < n_dims; i++)
        if (shape[i] < 0 || __builtin_mul_overflow(n_bytes, (size_t)shape[i], &n_bytes))
            return alm_error_set(err, -EINVAL, "%s: tensor %s: bad shape", s->source, name);
    if (offset % alm_dtype_size(dtype) || offset > s->mapped_bytes || n_bytes > s->mapped_bytes - offset)
        return alm_error_set(err, -EINVAL, "%s: tensor %s: %zu bytes at %zu do not fit the %zu-byte region",
                             s->source, name, n_bytes, offset, s->mapped_bytes);
    stored_tensor *t = append_tensor(s);
    if (!t || !(t->name = strdup(name)))
        return alm_error_set(err, -ENOMEM, "%s: out of memory", s->source);
    t->file = f->path;
    t->dtype = dtype;
    t->n_dims = n_dims;
    memcpy(t->shape, shape, sizeof *shape * (size_t)n_dims);
    t->data = (const uint8_t *)f->base + offset;
    t->n_bytes = n_bytes;
    return 0;
}

int tensor_store_seal(tensor_store *s, alm_error *err)
{
    if (s->by_name)
        return alm_error_set(err, -EINVAL, "%s: the store is already sealed", s->source);
    return finish_store(s, err);
}

size_t tensor_store_release(tensor_store *s, const void *p, size_t len)
{
    uintptr_t begin = (uintptr_t)p, end = begin + len;
    for (size_t i = 0; i < s->n_files; i++) {
        const mapped_file *f = &s->files[i];
        uintptr_t base = (uintptr_t)f->base;
        if (f->anonymous || begin < base || end > base + f->size)
            continue;
        uintptr_t page = (uintptr_t)sysconf(_SC_PAGESIZE);
        uintptr_t first = (begin + page - 1) / page * page, last = end / page * page;
        if (last <= first)
            return 0;
        /* A read-only private file mapping never written: dropping the
         * pages loses nothing. */
        if (madvise((void *)first, last - first, MADV_DONTNEED) < 0)
            return 0;
        return last - first;
    }
    return 0;
}
