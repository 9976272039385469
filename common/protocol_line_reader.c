/* Bytes from a stream socket into newline-terminated lines, with a bound on
 * the length of a line so that one client cannot make the daemon buffer
 * without limit. */
#include "protocol.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* One read() asks for at most this much: enough for a prompt in a few
 * calls, small enough to keep 64 idle clients cheap. */
#define READ_CHUNK ((size_t)64 << 10)

void protocol_line_reader_init(protocol_line_reader *r, size_t max_line)
{
    memset(r, 0, sizeof *r);
    r->max_line = max_line;
}

void protocol_line_reader_clear(protocol_line_reader *r)
{
    if (!r)
        return;
    free(r->buf);
    memset(r, 0, sizeof *r);
}

/* Makes room for n more bytes after the buffered ones, first dropping the
 * lines already handed out. */
static int reserve(protocol_line_reader *r, size_t n)
{
    if (r->start > 0) {
        memmove(r->buf, r->buf + r->start, r->len - r->start);
        r->len -= r->start;
        r->start = 0;
    }
    if (n > SIZE_MAX - r->len - 1)
        return -ENOMEM;
    size_t need = r->len + n + 1;   /* + 1: room for the NUL of a last line */
    if (need <= r->cap)
        return 0;
    size_t cap = r->cap ? r->cap : 4096;
    while (cap < need)
        cap = cap > SIZE_MAX / 2 ? need : cap * 2;
    char *buf = realloc(r->buf, cap);
    if (!buf)
        return -ENOMEM;
    r->buf = buf;
    r->cap = cap;
    return 0;
}

int protocol_line_reader_feed(protocol_line_reader *r, const void *data, size_t n)
{
    if (n == 0)
        return 0;
    int e = reserve(r, n);
    if (e < 0)
        return e;
    memcpy(r->buf + r->len, data, n);
    r->len += n;
    return 0;
}

ssize_t protocol_line_reader_read_fd(protocol_line_reader *r, int fd)
{
    size_t want = r->max_line + 1 < READ_CHUNK ? r->max_line + 1 : READ_CHUNK;
    int e = reserve(r, want);
    if (e < 0)
        return e;
    for (;;) {
        ssize_t n = read(fd, r->buf + r->len, want);
        if (n >= 0) {
            r->len += (size_t)n;
            return n;
        }
        if (errno != EINTR)
            return errno == EWOULDBLOCK ? -EAGAIN : -errno;
    }
}

int protocol_line_reader_next(protocol_line_reader *r, char **line, size_t *len)
{
    for (;;) {
        if (r->too_large)
            return -EMSGSIZE;
        if (!r->buf)
            return 0;
        size_t avail = r->len - r->start;
        char *begin = r->buf + r->start;
        char *nl = avail > r->scanned ? memchr(begin + r->scanned, '\n', avail - r->scanned)
                                      : NULL;
        if (!nl) {
            r->scanned = avail;
            /* No newline yet, and already too long to ever be acceptable. */
            if (avail > r->max_line + 1) {
                r->too_large = true;
                continue;
            }
            return 0;
        }
        size_t n = (size_t)(nl - begin);
        r->start += n + 1;
        r->scanned = 0;
        if (n > 0 && begin[n - 1] == '\r')
            n--;
        if (n > r->max_line) {
            r->too_large = true;
            continue;
        }
        if (n == 0)
            continue;
        begin[n] = '\0';
        *line = begin;
        *len = n;
        return 1;
    }
}

size_t protocol_line_reader_pending(const protocol_line_reader *r)
{
    return r->len - r->start;
}
