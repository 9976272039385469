/* safetensors: reading good files and shard sets, a clear error for every
 * kind of damage, and random mutations of a valid header. */
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error.h"
#include "loader/safetensors.h"
#include "loader_fixtures.h"
#include "tap.h"

static char *tmpdir;

/* Opening path must fail with needle in the message, which must also name
 * the file. */
static void expect_file_error(const char *path, const char *needle, const char *what)
{
    tensor_store *s = (tensor_store *)&tmpdir; /* must be reset to NULL */
    alm_error err = { 0 };
    int r = tensor_store_open_file(path, &s, &err);
    tap_ok(r < 0 && s == NULL && err.code == r && message_has(err.message, needle)
               && message_has(err.message, path),
           "%s: refused (%s)", what, err.message);
    if (r == 0)
        tensor_store_free(s);
}

/* A header given as text, then data_len zero bytes. */
static void expect_header_error(const char *header, size_t data_len, const char *needle,
                                const char *what)
{
    char *path = fixture_path(tmpdir, "bad.safetensors");
    void *data = calloc(1, data_len ? data_len : 1);
    st_write_raw(path, strlen(header), header, strlen(header), data, data_len);
    expect_file_error(path, needle, what);
    free(data);
    free(path);
}

static void test_good_file(void)
{
    const float f32[6] = { 1.5f, -2.0f, 3.25f, 0.0f, 1e-3f, -7.0f };
    const uint16_t f16[4] = { 0x3c00, 0xc000, 0x3800, 0x7bff };   /* 1, -2, 0.5, 65504 */
    const uint16_t bf16[4] = { 0x3f80, 0x4040, 0xbf00, 0x4120 };  /* 1, 3, -0.5, 10 */
    const uint32_t u32[3] = { 0xdeadbeef, 7, 0 };
    const st_tensor tensors[] = {
        { "a.f32", "F32", 2, { 2, 3 }, f32, sizeof f32 },
        { "b.f16", "F16", 1, { 4 }, f16, sizeof f16 },
        { "c.bf16", "BF16", 2, { 2, 2 }, bf16, sizeof bf16 },
        { "d.u32", "U32", 1, { 3 }, u32, sizeof u32 },
        { "e.empty", "F32", 2, { 0, 5 }, NULL, 0 },
        { "f.scalar", "F32", 0, { 0 }, f32, 4 },
    };
    char *path = fixture_path(tmpdir, "good.safetensors");
    st_write(path, tensors, 6, "{\"format\":\"pt\",\"note\":\"x\"}");

    tensor_store *s = NULL;
    alm_error err = { 0 };
    int r = tensor_store_open_file(path, &s, &err);
    tap_ok(r == 0 && s, "good file opens (%s)", r ? err.message : "ok");
    if (!s) {
        free(path);
        return;
    }
    tap_ok(tensor_store_count(s) == 6, "6 tensors, __metadata__ not counted");
    tap_ok(strcmp(tensor_store_source(s), path) == 0, "source is the path");
    FILE *f = fopen(path, "rb");
    fseek(f, 0, SEEK_END);
    tap_ok(tensor_store_mapped_bytes(s) == (size_t)ftell(f), "mapped bytes = file size");
    fclose(f);

    const stored_tensor *a = tensor_store_find(s, "a.f32");
    tap_ok(a && a->dtype == ALM_DTYPE_F32 && a->n_dims == 2 && a->shape[0] == 2 && a->shape[1] == 3
               && a->n_bytes == 24 && strcmp(a->file, path) == 0,
           "F32 tensor: dtype, shape, size, file");
    tap_ok(a && memcmp(a->data, f32, sizeof f32) == 0, "F32 bytes are the written ones");
    const stored_tensor *b = tensor_store_find(s, "b.f16");
    tap_ok(b && alm_load_as_f32(b->dtype, b->data, 1) == -2.0f && alm_load_as_f32(b->dtype, b->data, 3) == 65504.0f,
           "F16 values read back");
    const stored_tensor *c = tensor_store_find(s, "c.bf16");
    tap_ok(c && alm_load_as_f32(c->dtype, c->data, 1) == 3.0f && alm_load_as_f32(c->dtype, c->data, 3) == 10.0f,
           "BF16 values read back");
    const stored_tensor *d = tensor_store_find(s, "d.u32");
    uint32_t word = 0;
    if (d)
        memcpy(&word, d->data, 4);
    tap_ok(d && d->dtype == ALM_DTYPE_U32 && word == 0xdeadbeef, "U32 read back");
    const stored_tensor *e = tensor_store_find(s, "e.empty");
    tap_ok(e && e->n_bytes == 0 && e->shape[0] == 0 && e->shape[1] == 5, "empty tensor accepted");
    const stored_tensor *sc = tensor_store_find(s, "f.scalar");
    tap_ok(sc && sc->n_dims == 0 && sc->n_bytes == 4, "0-dimensional tensor holds one element");
    tap_ok(tensor_store_find(s, "nope") == NULL && tensor_store_find(s, "a.f3") == NULL,
           "absent names give NULL");
    bool sorted = true;
    for (size_t i = 1; i < tensor_store_count(s); i++)
        sorted &= strcmp(tensor_store_at(s, i - 1)->name, tensor_store_at(s, i)->name) < 0;
    tap_ok(sorted && tensor_store_at(s, 6) == NULL, "tensor_store_at: sorted by name, bounded");
    tensor_store_free(s);
    free(path);
}

/* A BF16 of one element pushes the next F32 to an odd offset: the store
 * must hand out an aligned pointer with the same bytes. */
static void test_misaligned_tensor(void)
{
    uint8_t data[2 + 8];
    const uint16_t one = 0x3f80;
    const float v[2] = { 0.75f, -4.5f };
    memcpy(data, &one, 2);
    memcpy(data + 2, v, 8);
    const char *header = "{\"x\":{\"dtype\":\"BF16\",\"shape\":[1],\"data_offsets\":[0,2]},"
                         "\"y\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[2,10]}}";
    char *path = fixture_path(tmpdir, "misaligned.safetensors");
    st_write_raw(path, strlen(header), header, strlen(header), data, sizeof data);
    tensor_store *s = NULL;
    alm_error err = { 0 };
    int r = tensor_store_open_file(path, &s, &err);
    const stored_tensor *y = s ? tensor_store_find(s, "y") : NULL;
    float got[2] = { 0, 0 };
    if (y)
        memcpy(got, y->data, 8);
    tap_ok(r == 0 && y && (uintptr_t)y->data % 4 == 0 && got[0] == 0.75f && got[1] == -4.5f,
           "misaligned F32 tensor is handed out aligned with its values (%s)", r ? err.message : "ok");
    tensor_store_free(s);
    free(path);
}

static void test_bad_files(void)
{
    char *path = fixture_path(tmpdir, "bad.safetensors");
    fixture_write(path, "", 0);
    expect_file_error(path, "too short", "empty file");
    fixture_write(path, "\x10\0\0\0\0", 5);
    expect_file_error(path, "too short", "5-byte file");
    st_write_raw(path, 1000, "{}", 2, NULL, 0);
    expect_file_error(path, "beyond the end of the file", "header length beyond the file");
    st_write_raw(path, UINT64_MAX, "{}", 2, NULL, 0);
    expect_file_error(path, "beyond the end of the file", "header length 2^64-1");

    /* A sparse file larger than the bound, whose header claims all of it. */
    uint64_t big = (100ull << 20) + 8;
    st_write_raw(path, big, "{", 1, NULL, 0);
    int fd = open(path, O_WRONLY);
    bool sized = fd >= 0 && ftruncate(fd, (off_t)(big + 8)) == 0;
    if (fd >= 0)
        close(fd);
    if (sized)
        expect_file_error(path, "exceeds the 104857600-byte limit", "header length over 100 MiB");
    unlink(path);
    free(path);

    /* A real model cut short: the last tensors' ranges leave the file. */
    const char *data_dir = getenv("ALM_TEST_DATA");
    if (data_dir) {
        char *src = fixture_path(data_dir, "models/tiny/qwen2-bias/model.safetensors");
        size_t len;
        char *bytes = fixture_read(src, &len);
        char *cut = fixture_path(tmpdir, "cut.safetensors");
        if (bytes) {
            fixture_write(cut, bytes, len - 1);
            expect_file_error(cut, "tensor model.norm.weight: data_offsets [1197056, 1197184] out of range",
                              "model file missing its last byte");
            fixture_write(cut, bytes, len / 2);
            expect_file_error(cut, "out of range", "model file cut in half");
            fixture_write(cut, bytes, 2000);
            expect_file_error(cut, "goes beyond the end of the file", "model file cut inside its header");
        }
        tap_ok(bytes != NULL, "read %s", src);
        free(bytes);
        free(cut);
        free(src);
    }

    expect_file_error("/nonexistent/x.safetensors", "cannot open", "missing file");
    expect_file_error(tmpdir, "not a regular file", "a folder");

    const char *entry = "\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}";
    char header[512];
    snprintf(header, sizeof header, "{%s", entry);
    expect_header_error(header, 8, "malformed JSON", "unterminated header JSON");
    expect_header_error("{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8],}}", 8,
                        "malformed JSON", "trailing comma in header");
    expect_header_error("[1,2]", 0, "expected an object", "header is a list");
    snprintf(header, sizeof header, "{%s} xyz", entry);
    expect_header_error(header, 8, "unexpected text after the object", "text after the header object");
    snprintf(header, sizeof header, "{%s}{}", entry);
    expect_header_error(header, 8, "unexpected text after the object", "two objects in the header");
    expect_header_error("{\"t\":[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]}", 0,
                        "nesting deeper", "deeply nested header");
    const char nul_header[] = "{\"t\":{\"dtype\":\"F32\0\",\"shape\":[2],\"data_offsets\":[0,8]}}";
    char *p = fixture_path(tmpdir, "bad.safetensors");
    uint8_t zeros[8] = { 0 };
    st_write_raw(p, sizeof nul_header - 1, nul_header, sizeof nul_header - 1, zeros, 8);
    expect_file_error(p, "NUL byte", "NUL byte in the header");
    const char bad_utf8[] = "{\"t\xff\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}";
    st_write_raw(p, sizeof bad_utf8 - 1, bad_utf8, sizeof bad_utf8 - 1, zeros, 8);
    expect_file_error(p, "invalid UTF-8", "invalid UTF-8 in the header");
    free(p);

    expect_header_error("{\"t\":{\"dtype\":\"F64\",\"shape\":[2],\"data_offsets\":[0,16]}}", 16,
                        "tensor t: unsupported dtype \"F64\"", "F64 dtype");
    expect_header_error("{\"t\":{\"dtype\":\"I8\",\"shape\":[2],\"data_offsets\":[0,2]}}", 2,
                        "unsupported dtype \"I8\"", "I8 dtype");
    expect_header_error("{\"t\":{\"dtype\":\"Q9\",\"shape\":[2],\"data_offsets\":[0,2]}}", 2,
                        "unknown dtype \"Q9\"", "unknown dtype");
    expect_header_error("{\"t\":{\"dtype\":7,\"shape\":[2],\"data_offsets\":[0,8]}}", 8,
                        "tensor t: \"dtype\" missing or not a string", "numeric dtype");
    expect_header_error("{\"t\":{\"shape\":[2],\"data_offsets\":[0,8]}}", 8,
                        "\"dtype\" missing", "no dtype");
    expect_header_error("{\"t\":{\"dtype\":\"F32\",\"shape\":2,\"data_offsets\":[0,8]}}", 8,
                        "\"shape\" missing or not a list", "shape not a list");
    expect_header_error("{\"t\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 8,
                        "shape entry 0 is not a non-negative integer", "negative dimension");
    expect_header_error("{\"t\":{\"dtype\":\"F32\",\"shape\":[2.0],\"data_offsets\":[0,8]}}", 8,
                        "shape entry 0 is not a non-negative integer", "float dimension");
    expect_header_error("{\"t\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,2],\"data_offsets\":[0,8]}}", 8,
                        "5 dimensions, at most 4", "5 dimensions");
    expect_header_error("{\"t\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296],\"data_offsets\":[0,8]}}",
                        8, "shape overflows", "element count overflows");
    expect_header_error("{\"t\":{\"dtype\":\"F32\",\"shape\":[2305843009213693952],\"data_offsets\":[0,8]}}",
                        8, "needs", "byte count overflows");
    expect_header_error("{\"t\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8,
                        "tensor t: F32 shape of 3 elements needs 12 bytes, data_offsets [0, 8] hold 8",
                        "dtype/shape mismatch");
    expect_header_error("{\"t\":{\"dtype\":\"BF16\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8,
                        "needs 4 bytes", "dtype size mismatch");
    expect_header_error("{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}", 8,
                        "tensor t: data_offsets [8, 16] out of range: the data area holds 8 bytes",
                        "offsets beyond the data");
    expect_header_error("{\"t\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,0]}}", 8,
                        "end before they begin", "begin after end");
    expect_header_error("{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0]}}", 8,
                        "not [begin, end]", "one offset");
    expect_header_error("{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,\"8\"]}}", 8,
                        "not non-negative integers", "string offset");
    expect_header_error("{\"t\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[-8,0]}}", 8,
                        "not non-negative integers", "negative offset");
    expect_header_error("{\"t\":[1]}", 0, "tensor t: entry is not an object", "entry is a list");
    expect_header_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                        "\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12,
                        "tensors a [0, 8] and b [4, 12] overlap", "overlapping ranges");
    expect_header_error("{\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]},"
                        "\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,12]}}", 12,
                        "overlap", "range inside another");
    expect_header_error("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},"
                        "\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,16]}}", 16,
                        "duplicate entry \"a\"", "duplicate tensor names");
    expect_header_error("{\"__metadata__\":{\"format\":1}}", 0,
                        "__metadata__ entry \"format\" is not a string", "non-string metadata");
    expect_header_error("{\"__metadata__\":[]}", 0, "__metadata__ is not an object", "metadata list");
}

/* Writes a shard holding the named tensors, each F32 [2] of value v. */
static void write_shard(const char *dir, const char *file, const char *const *names, size_t n, float v)
{
    float data[2] = { v, v };
    st_tensor t[8];
    for (size_t i = 0; i < n; i++)
        t[i] = (st_tensor){ names[i], "F32", 1, { 2 }, data, sizeof data };
    char *path = fixture_path(dir, file);
    st_write(path, t, n, NULL);
    free(path);
}

static void write_text(const char *dir, const char *file, const char *text)
{
    char *path = fixture_path(dir, file);
    fixture_write(path, text, strlen(text));
    free(path);
}

static void expect_dir_error(const char *dir, const char *needle, const char *what)
{
    tensor_store *s = (tensor_store *)&tmpdir;
    alm_error err = { 0 };
    int r = tensor_store_open_dir(dir, &s, &err);
    tap_ok(r < 0 && s == NULL && message_has(err.message, needle), "%s: refused (%s)", what, err.message);
    if (r == 0)
        tensor_store_free(s);
}

static void test_shards(void)
{
    char *dir = fixture_path(tmpdir, "sharded");
    mkdir(dir, 0700);
    const char *first[] = { "x.a", "x.b" };
    const char *second[] = { "y.a", "y.unmapped" };
    write_shard(dir, "s-1.safetensors", first, 2, 1.0f);
    write_shard(dir, "s-2.safetensors", second, 2, 2.0f);
    write_shard(dir, "stray.safetensors", first, 2, 9.0f); /* not named: must be ignored */
    write_text(dir, "model.safetensors.index.json",
               "{\"metadata\":{\"total_size\":24},\"weight_map\":{\"x.a\":\"s-1.safetensors\","
               "\"x.b\":\"s-1.safetensors\",\"y.a\":\"s-2.safetensors\"}}");
    tensor_store *s = NULL;
    alm_error err = { 0 };
    int r = tensor_store_open_dir(dir, &s, &err);
    tap_ok(r == 0 && s && tensor_store_count(s) == 4, "sharded folder opens, 4 tensors (%s)",
           r ? err.message : "ok");
    const stored_tensor *xb = s ? tensor_store_find(s, "x.b") : NULL;
    const stored_tensor *ya = s ? tensor_store_find(s, "y.a") : NULL;
    tap_ok(xb && strstr(xb->file, "/s-1.safetensors") && alm_load_as_f32(xb->dtype, xb->data, 1) == 1.0f,
           "x.b from shard 1");
    tap_ok(ya && strstr(ya->file, "/s-2.safetensors") && alm_load_as_f32(ya->dtype, ya->data, 0) == 2.0f,
           "y.a from shard 2");
    tap_ok(s && tensor_store_find(s, "y.unmapped") != NULL, "tensors the index does not list are kept");
    tensor_store_free(s);

    write_text(dir, "model.safetensors.index.json",
               "{\"weight_map\":{\"x.a\":\"s-1.safetensors\",\"y.a\":\"s-3.safetensors\"}}");
    expect_dir_error(dir, "s-3.safetensors: cannot open", "index naming a missing shard");
    write_text(dir, "model.safetensors.index.json",
               "{\"weight_map\":{\"x.a\":\"s-2.safetensors\",\"y.a\":\"s-2.safetensors\"}}");
    expect_dir_error(dir, "tensor x.a is mapped to s-2.safetensors, which does not hold it",
                     "tensor not in the shard the index names");
    write_text(dir, "model.safetensors.index.json",
               "{\"weight_map\":{\"x.a\":\"s-2.safetensors\",\"y.a\":\"s-2.safetensors\",\"x.b\":\"s-1.safetensors\"}}");
    expect_dir_error(dir, "tensor x.a is mapped to s-2.safetensors but found in", "tensor in another shard");
    write_text(dir, "model.safetensors.index.json",
               "{\"weight_map\":{\"x.a\":\"s-1.safetensors\",\"z\":\"stray.safetensors\"}}");
    expect_dir_error(dir, "is in both", "a tensor in two shards");
    write_text(dir, "model.safetensors.index.json", "{\"weight_map\":{\"x.a\":\"../s-1.safetensors\"}}");
    expect_dir_error(dir, "not a file of the folder", "shard path outside the folder");
    write_text(dir, "model.safetensors.index.json", "{\"weight_map\":{\"x.a\":3}}");
    expect_dir_error(dir, "weight_map entry x.a is not a file name", "shard name not a string");
    write_text(dir, "model.safetensors.index.json", "{\"metadata\":{}}");
    expect_dir_error(dir, "\"weight_map\" missing", "index without weight_map");
    write_text(dir, "model.safetensors.index.json", "{\"weight_map\":{}}");
    expect_dir_error(dir, "weight_map is empty", "empty weight_map");
    write_text(dir, "model.safetensors.index.json", "{\"weight_map\":");
    expect_dir_error(dir, "malformed JSON", "truncated index");

    /* Without an index: every *.safetensors of the folder, duplicates refused. */
    char *path = fixture_path(dir, "model.safetensors.index.json");
    unlink(path);
    free(path);
    expect_dir_error(dir, "is in both", "unindexed shards sharing a tensor");
    path = fixture_path(dir, "stray.safetensors");
    unlink(path);
    free(path);
    s = NULL;
    r = tensor_store_open_dir(dir, &s, &err);
    tap_ok(r == 0 && s && tensor_store_count(s) == 4, "unindexed folder: all *.safetensors files (%s)",
           r ? err.message : "ok");
    tensor_store_free(s);

    char *empty = fixture_path(tmpdir, "empty");
    mkdir(empty, 0700);
    expect_dir_error(empty, "no model.safetensors.index.json", "folder without weights");
    expect_dir_error("/nonexistent-alm-folder", "No such file", "missing folder");
    fixture_rmtree(empty);
    free(empty);
    fixture_rmtree(dir);
    free(dir);
}

/* xorshift64*: a fixed sequence, so that a failure can be replayed. */
static uint64_t next_random(uint64_t *state)
{
    uint64_t x = *state;
    x ^= x >> 12;
    x ^= x << 25;
    x ^= x >> 27;
    *state = x;
    return x * 0x2545F4914F6CDD1Dull;
}

/* Mutates bytes of a valid file's length field and header (and sometimes
 * truncates it): loading must fail cleanly or succeed with every tensor
 * readable; ASan watches the reads. */
static void test_fuzz(void)
{
    float a[6] = { 1, 2, 3, 4, 5, 6 };
    uint16_t b[4] = { 1, 2, 3, 4 };
    uint32_t c[2] = { 5, 6 };
    const st_tensor tensors[] = {
        { "alpha", "F32", 2, { 2, 3 }, a, sizeof a },
        { "beta", "BF16", 1, { 4 }, b, sizeof b },
        { "gamma", "U32", 2, { 1, 2 }, c, sizeof c },
    };
    char *path = fixture_path(tmpdir, "fuzz.safetensors");
    st_write(path, tensors, 3, "{\"format\":\"pt\"}");
    size_t len;
    char *orig = fixture_read(path, &len);
    uint64_t header_len;
    memcpy(&header_len, orig, 8);
    char *buf = malloc(len);
    uint64_t state = 0x9e3779b97f4a7c15ull;
    int opened = 0, refused = 0, bad_errors = 0;
    const int rounds = 3000;
    for (int i = 0; i < rounds; i++) {
        memcpy(buf, orig, len);
        int n_mut = 1 + (int)(next_random(&state) % 4);
        for (int m = 0; m < n_mut; m++) {
            uint64_t pos = next_random(&state) % (8 + header_len);
            uint64_t kind = next_random(&state) % 4;
            static const char interesting[] = "{}[],:\"0123456789-. e";
            if (kind == 0)
                buf[pos] = (char)next_random(&state);
            else
                buf[pos] = interesting[next_random(&state) % (sizeof interesting - 1)];
        }
        size_t out_len = len;
        if (next_random(&state) % 8 == 0)
            out_len = (size_t)(next_random(&state) % len);
        fixture_write(path, buf, out_len);
        tensor_store *s = NULL;
        alm_error err = { 0 };
        int r = tensor_store_open_file(path, &s, &err);
        if (r < 0) {
            refused++;
            if (err.message[0] == '\0' || s != NULL)
                bad_errors++;
            continue;
        }
        opened++;
        volatile uint8_t sink = 0;
        for (size_t t = 0; t < tensor_store_count(s); t++) {
            const stored_tensor *x = tensor_store_at(s, t);
            for (size_t k = 0; k < x->n_bytes; k++)
                sink ^= ((const uint8_t *)x->data)[k];
            if (tensor_store_find(s, x->name) != x)
                bad_errors++;
        }
        (void)sink;
        tensor_store_free(s);
    }
    tap_diag("fuzz: %d mutated files, %d opened, %d refused", rounds, opened, refused);
    tap_ok(bad_errors == 0, "fuzz: every refusal has a message, every opened store is consistent");
    tap_ok(refused > rounds / 4, "fuzz: mutations were mostly caught");
    free(buf);
    free(orig);
    free(path);
}

int main(void)
{
    tmpdir = fixture_tmpdir();
    if (!tmpdir)
        return tap_skip_all("cannot create a temporary folder");
    test_good_file();
    test_misaligned_tensor();
    test_bad_files();
    test_shards();
    test_fuzz();
    fixture_rmtree(tmpdir);
    free(tmpdir);
    return tap_done();
}
