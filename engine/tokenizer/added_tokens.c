#include "tokenizer/added_tokens.h"

#include <errno.h>
#include <glib.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "tokenizer/json_util.h"
#include "tokenizer/utf8.h"

int added_vocab_from_json(added_vocab *v, JsonArray *list, const char *where, alm_error *err)
{
    memset(v, 0, sizeof *v);
    guint n = list ? json_array_get_length(list) : 0;
    if (n == 0)
        return 0;
    v->tokens = calloc(n, sizeof *v->tokens);
    if (!v->tokens)
        return alm_error_set(err, -ENOMEM, "out of memory");
    int r = 0;
    for (guint i = 0; i < n; i++) {
        JsonNode *node = json_array_get_element(list, i);
        if (!JSON_NODE_HOLDS_OBJECT(node)) {
            r = alm_error_set(err, -EINVAL, "%s: added_tokens[%u] must be an object", where, i);
            break;
        }
        JsonObject *o = json_node_get_object(node);
        added_token *t = &v->tokens[v->n];
        const char *content;
        uint64_t id;
        if ((r = json_get_uint(o, "id", UINT64_MAX, &id, where, err)) < 0 ||
            (r = json_get_string(o, "content", true, &content, where, err)) < 0 ||
            (r = json_get_bool(o, "special", false, &t->special, where, err)) < 0 ||
            (r = json_get_bool(o, "single_word", false, &t->single_word, where, err)) < 0 ||
            (r = json_get_bool(o, "lstrip", false, &t->lstrip, where, err)) < 0 ||
            (r = json_get_bool(o, "rstrip", false, &t->rstrip, where, err)) < 0 ||
            (r = json_get_bool(o, "normalized", !t->special, &t->normalized, where, err)) < 0)
            break;
        if (id >= (1u << 24)) {
            r = alm_error_set(err, -EINVAL, "%s: added_tokens[%u] needs an \"id\" below 2^24",
                              where, i);
            break;
        }
        t->id = (int32_t)id;
        t->len = strlen(content);
        if (!(t->content = strdup(content))) {
            r = alm_error_set(err, -ENOMEM, "out of memory");
            break;
        }
        v->n++;
    }
    if (r < 0)
        added_vocab_free(v);
    return r;
}

static int cmp_order(const void *a, const void *b, void *data)
{
    const added_token *t = data;
    const added_token *x = &t[*(const uint32_t *)a], *y = &t[*(const uint32_t *)b];
    unsigned char fx = (unsigned char)x->match[0], fy = (unsigned char)y->match[0];
    if (fx != fy)
        return fx < fy ? -1 : 1;
    if (x->match_len != y->match_len)
        return x->match_len > y->match_len ? -1 : 1;
    /* Same text twice: the earlier entry wins, as in HF's trie. */
    return *(const uint32_t *)a < *(const uint32_t *)b ? -1 : 1;
}

static int build_matcher(added_vocab *v, added_matcher *m, bool normalized)
{
    memset(m, 0, sizeof *m);
    m->order = malloc((v->n ? v->n : 1) * sizeof *m->order);
    if (!m->order)
        return -ENOMEM;
    for (size_t i = 0; i < v->n; i++)
        if (v->tokens[i].normalized == normalized && v->tokens[i].match_len > 0 &&
            !v->tokens[i].disabled)
            m->order[m->n++] = (uint32_t)i;
    g_qsort_with_data(m->order, (gint)m->n, sizeof *m->order, cmp_order, v->tokens);
    size_t k = 0;
    for (unsigned b = 0; b < 256; b++) {
        m->bucket[b] = (uint32_t)k;
        while (k < m->n && (unsigned char)v->tokens[m->order[k]].match[0] == b)
            k++;
    }
    m->bucket[256] = (uint32_t)k;
    return 0;
}

static void assign_ids(added_vocab *v, const token_map *vocab, size_t vocab_count)
{
    int64_t max_id = -1;
    for (size_t i = 0; i < v->n; i++) {
        added_token *t = &v->tokens[i];
        if (t->len == 0) {
            t->disabled = true; /* HF ignores empty tokens */
            continue;
        }
        int32_t id = -1;
        for (size_t k = 0; k < i && id < 0; k++)
            if (!v->tokens[k].disabled && v->tokens[k].len == t->len &&
                memcmp(v->tokens[k].content, t->content, t->len) == 0) {
                /* The same content again: the later entry replaces it. */
                id = v->tokens[k].id;
                v->tokens[k].disabled = true;
            }
        if (id < 0)
            id = token_map_get(vocab, t->content, t->len);
        if (id < 0)
            id = max_id >= (int64_t)vocab_count || vocab_count == 0 ? (int32_t)(max_id + 1)
                                                                   : (int32_t)vocab_count;
        t->id = id;
        if (id > max_id)
            max_id = id;
    }
}

int added_vocab_build(added_vocab *v, const normalizer *norm, const token_map *vocab,
                      size_t vocab_count, alm_error *err)
{
    assign_ids(v, vocab, vocab_count);
    bool single_word = false;
    for (size_t i = 0; i < v->n; i++)
        single_word |= v->tokens[i].single_word && !v->tokens[i].disabled;
    int r0;
    if (single_word && (r0 = pattern_init_regex(&v->word_char, "\\w", 2, err)) < 0)
        return r0;
    match_ctx m = { 0 };
    strbuf out = { 0 }, tmp = { 0 };
    int r = 0;
    for (size_t i = 0; i < v->n && r == 0; i++) {
        added_token *t = &v->tokens[i];
        if (!t->normalized || norm->n == 0) {
            t->match = t->content;
            t->match_len = t->len;
            continue;
        }
        if ((r = normalizer_apply(norm, &m, t->content, t->len, &out, &tmp, err)) < 0)
            break;
        t->match_len = out.len;
        t->match = strbuf_steal(&out);
        if (!t->match)
            r = alm_error_set(err, -ENOMEM, "out of memory");
    }
    strbuf_free(&out);
    strbuf_free(&tmp);
    match_ctx_free(&m);
    if (r < 0)
        return r;
    if (build_matcher(v, &v->raw, false) < 0 || build_matcher(v, &v->normalized, true) < 0)
        return alm_error_set(err, -ENOMEM, "out of memory");
    return 0;
}

void added_vocab_free(added_vocab *v)
{
    for (size_t i = 0; i < v->n; i++) {
        if (v->tokens[i].match != v->tokens[i].content)
            free(v->tokens[i].match);
        free(v->tokens[i].content);
    }
    free(v->tokens);
    free(v->raw.order);
    free(v->normalized.order);
    pattern_free(&v->word_char);
    memset(v, 0, sizeof *v);
}

int32_t added_vocab_find_content(const added_vocab *v, const char *s, size_t len)
{
    for (size_t i = 0; i < v->n; i++)
        if (!v->tokens[i].disabled && v->tokens[i].len == len &&
            memcmp(v->tokens[i].content, s, len) == 0)
            return v->tokens[i].id;
    return -1;
}

/* ------------------------------------------------------------ splitting */

/* Whether the one character s[0..len) is \w (Rust's regex crate: HF tests
 * single_word tokens with \w$ and ^\w). */
static int is_word_char(const added_vocab *v, match_ctx *m, const char *s, size_t len,
                        alm_error *err)
{
    size_t a, b;
    return pattern_find(&v->word_char, m, s, len, 0, &a, &b, err);
}

static int ends_with_word(const added_vocab *v, match_ctx *m, const char *s, size_t len,
                          alm_error *err)
{
    if (len == 0)
        return 0;
    size_t start = len - 1;
    while (start > 0 && ((unsigned char)s[start] & 0xC0) == 0x80)
        start--;
    return is_word_char(v, m, s + start, len - start, err);
}

static int starts_with_word(const added_vocab *v, match_ctx *m, const char *s, size_t len,
                            alm_error *err)
{
    return len > 0 ? is_word_char(v, m, s, utf8_char_len((unsigned char)s[0]), err) : 0;
}

/* Finds the leftmost-longest match at or after `from`. */
static const added_token *find_match(const added_vocab *v, const added_matcher *m, const char *s,
                                     size_t len, size_t from, size_t *at)
{
    for (size_t i = from; i < len; i++) {
        unsigned char b = (unsigned char)s[i];
        for (uint32_t k = m->bucket[b]; k < m->bucket[b + 1]; k++) {
            const added_token *t = &v->tokens[m->order[k]];
            if (t->match_len <= len - i && memcmp(s + i, t->match, t->match_len) == 0) {
                *at = i;
                return t;
            }
        }
    }
    return NULL;
}

int added_vocab_split(const added_vocab *v, bool normalized_set, match_ctx *mc, const char *s,
                      size_t len, added_segment_fn fn, void *ctx, alm_error *err)
{
    const added_matcher *m = normalized_set ? &v->normalized : &v->raw;
    if (m->n == 0 || len == 0)
        return fn(ctx, s, len, 0, -1, err);
    size_t done = 0; /* end of the last emitted segment */
    size_t search = 0, start;
    const added_token *t;
    int r;
    while (search < len && (t = find_match(v, m, s, len, search, &start))) {
        size_t stop = start + t->match_len;
        /* The search goes on after the match, as HF's find_iter does, even
         * when the match is then discarded. */
        search = stop;
        if (t->single_word) {
            int before = ends_with_word(v, mc, s, start, err);
            int after = before == 0 ? starts_with_word(v, mc, s + stop, len - stop, err) : 0;
            if (before < 0 || after < 0)
                return before < 0 ? before : after;
            if (before || after)
                continue;
        }
        if (t->lstrip) {
            size_t a = start;
            while (a > 0) {
                size_t c = a - 1;
                while (c > 0 && ((unsigned char)s[c] & 0xC0) == 0x80)
                    c--;
                size_t j = c;
                if (!unicode_is_white_space(utf8_next(s, &j)))
                    break;
                a = c;
            }
            start = a > done ? a : done;
        }
        if (t->rstrip) {
            while (stop < len) {
                size_t j = stop;
                if (!unicode_is_white_space(utf8_next(s, &j)))
                    break;
                stop = j;
            }
        }
        if (done < start && (r = fn(ctx, s + done, start - done, done, -1, err)) < 0)
            return r;
        if ((r = fn(ctx, s + start, stop - start, start, t->id, err)) < 0)
            return r;
        done = stop;
    }
    if (done < len && (r = fn(ctx, s + done, len - done, done, -1, err)) < 0)
        return r;
    return 0;
}
