#include "tokenizer/bpe.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "tokenizer/hash.h"
#include "tokenizer/json_util.h"
#include "tokenizer/utf8.h"

/* Ids above this are refused: they would only allocate huge tables. */
#define BPE_MAX_ID (1 << 24)
/* Words up to this many symbols merge by scanning an array; longer ones use
 * a heap (O(n log n), as HF does), so a huge word cannot go quadratic. */
#define BPE_SMALL_WORD 48
#define NO_RANK INT32_MAX
#define CHAR_TABLE 0x800

struct bpe_symbol {
    int32_t id;
    int32_t prev;
    int32_t next;
    bool alive;
};

struct bpe_merge {
    int32_t rank;
    int32_t pos;
    int32_t new_id;
};

/* ------------------------------------------------------------ merges */

static uint64_t pair_key(int32_t a, int32_t b)
{
    return ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
}

static const merge_entry *merge_find(const bpe_model *m, int32_t a, int32_t b)
{
    if (!m->merges)
        return NULL;
    uint64_t key = pair_key(a, b);
    for (size_t i = hash_mix(key) & m->merge_mask;; i = (i + 1) & m->merge_mask) {
        const merge_entry *e = &m->merges[i];
        if (e->pair == key)
            return e;
        if (e->pair == UINT64_MAX)
            return NULL;
    }
}

static void merge_put(bpe_model *m, int32_t a, int32_t b, int32_t rank, int32_t new_id)
{
    uint64_t key = pair_key(a, b);
    for (size_t i = hash_mix(key) & m->merge_mask;; i = (i + 1) & m->merge_mask) {
        merge_entry *e = &m->merges[i];
        /* A repeated pair takes the later rank, as HF's HashMap collect does. */
        if (e->pair == key || e->pair == UINT64_MAX) {
            *e = (merge_entry){ key, rank, new_id };
            return;
        }
    }
}

/* ------------------------------------------------------------ loading */

static int parse_vocab(bpe_model *m, JsonObject *vocab, const char *where, alm_error *err)
{
    JsonObjectIter it;
    const gchar *name;
    JsonNode *node;
    size_t bytes = 0, count = 0;
    int64_t max_id = -1;
    json_object_iter_init(&it, vocab);
    while (json_object_iter_next(&it, &name, &node)) {
        if (!JSON_NODE_HOLDS_VALUE(node) || json_node_get_value_type(node) != G_TYPE_INT64)
            return alm_error_set(err, -EINVAL, "%s: vocab: id of \"%s\" must be an integer",
                                 where, name);
        int64_t id = json_node_get_int(node);
        if (id < 0 || id >= BPE_MAX_ID)
            return alm_error_set(err, -EINVAL, "%s: vocab: id %lld of \"%s\" is out of range",
                                 where, (long long)id, name);
        if (id > max_id)
            max_id = id;
        bytes += strlen(name) + 1;
        count++;
    }
    if (bytes >= UINT32_MAX)
        return alm_error_set(err, -EINVAL, "%s: vocab too large", where);
    m->n_ids = (int32_t)(max_id + 1);
    m->strings = malloc(bytes ? bytes : 1);
    m->offset = malloc((size_t)(m->n_ids ? m->n_ids : 1) * sizeof *m->offset);
    m->length = malloc((size_t)(m->n_ids ? m->n_ids : 1) * sizeof *m->length);
    if (!m->strings || !m->offset || !m->length || token_map_init(&m->vocab, count) < 0)
        return alm_error_set(err, -ENOMEM, "out of memory");
    for (int32_t i = 0; i < m->n_ids; i++)
        m->offset[i] = UINT32_MAX;
    size_t pos = 0;
    json_object_iter_init(&it, vocab);
    while (json_object_iter_next(&it, &name, &node)) {
        int32_t id = (int32_t)json_node_get_int(node);
        size_t len = strlen(name);
        memcpy(m->strings + pos, name, len + 1);
        /* Two strings with one id: keep the first for id -> string. */
        if (m->offset[id] == UINT32_MAX) {
            m->offset[id] = (uint32_t)pos;
            m->length[id] = (uint32_t)len;
        }
        if (token_map_put(&m->vocab, m->strings + pos, len, id) < 0)
            return alm_error_set(err, -ENOMEM, "out of memory");
        pos += len + 1;
    }
    return 0;
}

static int merge_parts(JsonNode *node, const char **a, size_t *a_len, const char **b,
                       size_t *b_len)
{
    const char *s = json_node_string(node);
    if (s) {
        /* The older spelling: "left right", split at the first space. */
        const char *sp = strchr(s, ' ');
        if (!sp)
            return -EINVAL;
        *a = s;
        *a_len = (size_t)(sp - s);
        *b = sp + 1;
        *b_len = strlen(sp + 1);
        return 0;
    }
    if (!JSON_NODE_HOLDS_ARRAY(node))
        return -EINVAL;
    JsonArray *pair = json_node_get_array(node);
    if (json_array_get_length(pair) != 2)
        return -EINVAL;
    *a = json_node_string(json_array_get_element(pair, 0));
    *b = json_node_string(json_array_get_element(pair, 1));
    if (!*a || !*b)
        return -EINVAL;
    *a_len = strlen(*a);
    *b_len = strlen(*b);
    return 0;
}

static int parse_merges(bpe_model *m, JsonArray *merges, const char *where, alm_error *err)
{
    guint n = merges ? json_array_get_length(merges) : 0;
    if (n >= INT32_MAX / 4)
        return alm_error_set(err, -EINVAL, "%s: too many merges", where);
    size_t slots = 16;
    while (slots < (size_t)n * 2 + 1)
        slots *= 2;
    m->merges = malloc(slots * sizeof *m->merges);
    if (!m->merges)
        return alm_error_set(err, -ENOMEM, "out of memory");
    for (size_t i = 0; i < slots; i++)
        m->merges[i].pair = UINT64_MAX;
    m->merge_mask = slots - 1;

    strbuf joined = { 0 };
    int r = 0;
    for (guint i = 0; i < n && r == 0; i++) {
        const char *a, *b;
        size_t a_len, b_len;
        if (merge_parts(json_array_get_element(merges, i), &a, &a_len, &b, &b_len) < 0) {
            r = alm_error_set(err, -EINVAL,
                              "%s: merge %u must be \"left right\" or [\"left\", \"right\"]",
                              where, i);
            break;
        }
        int32_t ia = token_map_get(&m->vocab, a, a_len), ib = token_map_get(&m->vocab, b, b_len);
        /* The merged token drops the right part's continuing prefix. */
        size_t skip = m->prefix_len <= b_len ? m->prefix_len : b_len;
        strbuf_clear(&joined);
        if (strbuf_append(&joined, a, a_len) < 0 ||
            strbuf_append(&joined, b + skip, b_len - skip) < 0) {
            r = alm_error_set(err, -ENOMEM, "out of memory");
            break;
        }
        int32_t inew = token_map_get(&m->vocab, joined.data, joined.len);
        if (ia < 0 || ib < 0 || inew < 0) {
            const char *missing = ia < 0 ? a : ib < 0 ? b : joined.data;
            int missing_len = (int)(ia < 0 ? a_len : ib < 0 ? b_len : joined.len);
            r = alm_error_set(err, -EINVAL, "%s: merge %u: token \"%.*s\" is not in the vocabulary",
                              where, i, missing_len > 64 ? 64 : missing_len, missing);
            break;
        }
        merge_put(m, ia, ib, (int32_t)i, inew);
    }
    strbuf_free(&joined);
    return r;
}

static int find_whole_tokens(bpe_model *m, alm_error *err);
static int collect_bigrams(bpe_model *m, alm_error *err);

static int dup_opt_string(JsonObject *o, const char *name, char **out, size_t *len,
                          const char *where, alm_error *err)
{
    const char *s;
    int r = json_get_string(o, name, false, &s, where, err);
    if (r < 0 || !s)
        return r;
    *len = strlen(s);
    *out = strdup(s);
    return *out ? 0 : alm_error_set(err, -ENOMEM, "out of memory");
}

int bpe_from_json(bpe_model *m, JsonObject *o, const char *where, alm_error *err)
{
    memset(m, 0, sizeof *m);
    m->unk_id = -1;
    for (int i = 0; i < 256; i++)
        m->byte_ids[i] = -1;

    const char *type;
    int r = json_get_string(o, "type", false, &type, where, err);
    if (r < 0)
        goto fail;
    if (type && strcmp(type, "BPE") != 0) {
        r = alm_error_set(err, -ENOTSUP, "%s: model type '%s' is not supported (only BPE)", where,
                          type);
        goto fail;
    }
    JsonNode *dropout = json_member(o, "dropout");
    if (dropout && (!JSON_NODE_HOLDS_VALUE(dropout) || json_node_get_double(dropout) != 0.0)) {
        r = alm_error_set(err, -ENOTSUP, "%s: BPE dropout is not supported", where);
        goto fail;
    }
    size_t unk_len = 0;
    JsonObject *vocab;
    JsonArray *merges;
    if ((r = json_get_bool(o, "fuse_unk", false, &m->fuse_unk, where, err)) < 0 ||
        (r = json_get_bool(o, "byte_fallback", false, &m->byte_fallback, where, err)) < 0 ||
        (r = json_get_bool(o, "ignore_merges", false, &m->ignore_merges, where, err)) < 0 ||
        (r = dup_opt_string(o, "unk_token", &m->unk_token, &unk_len, where, err)) < 0 ||
        (r = dup_opt_string(o, "continuing_subword_prefix", &m->prefix, &m->prefix_len, where,
                            err)) < 0 ||
        (r = dup_opt_string(o, "end_of_word_suffix", &m->suffix, &m->suffix_len, where, err)) <
            0 ||
        (r = json_get_object(o, "vocab", true, &vocab, where, err)) < 0 ||
        (r = json_get_array(o, "merges", false, &merges, where, err)) < 0 ||
        (r = parse_vocab(m, vocab, where, err)) < 0 || (r = parse_merges(m, merges, where, err)) < 0)
        goto fail;

    if (m->unk_token) {
        m->unk_id = token_map_get(&m->vocab, m->unk_token, unk_len);
        m->unk_missing = m->unk_id < 0;
    }
    for (int b = 0; b < 256; b++) {
        char name[8];
        snprintf(name, sizeof name, "<0x%02X>", b);
        m->byte_ids[b] = token_map_get(&m->vocab, name, 6);
    }
    if (!m->prefix && !m->suffix) {
        if (!(m->char_ids = malloc(CHAR_TABLE * sizeof *m->char_ids))) {
            r = alm_error_set(err, -ENOMEM, "out of memory");
            goto fail;
        }
        for (uint32_t c = 0; c < CHAR_TABLE; c++) {
            char buf[4];
            m->char_ids[c] = token_map_get(&m->vocab, buf, utf8_encode(c, buf));
        }
    }
    if ((r = find_whole_tokens(m, err)) < 0 || (r = collect_bigrams(m, err)) < 0)
        goto fail;
    return 0;
fail:
    bpe_free(m);
    return r;
}

void bpe_free(bpe_model *m)
{
    free(m->strings);
    free(m->offset);
    free(m->length);
    token_map_free(&m->vocab);
    free(m->merges);
    free(m->unk_token);
    free(m->prefix);
    free(m->suffix);
    free(m->whole);
    free(m->bigrams);
    free(m->char_ids);
    memset(m, 0, sizeof *m);
    m->unk_id = -1;
}

void bpe_scratch_free(bpe_scratch *s)
{
    free(s->symbols);
    free(s->heap);
    strbuf_free(&s->piece);
    idvec_free(&s->word);
    word_cache_free(&s->cache);
    memset(s, 0, sizeof *s);
}

/* ------------------------------------------------------------ encoding */

/* The id of the one-character token c (UTF-8 in s[0..len)), or -1. */
static int32_t char_id(const bpe_model *m, const char *s, size_t len)
{
    if (m->char_ids && len <= 2) {
        size_t k = 0;
        return m->char_ids[utf8_next(s, &k)];
    }
    return token_map_get(&m->vocab, s, len);
}

/* The word's initial symbols, as HF's merge_word builds them. */
static int initial_symbols(const bpe_model *m, bpe_scratch *s, const char *w, size_t len,
                           alm_error *err)
{
    idvec *ids = &s->word;
    ids->len = 0;
    int32_t unk_pending = -1; /* the unk id while a run of unknowns is open */
    bool affixes = m->prefix || m->suffix;
    for (size_t i = 0; i < len;) {
        size_t start = i;
        i += utf8_char_len((unsigned char)w[i]);
        const char *piece = w + start;
        size_t piece_len = i - start;
        if (affixes) {
            strbuf_clear(&s->piece);
            if ((start > 0 && m->prefix && strbuf_append(&s->piece, m->prefix, m->prefix_len) < 0) ||
                strbuf_append(&s->piece, piece, piece_len) < 0 ||
                (i == len && m->suffix && strbuf_append(&s->piece, m->suffix, m->suffix_len) < 0))
                return alm_error_set(err, -ENOMEM, "out of memory");
            piece = s->piece.data;
            piece_len = s->piece.len;
        }
        /* With affixes, piece is the affixed string in s->piece. */
        int32_t id = affixes ? token_map_get(&m->vocab, piece, piece_len)
                             : char_id(m, piece, piece_len);
        if (id >= 0) {
            if (unk_pending >= 0 && idvec_push(ids, unk_pending) < 0)
                return alm_error_set(err, -ENOMEM, "out of memory");
            unk_pending = -1;
            if (idvec_push(ids, id) < 0)
                return alm_error_set(err, -ENOMEM, "out of memory");
            continue;
        }
        if (m->byte_fallback) {
            bool all = true;
            for (size_t k = 0; k < piece_len && all; k++)
                all = m->byte_ids[(unsigned char)piece[k]] >= 0;
            if (all) {
                /* HF adds byte tokens without closing an open unk run. */
                for (size_t k = 0; k < piece_len; k++)
                    if (idvec_push(ids, m->byte_ids[(unsigned char)piece[k]]) < 0)
                        return alm_error_set(err, -ENOMEM, "out of memory");
                continue;
            }
        }
        if (m->unk_token) {
            if (m->unk_missing)
                return alm_error_set(err, -EINVAL, "unk token \"%s\" is not in the vocabulary",
                                     m->unk_token);
            if (unk_pending >= 0 && !m->fuse_unk && idvec_push(ids, unk_pending) < 0)
                return alm_error_set(err, -ENOMEM, "out of memory");
            unk_pending = m->unk_id;
        }
        /* Without an unk token, HF drops the character. */
    }
    if (unk_pending >= 0 && idvec_push(ids, unk_pending) < 0)
        return alm_error_set(err, -ENOMEM, "out of memory");
    return 0;
}

static int32_t pair_rank(const bpe_model *m, int32_t a, int32_t b, int32_t *new_id)
{
    const merge_entry *e = merge_find(m, a, b);
    if (!e)
        return NO_RANK;
    *new_id = e->new_id;
    return e->rank;
}

/* Short words: keep the rank of every adjacent pair in an array. */
static void merge_small(const bpe_model *m, int32_t *ids, size_t *count)
{
    size_t n = *count;
    int32_t rank[BPE_SMALL_WORD], merged[BPE_SMALL_WORD];
    for (size_t k = 0; k + 1 < n; k++)
        rank[k] = pair_rank(m, ids[k], ids[k + 1], &merged[k]);
    while (n > 1) {
        size_t best = 0;
        for (size_t k = 1; k + 1 < n; k++)
            if (rank[k] < rank[best])
                best = k;
        if (rank[best] == NO_RANK)
            break;
        ids[best] = merged[best];
        size_t tail = n - best - 2; /* elements after the removed one */
        memmove(ids + best + 1, ids + best + 2, tail * sizeof *ids);
        memmove(rank + best + 1, rank + best + 2, (tail ? tail - 1 : 0) * sizeof *rank);
        memmove(merged + best + 1, merged + best + 2, (tail ? tail - 1 : 0) * sizeof *merged);
        n--;
        if (best > 0)
            rank[best - 1] = pair_rank(m, ids[best - 1], ids[best], &merged[best - 1]);
        if (best + 1 < n)
            rank[best] = pair_rank(m, ids[best], ids[best + 1], &merged[best]);
    }
    *count = n;
}

static bool merge_less(const struct bpe_merge *a, const struct bpe_merge *b)
{
    return a->rank != b->rank ? a->rank < b->rank : a->pos < b->pos;
}

static void heap_push(struct bpe_merge *h, size_t *n, struct bpe_merge x)
{
    size_t i = (*n)++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!merge_less(&x, &h[parent]))
            break;
        h[i] = h[parent];
        i = parent;
    }
    h[i] = x;
}

static struct bpe_merge heap_pop(struct bpe_merge *h, size_t *n)
{
    struct bpe_merge top = h[0], last = h[--(*n)];
    size_t i = 0;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= *n)
            break;
        if (c + 1 < *n && merge_less(&h[c + 1], &h[c]))
            c++;
        if (!merge_less(&h[c], &last))
            break;
        h[i] = h[c];
        i = c;
    }
    if (*n)
        h[i] = last;
    return top;
}

/* Long words: HF's priority-queue algorithm over a linked list. */
static int merge_large(const bpe_model *m, bpe_scratch *s, int32_t *ids, size_t *count,
                       alm_error *err)
{
    size_t n = *count;
    if (n > s->symbols_cap) {
        free(s->symbols);
        free(s->heap);
        s->symbols = malloc(n * sizeof *s->symbols);
        /* Each merge pushes at most two entries and removes one symbol. */
        s->heap = malloc(3 * n * sizeof *s->heap);
        s->symbols_cap = s->heap_cap = 0;
        if (!s->symbols || !s->heap)
            return alm_error_set(err, -ENOMEM, "out of memory");
        s->symbols_cap = n;
        s->heap_cap = 3 * n;
    }
    struct bpe_symbol *sym = s->symbols;
    struct bpe_merge *heap = s->heap;
    size_t hn = 0;
    for (size_t k = 0; k < n; k++)
        sym[k] = (struct bpe_symbol){ ids[k], (int32_t)k - 1, k + 1 < n ? (int32_t)k + 1 : -1,
                                      true };
    for (size_t k = 0; k + 1 < n; k++) {
        int32_t nid, r = pair_rank(m, ids[k], ids[k + 1], &nid);
        if (r != NO_RANK)
            heap_push(heap, &hn, (struct bpe_merge){ r, (int32_t)k, nid });
    }
    while (hn > 0) {
        struct bpe_merge top = heap_pop(heap, &hn);
        struct bpe_symbol *cur = &sym[top.pos];
        if (!cur->alive || cur->next < 0)
            continue;
        struct bpe_symbol *right = &sym[cur->next];
        int32_t nid;
        /* Skip entries made stale by earlier merges. */
        if (pair_rank(m, cur->id, right->id, &nid) == NO_RANK || nid != top.new_id)
            continue;
        cur->id = top.new_id;
        right->alive = false;
        cur->next = right->next;
        if (right->next >= 0)
            sym[right->next].prev = top.pos;
        if (cur->prev >= 0) {
            int32_t r = pair_rank(m, sym[cur->prev].id, cur->id, &nid);
            if (r != NO_RANK)
                heap_push(heap, &hn, (struct bpe_merge){ r, cur->prev, nid });
        }
        if (cur->next >= 0) {
            int32_t r = pair_rank(m, cur->id, sym[cur->next].id, &nid);
            if (r != NO_RANK)
                heap_push(heap, &hn, (struct bpe_merge){ r, top.pos, nid });
        }
    }
    size_t out = 0;
    for (size_t k = 0; k < n; k++)
        if (sym[k].alive)
            ids[out++] = sym[k].id;
    *count = out;
    return 0;
}

/* Merges the initial symbols in s->word; *n gets the final count. */
static int merge_word(const bpe_model *m, bpe_scratch *s, size_t *n, alm_error *err)
{
    *n = s->word.len;
    if (*n <= BPE_SMALL_WORD) {
        merge_small(m, s->word.data, n);
        return 0;
    }
    return merge_large(m, s, s->word.data, n, err);
}

static int find_whole_tokens(bpe_model *m, alm_error *err)
{
    m->whole = calloc(m->n_ids ? (size_t)m->n_ids : 1, sizeof *m->whole);
    if (!m->whole)
        return alm_error_set(err, -ENOMEM, "out of memory");
    /* With affixes a word is not spelled like its token: no shortcut. */
    if (m->prefix || m->suffix)
        return 0;
    bpe_scratch s = { 0 };
    int r = 0;
    for (int32_t id = 0; id < m->n_ids && r == 0; id++) {
        size_t len, n;
        const char *w = bpe_token(m, id, &len);
        if (!w || len == 0 || token_map_get(&m->vocab, w, len) != id)
            continue;
        if ((r = initial_symbols(m, &s, w, len, err)) == 0 &&
            (r = merge_word(m, &s, &n, err)) == 0)
            m->whole[id] = n == 1 && s.word.data[0] == id;
    }
    bpe_scratch_free(&s);
    /* A token whose characters are unknown (no unk, no bytes) only fails
     * here; such words simply take the slow path. */
    if (r < 0 && err)
        err->code = 0;
    return 0;
}

/* BPE of one word or one independent part of a word. ignore_merges
 * applies to whole words only. */
static int encode_part(const bpe_model *m, bpe_scratch *s, const char *w, size_t len,
                       bool whole_word, idvec *out, alm_error *err)
{
    uint64_t h = hash_bytes(w, len);
    int32_t id = token_map_get_hashed(&m->vocab, w, len, h);
    /* ignore_merges (Llama 3): a word that is a token is emitted whole. */
    if (id >= 0 && ((whole_word && m->ignore_merges) || m->whole[id]))
        return idvec_push(out, id) < 0 ? alm_error_set(err, -ENOMEM, "out of memory") : 0;
    bool cacheable = len <= WORD_CACHE_MAX_WORD;
    if (cacheable) {
        const int32_t *ids;
        size_t n;
        if (word_cache_get(&s->cache, w, len, h, &ids, &n))
            return idvec_append(out, ids, n) < 0 ? alm_error_set(err, -ENOMEM, "out of memory")
                                                 : 0;
    }
    size_t n;
    int r = initial_symbols(m, s, w, len, err);
    if (r < 0 || (r = merge_word(m, s, &n, err)) < 0)
        return r;
    if (idvec_append(out, s->word.data, n) < 0 ||
        (cacheable && word_cache_put(&s->cache, w, len, h, s->word.data, n) < 0))
        return alm_error_set(err, -ENOMEM, "out of memory");
    return 0;
}

static bool bigram_known(const bpe_model *m, uint32_t a, uint32_t b)
{
    uint64_t key = ((uint64_t)a << 32) | b;
    for (size_t i = hash_mix(key) & m->bigram_mask;; i = (i + 1) & m->bigram_mask) {
        if (m->bigrams[i] == key)
            return true;
        if (m->bigrams[i] == UINT64_MAX)
            return false;
    }
}

static int collect_bigrams(bpe_model *m, alm_error *err)
{
    if (m->prefix || m->suffix)
        return 0; /* merged tokens then drop the prefix: keep it simple */
    size_t chars = 0;
    for (int32_t id = 0; id < m->n_ids; id++)
        if (m->offset[id] != UINT32_MAX)
            chars += m->length[id];
    size_t slots = 16;
    while (slots < chars * 2 + 1)
        slots *= 2;
    m->bigrams = malloc(slots * sizeof *m->bigrams);
    if (!m->bigrams)
        return alm_error_set(err, -ENOMEM, "out of memory");
    for (size_t i = 0; i < slots; i++)
        m->bigrams[i] = UINT64_MAX;
    m->bigram_mask = slots - 1;
    for (int32_t id = 0; id < m->n_ids; id++) {
        size_t len;
        const char *t = bpe_token(m, id, &len);
        if (!t || !utf8_validate(t, len))
            continue;
        size_t i = 0;
        uint32_t prev = len ? utf8_next(t, &i) : 0;
        while (i < len) {
            uint32_t c = utf8_next(t, &i);
            uint64_t key = ((uint64_t)prev << 32) | c;
            size_t k = hash_mix(key) & m->bigram_mask;
            while (m->bigrams[k] != UINT64_MAX && m->bigrams[k] != key)
                k = (k + 1) & m->bigram_mask;
            m->bigrams[k] = key;
            prev = c;
        }
    }
    return 0;
}

int bpe_encode_word(const bpe_model *m, bpe_scratch *s, const char *w, size_t len, idvec *out,
                    alm_error *err)
{
    if (len == 0)
        return 0;
    if (len <= WORD_CACHE_MAX_WORD || !m->bigrams)
        return encode_part(m, s, w, len, true, out, err);
    if (m->ignore_merges) {
        int32_t id = token_map_get(&m->vocab, w, len);
        if (id >= 0)
            return idvec_push(out, id) < 0 ? alm_error_set(err, -ENOMEM, "out of memory") : 0;
    }
    /* Cut between two characters that are tokens themselves (so no unk
     * run or byte fallback spans the cut) and that no token holds side by
     * side: no merge can ever cross there. */
    size_t start = 0, i = 0;
    uint32_t prev = 0;
    bool prev_known = false;
    while (i < len) {
        size_t at = i;
        uint32_t c = utf8_next(w, &i);
        bool known = char_id(m, w + at, i - at) >= 0;
        if (at > start && prev_known && known && !bigram_known(m, prev, c)) {
            int r = encode_part(m, s, w + start, at - start, false, out, err);
            if (r < 0)
                return r;
            start = at;
        }
        prev = c;
        prev_known = known;
    }
    return encode_part(m, s, w + start, len - start, false, out, err);
}
