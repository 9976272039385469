/* Growable byte and id buffers used throughout the tokenizer. Every append
 * returns 0 or -ENOMEM; a byte buffer always keeps a NUL after its data so
 * that it can be handed out as a C string. */
#ifndef ALM_TOKENIZER_BUFFERS_H
#define ALM_TOKENIZER_BUFFERS_H

#include <stddef.h>
#include <stdint.h>
#include <string.h>

typedef struct strbuf {
    char *data;
    size_t len;
    size_t cap;
} strbuf;

typedef struct idvec {
    int32_t *data;
    size_t len;
    size_t cap;
} idvec;

/* Makes room for `extra` more bytes plus the terminating NUL. */
int strbuf_reserve(strbuf *b, size_t extra);
int strbuf_append(strbuf *b, const void *p, size_t n);
void strbuf_free(strbuf *b);
/* Hands the data out as a malloc'ed C string (an empty one when nothing was
 * appended) and leaves the buffer empty. NULL only when out of memory. */
char *strbuf_steal(strbuf *b);

static inline void strbuf_clear(strbuf *b)
{
    b->len = 0;
    if (b->data)
        b->data[0] = '\0';
}

static inline int strbuf_putc(strbuf *b, char c)
{
    if (b->len + 2 > b->cap) {
        int r = strbuf_reserve(b, 1);
        if (r < 0)
            return r;
    }
    b->data[b->len++] = c;
    b->data[b->len] = '\0';
    return 0;
}

int idvec_reserve(idvec *v, size_t extra);
int idvec_append(idvec *v, const int32_t *ids, size_t n);
void idvec_free(idvec *v);

static inline int idvec_push(idvec *v, int32_t id)
{
    if (v->len == v->cap) {
        int r = idvec_reserve(v, 1);
        if (r < 0)
            return r;
    }
    v->data[v->len++] = id;
    return 0;
}

#endif
