/* Connecting to almd and exchanging protocol lines. */
#include "connection.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "output.h"

int cli_connect(cli_connection *c, const char *path)
{
    memset(c, 0, sizeof *c);
    c->fd = -1;
    c->signal_fd = -1;
    c->path = path;
    c->next_id = 1;
    struct sockaddr_un addr = { .sun_family = AF_UNIX };
    if (strlen(path) >= sizeof addr.sun_path) {
        cli_error("cannot reach almd at %s: the path is longer than a socket path may be", path);
        return -ENAMETOOLONG;
    }
    strcpy(addr.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0) {
        int r = -errno;
        cli_error("cannot create a socket: %s", strerror(-r));
        return r;
    }
    if (connect(fd, (struct sockaddr *)&addr, sizeof addr) < 0) {
        int r = -errno;
        cli_error("cannot reach almd at %s: %s (is almd running?)", path, strerror(-r));
        close(fd);
        return r;
    }
    c->fd = fd;
    protocol_line_reader_init(&c->reader, CLI_MAX_REPLY_BYTES);
    return 0;
}

void cli_disconnect(cli_connection *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    protocol_line_reader_clear(&c->reader);
}

static int write_all(cli_connection *c, const char *data, size_t len)
{
    while (len > 0) {
        /* MSG_NOSIGNAL: a daemon gone away is an error to report, not a
         * SIGPIPE that kills alm silently. */
        ssize_t n = send(c->fd, data, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            int r = -errno;
            cli_error("cannot send to almd at %s: %s", c->path, strerror(-r));
            return r;
        }
        data += n;
        len -= (size_t)n;
    }
    return 0;
}

int cli_send(cli_connection *c, const char *method, JsonObject *params)
{
    protocol_id_set_int(&c->id, c->next_id++);
    char *line = protocol_request_line(&c->id, method, params);
    if (!line) {
        cli_error("out of memory");
        return -ENOMEM;
    }
    int r = write_all(c, line, strlen(line));
    free(line);
    return r;
}

/* Waits until the socket is readable; -EINTR when a signal came first. */
static int wait_readable(cli_connection *c)
{
    for (;;) {
        struct pollfd fds[2] = {
            { .fd = c->fd, .events = POLLIN },
            { .fd = c->signal_fd, .events = POLLIN },
        };
        int r = poll(fds, c->signal_fd >= 0 ? 2 : 1, -1);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            r = -errno;
            cli_error("poll: %s", strerror(-r));
            return r;
        }
        if (c->signal_fd >= 0 && (fds[1].revents & POLLIN)) {
            struct signalfd_siginfo info;
            ssize_t n = read(c->signal_fd, &info, sizeof info);
            (void)n;
            return -EINTR;
        }
        if (fds[0].revents)
            return 0;
    }
}

int cli_next_reply(cli_connection *c, protocol_reply *reply)
{
    memset(reply, 0, sizeof *reply);
    for (;;) {
        char *line;
        size_t len;
        int r = protocol_line_reader_next(&c->reader, &line, &len);
        if (r == -EMSGSIZE) {
            cli_error("almd sent a line longer than %zu bytes", (size_t)CLI_MAX_REPLY_BYTES);
            return r;
        }
        if (r < 0) {
            cli_error("reading from almd: %s", strerror(-r));
            return r;
        }
        if (r == 1) {
            protocol_error perr;
            if (protocol_reply_parse(line, len, reply, &perr) < 0) {
                cli_error("almd sent a malformed reply: %s", perr.message);
                return -EPROTO;
            }
            /* An error without an id is about the connection (a request
             * almd could not read): it is ours, as only one is in flight. */
            if (protocol_id_equal(&reply->id, &c->id) ||
                (reply->kind == PROTOCOL_REPLY_ERROR && reply->id.kind == PROTOCOL_ID_NONE))
                return 0;
            protocol_reply_clear(reply);
            continue;
        }
        if ((r = wait_readable(c)) < 0)
            return r;
        ssize_t n = protocol_line_reader_read_fd(&c->reader, c->fd);
        if (n == -EAGAIN || n == -EINTR)
            continue;
        if (n < 0) {
            cli_error("reading from almd at %s: %s", c->path, strerror((int)-n));
            return (int)n;
        }
        if (n == 0) {
            cli_error("almd closed the connection before answering");
            return -ECONNRESET;
        }
    }
}

void cli_print_error_reply(const protocol_reply *reply)
{
    const char *message = reply->error_message ? reply->error_message : "";
    if (message[0])
        cli_error("%s", message);
    else
        cli_error("almd refused the request (%s)", protocol_error_code_name(reply->error_code));
}

int cli_call(cli_connection *c, const char *method, JsonObject *params, protocol_reply *reply)
{
    memset(reply, 0, sizeof *reply);
    int r = cli_send(c, method, params);
    if (r < 0)
        return r;
    r = cli_next_reply(c, reply);
    if (r < 0)
        return r;
    if (reply->kind == PROTOCOL_REPLY_ERROR) {
        cli_print_error_reply(reply);
        protocol_reply_clear(reply);
        return -EPROTO;
    }
    if (reply->kind != PROTOCOL_REPLY_RESULT || !reply->result) {
        cli_error("almd answered %s with an unexpected %s", method,
                  reply->kind == PROTOCOL_REPLY_EVENT ? "event" : "reply");
        protocol_reply_clear(reply);
        return -EPROTO;
    }
    return 0;
}
