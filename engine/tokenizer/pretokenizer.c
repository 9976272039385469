#include "tokenizer/pretokenizer.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "tokenizer/json_util.h"
#include "tokenizer/utf8.h"

/* The regex GPT-2 (and ByteLevel with use_regex) splits words with. */
static const char gpt2_regex[] =
    "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^\\s\\p{L}\\p{N}]+|\\s+(?!\\S)|\\s+";

typedef struct span {
    size_t start, end;
    bool flag; /* is_match while collecting, then unused */
} span;

struct span_list {
    span *items;
    size_t len, cap;
};

static int spans_push(struct span_list *l, size_t start, size_t end, bool flag)
{
    if (l->len == l->cap) {
        size_t cap = l->cap ? l->cap * 2 : 64;
        span *p = realloc(l->items, cap * sizeof *p);
        if (!p)
            return -ENOMEM;
        l->items = p;
        l->cap = cap;
    }
    l->items[l->len++] = (span){ start, end, flag };
    return 0;
}

/* ------------------------------------------------------------ parsing */

static int add_step(pretokenizer *p, const pre_step *s)
{
    pre_step *n = realloc(p->steps, (p->n + 1) * sizeof *n);
    if (!n)
        return -ENOMEM;
    p->steps = n;
    p->steps[p->n++] = *s;
    return 0;
}

static int parse_behavior(const char *name, split_behavior *out)
{
    static const struct {
        const char *name;
        split_behavior b;
    } table[] = {
        { "Removed", SPLIT_REMOVED },
        { "Isolated", SPLIT_ISOLATED },
        { "MergedWithPrevious", SPLIT_MERGED_WITH_PREVIOUS },
        { "MergedWithNext", SPLIT_MERGED_WITH_NEXT },
        { "Contiguous", SPLIT_CONTIGUOUS },
    };
    for (size_t i = 0; i < sizeof table / sizeof table[0]; i++)
        if (strcmp(table[i].name, name) == 0) {
            *out = table[i].b;
            return 0;
        }
    return -EINVAL;
}

static int parse_metaspace(JsonObject *o, pre_step *s, const char *where, alm_error *err)
{
    const char *rep, *scheme;
    int r;
    if ((r = json_get_string(o, "replacement", true, &rep, where, err)) < 0)
        return r;
    size_t len = strlen(rep);
    if (len == 0 || len > 4 || utf8_count_chars(rep, len) != 1)
        return alm_error_set(err, -EINVAL, "%s: Metaspace replacement must be one character",
                             where);
    memcpy(s->replacement, rep, len);
    s->replacement_len = len;
    if ((r = json_get_bool(o, "split", true, &s->split, where, err)) < 0 ||
        (r = json_get_string(o, "prepend_scheme", false, &scheme, where, err)) < 0)
        return r;
    if (scheme) {
        if (strcmp(scheme, "always") == 0)
            s->scheme = PREPEND_ALWAYS;
        else if (strcmp(scheme, "first") == 0)
            s->scheme = PREPEND_FIRST;
        else if (strcmp(scheme, "never") == 0)
            s->scheme = PREPEND_NEVER;
        else
            return alm_error_set(err, -EINVAL, "%s: unknown Metaspace prepend_scheme '%s'", where,
                                 scheme);
    } else {
        /* Files written before prepend_scheme existed say add_prefix_space. */
        bool add;
        if ((r = json_get_bool(o, "add_prefix_space", true, &add, where, err)) < 0)
            return r;
        s->scheme = add ? PREPEND_ALWAYS : PREPEND_NEVER;
    }
    return pattern_init_literal(&s->pattern, s->replacement, s->replacement_len) < 0
               ? alm_error_set(err, -ENOMEM, "out of memory")
               : 0;
}

static int regex_step(pre_step *s, const char *regex, split_behavior b, bool invert,
                      alm_error *err)
{
    s->kind = PRE_SPLIT;
    s->behavior = b;
    s->invert = invert;
    return pattern_init_regex(&s->pattern, regex, strlen(regex), err);
}

static int parse_one(void *ctx, JsonNode *node, const char *where, int depth, alm_error *err)
{
    pretokenizer *p = ctx;
    JsonObject *o;
    const char *type;
    int r = json_component_head(node, "a pre-tokenizer", "pretokenizers", depth, where, parse_one, ctx, &o,
                                &type, err);
    if (r != 0)
        return r < 0 ? r : 0;

    pre_step s = { 0 };
    if (strcmp(type, "Split") == 0) {
        const char *behavior;
        s.kind = PRE_SPLIT;
        if ((r = json_get_string(o, "behavior", true, &behavior, where, err)) < 0 ||
            (r = json_get_bool(o, "invert", false, &s.invert, where, err)) < 0)
            return r;
        if (parse_behavior(behavior, &s.behavior) < 0)
            return alm_error_set(err, -EINVAL, "%s: unknown Split behavior '%s'", where,
                                 behavior);
        if ((r = pattern_from_json(&s.pattern, json_member(o, "pattern"), where, err)) < 0)
            return r;
    } else if (strcmp(type, "ByteLevel") == 0) {
        s.kind = PRE_BYTE_LEVEL;
        if ((r = json_get_bool(o, "add_prefix_space", true, &s.add_prefix_space, where, err)) <
                0 ||
            (r = json_get_bool(o, "use_regex", true, &s.use_regex, where, err)) < 0)
            return r;
        if (s.use_regex &&
            (r = pattern_init_regex(&s.pattern, gpt2_regex, strlen(gpt2_regex), err)) < 0)
            return r;
    } else if (strcmp(type, "Metaspace") == 0) {
        s.kind = PRE_METASPACE;
        if ((r = parse_metaspace(o, &s, where, err)) < 0) {
            pattern_free(&s.pattern);
            return r;
        }
    } else if (strcmp(type, "Digits") == 0) {
        /* char::is_numeric per character; runs kept together unless asked. */
        bool individual;
        if ((r = json_get_bool(o, "individual_digits", false, &individual, where, err)) < 0 ||
            (r = regex_step(&s, "\\p{N}", individual ? SPLIT_ISOLATED : SPLIT_CONTIGUOUS, false,
                            err)) < 0)
            return r;
    } else if (strcmp(type, "Whitespace") == 0) {
        if ((r = regex_step(&s, "\\w+|[^\\w\\s]+", SPLIT_REMOVED, true, err)) < 0)
            return r;
    } else if (strcmp(type, "WhitespaceSplit") == 0) {
        if ((r = regex_step(&s, "\\s", SPLIT_REMOVED, false, err)) < 0)
            return r;
    } else {
        return alm_error_set(err, -ENOTSUP, "%s: pre-tokenizer type '%s' is not supported",
                             where, type);
    }
    if (add_step(p, &s) < 0) {
        pattern_free(&s.pattern);
        return alm_error_set(err, -ENOMEM, "out of memory");
    }
    return 0;
}

int pretokenizer_from_json(pretokenizer *p, JsonNode *node, const char *where, alm_error *err)
{
    memset(p, 0, sizeof *p);
    byte_level_alphabet_init(&p->alphabet);
    if (!node || JSON_NODE_HOLDS_NULL(node))
        return 0;
    int r = parse_one(p, node, where, 0, err);
    if (r < 0)
        pretokenizer_free(p);
    return r;
}

void pretokenizer_free(pretokenizer *p)
{
    for (size_t i = 0; i < p->n; i++)
        pattern_free(&p->steps[i].pattern);
    free(p->steps);
    p->steps = NULL;
    p->n = 0;
}

int pretok_scratch_init(pretok_scratch *s, const pretokenizer *p, match_ctx *m)
{
    /* A ByteLevel with use_regex splits before mapping: one extra level. */
    s->depth = p->n * 2 + 1;
    s->m = m;
    s->bufs = calloc(s->depth, sizeof *s->bufs);
    s->spans = calloc(s->depth, sizeof *s->spans);
    if (!s->bufs || !s->spans) {
        pretok_scratch_free(s);
        return -ENOMEM;
    }
    return 0;
}

void pretok_scratch_free(pretok_scratch *s)
{
    for (size_t i = 0; s->bufs && i < s->depth; i++)
        strbuf_free(&s->bufs[i]);
    for (size_t i = 0; s->spans && i < s->depth; i++)
        free(s->spans[i].items);
    free(s->bufs);
    free(s->spans);
    memset(s, 0, sizeof *s);
}

/* ------------------------------------------------------------ running */

typedef struct run_ctx {
    const pretokenizer *p;
    pretok_scratch *scratch;
    pretok_sink sink;
    void *sink_ctx;
    alm_error *err;
} run_ctx;

static int run_from(run_ctx *c, size_t step, size_t level, const char *s, size_t len,
                    bool at_start);

/* Sends a piece on to the stage after `step`; empty pieces are dropped, as
 * HF's PreTokenizedString::split drops them. */
static int emit(run_ctx *c, size_t step, size_t level, const char *s, size_t len, bool at_start)
{
    if (len == 0)
        return 0;
    return run_from(c, step + 1, level + 1, s, len, at_start);
}

/* Collects (start, end, is_match) pieces covering s, as HF's find_matches. */
static int collect_matches(run_ctx *c, const tok_pattern *pat, bool invert, const char *s,
                           size_t len, struct span_list *out)
{
    out->len = 0;
    pattern_iter it;
    pattern_iter_init(&it, pat, c->scratch->m, s, len);
    size_t prev = 0, a, b;
    int r;
    while ((r = pattern_iter_next(&it, &a, &b, c->err)) == 1) {
        if (prev != a && spans_push(out, prev, a, invert) < 0)
            return alm_error_set(c->err, -ENOMEM, "out of memory");
        if (spans_push(out, a, b, !invert) < 0)
            return alm_error_set(c->err, -ENOMEM, "out of memory");
        prev = b;
    }
    if (r < 0)
        return r;
    if (prev != len && spans_push(out, prev, len, invert) < 0)
        return alm_error_set(c->err, -ENOMEM, "out of memory");
    return 0;
}

/* Rewrites the collected pieces in place by behavior; marks removed ones. */
static void apply_behavior(split_behavior b, struct span_list *l)
{
    size_t n = 0;
    bool prev_match = false;
    switch (b) {
    case SPLIT_ISOLATED:
        for (size_t i = 0; i < l->len; i++)
            l->items[i].flag = false;
        return;
    case SPLIT_REMOVED: /* flag = is_match = remove */
        return;
    case SPLIT_CONTIGUOUS:
        for (size_t i = 0; i < l->len; i++) {
            bool m = l->items[i].flag;
            if (n > 0 && m == prev_match)
                l->items[n - 1].end = l->items[i].end;
            else
                l->items[n++] = (span){ l->items[i].start, l->items[i].end, false };
            prev_match = m;
        }
        break;
    case SPLIT_MERGED_WITH_PREVIOUS:
        for (size_t i = 0; i < l->len; i++) {
            bool m = l->items[i].flag;
            if (n > 0 && m && !prev_match)
                l->items[n - 1].end = l->items[i].end;
            else
                l->items[n++] = (span){ l->items[i].start, l->items[i].end, false };
            prev_match = m;
        }
        break;
    case SPLIT_MERGED_WITH_NEXT:
        /* Walk backwards: a match joins the piece that follows it. */
        for (size_t k = l->len; k-- > 0;) {
            bool m = l->items[k].flag;
            span cur = l->items[k];
            if (n > 0 && m && !prev_match)
                l->items[l->len - n].start = cur.start;
            else {
                n++;
                l->items[l->len - n] = (span){ cur.start, cur.end, false };
            }
            prev_match = m;
        }
        memmove(l->items, l->items + (l->len - n), n * sizeof *l->items);
        break;
    }
    l->len = n;
}

static int run_split(run_ctx *c, size_t step, size_t level, const tok_pattern *pat,
                     split_behavior b, bool invert, const char *s, size_t len, bool at_start)
{
    int r;
    if (b == SPLIT_ISOLATED) {
        /* Every match and every gap is a piece: stream them as found. */
        pattern_iter it;
        pattern_iter_init(&it, pat, c->scratch->m, s, len);
        size_t prev = 0, a, e;
        while ((r = pattern_iter_next(&it, &a, &e, c->err)) == 1) {
            if ((r = emit(c, step, level, s + prev, a - prev, at_start && prev == 0)) < 0 ||
                (r = emit(c, step, level, s + a, e - a, at_start && a == 0)) < 0)
                return r;
            prev = e;
        }
        if (r < 0)
            return r;
        return emit(c, step, level, s + prev, len - prev, at_start && prev == 0);
    }
    struct span_list *l = &c->scratch->spans[level];
    if ((r = collect_matches(c, pat, invert, s, len, l)) < 0)
        return r;
    apply_behavior(b, l);
    /* Deeper stages use deeper span lists, so l stays valid while we emit. */
    for (size_t i = 0; i < l->len; i++) {
        span sp = l->items[i];
        if (sp.flag)
            continue;
        if ((r = emit(c, step, level, s + sp.start, sp.end - sp.start,
                      at_start && sp.start == 0)) < 0)
            return r;
    }
    return 0;
}

static int run_byte_level(run_ctx *c, size_t step, size_t level, const pre_step *st,
                          const char *s, size_t len, bool at_start, bool split_done)
{
    strbuf *buf = &c->scratch->bufs[level];
    int r;
    if (!split_done) {
        const char *src = s;
        size_t src_len = len;
        if (st->add_prefix_space && (len == 0 || s[0] != ' ')) {
            strbuf_clear(buf);
            if (strbuf_putc(buf, ' ') < 0 || strbuf_append(buf, s, len) < 0)
                return alm_error_set(c->err, -ENOMEM, "out of memory");
            src = buf->data;
            src_len = buf->len;
        }
        if (st->use_regex) {
            /* Split first (one level down), then map each piece. */
            pattern_iter it;
            pattern_iter_init(&it, &st->pattern, c->scratch->m, src, src_len);
            size_t prev = 0, a, e;
            while ((r = pattern_iter_next(&it, &a, &e, c->err)) == 1) {
                if (a > prev && (r = run_byte_level(c, step, level + 1, st, src + prev, a - prev,
                                                    at_start && prev == 0, true)) < 0)
                    return r;
                if (e > a && (r = run_byte_level(c, step, level + 1, st, src + a, e - a,
                                                 at_start && a == 0, true)) < 0)
                    return r;
                prev = e;
            }
            if (r < 0)
                return r;
            if (src_len > prev)
                return run_byte_level(c, step, level + 1, st, src + prev, src_len - prev,
                                      at_start && prev == 0, true);
            return 0;
        }
        s = src;
        len = src_len;
        level++;
        buf = &c->scratch->bufs[level];
    }
    /* Map every byte to its alphabet character (1 or 2 UTF-8 bytes). */
    strbuf_clear(buf);
    if (strbuf_reserve(buf, len * 2) < 0)
        return alm_error_set(c->err, -ENOMEM, "out of memory");
    const byte_level_alphabet *al = &c->p->alphabet;
    char *o = buf->data;
    for (size_t i = 0; i < len; i++) {
        unsigned char b = (unsigned char)s[i];
        o[0] = al->utf8[b][0];
        o[1] = al->utf8[b][1];
        o += al->utf8_len[b];
    }
    buf->len = (size_t)(o - buf->data);
    buf->data[buf->len] = '\0';
    return emit(c, step, level, buf->data, buf->len, at_start);
}

static int run_metaspace(run_ctx *c, size_t step, size_t level, const pre_step *st,
                         const char *s, size_t len, bool at_start)
{
    strbuf *buf = &c->scratch->bufs[level];
    strbuf_clear(buf);
    int r = 0;
    bool starts = len >= st->replacement_len && memcmp(s, st->replacement, st->replacement_len) == 0;
    /* Spaces become the replacement first, so a leading space counts. */
    bool prepend = st->scheme == PREPEND_ALWAYS || (st->scheme == PREPEND_FIRST && at_start);
    if (prepend && !starts && !(len > 0 && s[0] == ' '))
        r = strbuf_append(buf, st->replacement, st->replacement_len);
    for (size_t i = 0; i < len && r == 0; i++)
        r = s[i] == ' ' ? strbuf_append(buf, st->replacement, st->replacement_len)
                        : strbuf_putc(buf, s[i]);
    if (r < 0)
        return alm_error_set(c->err, -ENOMEM, "out of memory");
    if (!st->split)
        return emit(c, step, level, buf->data, buf->len, at_start);
    /* Deeper levels must not reuse this buffer while we split it. */
    return run_split(c, step, level + 1, &st->pattern, SPLIT_MERGED_WITH_NEXT, false, buf->data,
                     buf->len, at_start);
}

static int run_from(run_ctx *c, size_t step, size_t level, const char *s, size_t len,
                    bool at_start)
{
    if (step == c->p->n)
        return c->sink(c->sink_ctx, s, len, c->err);
    const pre_step *st = &c->p->steps[step];
    switch (st->kind) {
    case PRE_SPLIT:
        return run_split(c, step, level, &st->pattern, st->behavior, st->invert, s, len,
                         at_start);
    case PRE_BYTE_LEVEL:
        return run_byte_level(c, step, level, st, s, len, at_start, false);
    case PRE_METASPACE:
        return run_metaspace(c, step, level, st, s, len, at_start);
    }
    return alm_error_set(c->err, -EINVAL, "corrupt pre-tokenizer");
}

int pretokenizer_run(const pretokenizer *p, pretok_scratch *scratch, const char *s, size_t len,
                     bool at_start, pretok_sink sink, void *ctx, alm_error *err)
{
    if (len == 0)
        return 0;
    run_ctx c = { p, scratch, sink, ctx, err };
    return run_from(&c, 0, 0, s, len, at_start);
}
