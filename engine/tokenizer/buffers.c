#include "tokenizer/buffers.h"

#include <errno.h>
#include <stdlib.h>

/* Grows a capacity geometrically so that appends are amortised O(1). */
static int grow(void **data, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap)
        return 0;
    size_t n = *cap ? *cap : 16;
    while (n < need) {
        if (n > SIZE_MAX / 2 / elem)
            return -ENOMEM;
        n *= 2;
    }
    void *p = realloc(*data, n * elem);
    if (!p)
        return -ENOMEM;
    *data = p;
    *cap = n;
    return 0;
}

int strbuf_reserve(strbuf *b, size_t extra)
{
    if (extra > SIZE_MAX - b->len - 1)
        return -ENOMEM;
    void *p = b->data;
    int r = grow(&p, &b->cap, b->len + extra + 1, 1);
    b->data = p;
    return r;
}

int strbuf_append(strbuf *b, const void *p, size_t n)
{
    int r = strbuf_reserve(b, n);
    if (r < 0)
        return r;
    if (n)
        memcpy(b->data + b->len, p, n);
    b->len += n;
    b->data[b->len] = '\0';
    return 0;
}

void strbuf_free(strbuf *b)
{
    free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
}

char *strbuf_steal(strbuf *b)
{
    if (!b->data && strbuf_reserve(b, 0) < 0)
        return NULL;
    b->data[b->len] = '\0';
    char *s = b->data;
    b->data = NULL;
    b->len = b->cap = 0;
    return s;
}

int idvec_reserve(idvec *v, size_t extra)
{
    if (extra > SIZE_MAX / sizeof(int32_t) - v->len)
        return -ENOMEM;
    void *p = v->data;
    int r = grow(&p, &v->cap, v->len + extra, sizeof(int32_t));
    v->data = p;
    return r;
}

int idvec_append(idvec *v, const int32_t *ids, size_t n)
{
    int r = idvec_reserve(v, n);
    if (r < 0)
        return r;
    if (n)
        memcpy(v->data + v->len, ids, n * sizeof *ids);
    v->len += n;
    return 0;
}

void idvec_free(idvec *v)
{
    free(v->data);
    v->data = NULL;
    v->len = v->cap = 0;
}
