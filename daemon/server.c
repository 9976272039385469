/* The event loop: see server.h. Everything here runs on the main thread;
 * the worker threads reach it only through the mailbox. */
#include "server.h"

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>

#include "core/error.h"
#include "methods.h"

/* A reader that does not keep up may have this much (or four requests'
 * worth, if more) waiting before it is dropped: generation never waits for
 * a client. */
#define CLIENT_OUTPUT_LIMIT ((size_t)16 << 20)
/* Requests of one connection in flight (queued or running) before almd
 * stops reading from it. */
#define CLIENT_MAX_OUTSTANDING 64u
/* How long shutdown waits for clients to take their last lines. */
#define STOP_FLUSH_USEC (3 * 1000000ULL)

static double now_unix(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static size_t output_limit(const server *srv)
{
    size_t four = srv->config->max_request_bytes * 4;
    return four > CLIENT_OUTPUT_LIMIT ? four : CLIENT_OUTPUT_LIMIT;
}

/* ------------------------------------------------------------ sd_notify */

static void notify_status(server *srv)
{
    model_host_status st;
    model_host_get_status(srv->host, &st);
    unsigned n = g_hash_table_size(srv->clients);
    char status[1300];
    if (srv->stopping)
        snprintf(status, sizeof status, "stopping");
    else if (st.ready)
        snprintf(status, sizeof status, "serving %s%s%s, %u client%s%s%s%s", st.model,
                 st.draft_model[0] ? " with draft " : "", st.draft_model, n, n == 1 ? "" : "s",
                 st.loading ? " (restart: " : "", st.load_progress, st.loading ? ")" : "");
    else if (st.loading)
        snprintf(status, sizeof status, "%s", st.load_progress[0] ? st.load_progress
                                                                 : "loading models");
    else
        snprintf(status, sizeof status, "no model loaded: %s", st.load_error);
    /* READY once the first load has ended, loaded or not: a daemon without
     * a model still answers `alm config set model` and `alm restart`. */
    if (!srv->ready_notified && !st.loading && !srv->stopping) {
        srv->ready_notified = true;
        sd_notifyf(0, "READY=1\nSTATUS=%s", status);
        log_notice(srv->log, "ready: %s", status);
    } else {
        sd_notifyf(0, "STATUS=%s", status);
    }
}

/* ------------------------------------------------------------ clients */

static void client_free(client *c)
{
    sd_event_source_disable_unref(c->io);
    if (c->fd >= 0)
        close(c->fd);
    protocol_line_reader_clear(&c->reader);
    free(c->out);
    free(c);
}

/* Drops the client: its requests are cancelled, nothing else is. */
static void client_drop(client *c)
{
    server *srv = c->srv;
    model_host_cancel_client(srv->host, c->id);
    log_debug(srv->log, "client %llu (%s) gone", (unsigned long long)c->id, c->peer.name);
    g_hash_table_remove(srv->clients, &c->id);   /* frees c */
    if (!srv->stopping)
        notify_status(srv);
    else if (g_hash_table_size(srv->clients) == 0)
        sd_event_exit(srv->event, 0);
}

void client_send(client *c, char *line)
{
    if (!line) {
        c->dead = true;
        log_error(c->srv->log, "out of memory: dropping client %llu",
                  (unsigned long long)c->id);
        return;
    }
    size_t len = strlen(line);
    if (c->out_start > 0 && c->out_start == c->out_len)
        c->out_start = c->out_len = 0;
    if (c->out_len - c->out_start + len > output_limit(c->srv)) {
        log_warning(c->srv->log, "client %llu (%s) does not read its replies: dropped",
                    (unsigned long long)c->id, c->peer.name);
        c->dead = true;
        free(line);
        return;
    }
    if (c->out_len + len > c->out_cap) {
        /* Compact before growing. */
        if (c->out_start > 0) {
            memmove(c->out, c->out + c->out_start, c->out_len - c->out_start);
            c->out_len -= c->out_start;
            c->out_start = 0;
        }
        if (c->out_len + len > c->out_cap) {
            size_t cap = c->out_cap ? c->out_cap : 4096;
            while (cap < c->out_len + len)
                cap *= 2;
            char *grown = realloc(c->out, cap);
            if (!grown) {
                free(line);
                c->dead = true;
                return;
            }
            c->out = grown;
            c->out_cap = cap;
        }
    }
    memcpy(c->out + c->out_len, line, len);
    c->out_len += len;
    free(line);
}

/* Writes what it can. Returns false when the peer is gone. */
static bool client_write(client *c)
{
    while (c->out_start < c->out_len) {
        ssize_t n = send(c->fd, c->out + c->out_start, c->out_len - c->out_start,
                         MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno == EAGAIN)
                return true;
            return false;
        }
        c->out_start += (size_t)n;
    }
    c->out_start = c->out_len = 0;
    return true;
}

/* After anything happened to c: write, drop it when it is finished or
 * gone, or watch for what it waits for. Returns false when c was freed. */
static bool client_settle(client *c)
{
    if (c->dead || !client_write(c)) {
        client_drop(c);
        return false;
    }
    bool pending = c->out_start < c->out_len;
    bool done_reading = c->read_closed || c->close_after_flush || c->srv->stopping;
    if (!pending && (c->close_after_flush || (done_reading && c->outstanding == 0))) {
        client_drop(c);
        return false;
    }
    bool room = c->outstanding < CLIENT_MAX_OUTSTANDING;
    uint32_t events = (done_reading || !room ? 0 : EPOLLIN) | (pending ? EPOLLOUT : 0);
    sd_event_source_set_io_events(c->io, events);
    return true;
}

static void client_handle_line(client *c, const char *line, size_t len)
{
    server *srv = c->srv;
    protocol_request req;
    protocol_error perr;
    if (protocol_request_parse(line, len, srv->config->max_request_bytes, &req, &perr) < 0) {
        client_send(c, protocol_error_line_for(&perr));
        /* Without an id the line was not a request at all (malformed JSON,
         * not an object, bad UTF-8): where the next one starts is anyone's
         * guess, so the connection ends here. */
        if (perr.id.kind == PROTOCOL_ID_NONE)
            c->close_after_flush = true;
        return;
    }
    methods_dispatch(srv, c, &req);
    protocol_request_clear(&req);
}

/* Handles the complete lines buffered, while the client has room for more
 * requests in flight. */
static void client_process_lines(client *c)
{
    char *line;
    size_t len;
    int r;
    while (!c->close_after_flush && !c->dead && c->outstanding < CLIENT_MAX_OUTSTANDING &&
           (r = protocol_line_reader_next(&c->reader, &line, &len)) != 0) {
        if (r == -EMSGSIZE) {
            client_send(c, protocol_error_line(NULL, PROTOCOL_ERROR_TOO_LARGE,
                                               "request line over max_request_bytes (%zu)",
                                               c->srv->config->max_request_bytes));
            c->close_after_flush = true;
            return;
        }
        if (r < 0) {
            c->dead = true;
            return;
        }
        client_handle_line(c, line, len);
    }
}

static void client_read(client *c)
{
    /* At the limit, what the client sends waits in the socket: it learns
     * to slow down, and almd's memory stays bounded. */
    while (c->outstanding < CLIENT_MAX_OUTSTANDING && !c->read_closed) {
        ssize_t n = protocol_line_reader_read_fd(&c->reader, c->fd);
        if (n == -EAGAIN)
            return;
        if (n == -EINTR)
            continue;
        if (n < 0) {
            c->dead = true;
            return;
        }
        if (n == 0)
            c->read_closed = true;
        client_process_lines(c);
        if (c->close_after_flush || c->dead)
            return;
    }
}

static int on_client_io(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
    client *c = userdata;
    (void)s;
    (void)fd;
    if (revents & EPOLLIN)
        client_read(c);
    /* Both directions shut: the peer closed (or died). A half-close (it
     * only stopped sending) shows as EOF on read without HUP, and its
     * replies are still delivered. */
    if (revents & (EPOLLHUP | EPOLLERR))
        c->dead = true;
    client_settle(c);
    return 0;
}

static void refuse_connection(server *srv, int fd, const char *why)
{
    char *line = protocol_error_line(NULL, PROTOCOL_ERROR_BUSY, "%s", why);
    if (line) {
        ssize_t w = send(fd, line, strlen(line), MSG_NOSIGNAL | MSG_DONTWAIT);
        (void)w;
        free(line);
    }
    close(fd);
    log_warning(srv->log, "connection refused: %s", why);
}

static int on_accept(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
    server *srv = userdata;
    (void)s;
    (void)revents;
    for (;;) {
        int cfd = accept4(fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (cfd < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN)
                log_warning(srv->log, "accept: %s", strerror(errno));
            return 0;
        }
        if (g_hash_table_size(srv->clients) >= srv->config->max_clients) {
            char why[96];
            snprintf(why, sizeof why, "too many clients (max_clients is %u)",
                     srv->config->max_clients);
            refuse_connection(srv, cfd, why);
            continue;
        }
        client *c = calloc(1, sizeof *c);
        alm_error err = { 0 };
        if (!c) {
            close(cfd);
            continue;
        }
        c->srv = srv;
        c->fd = cfd;
        c->id = ++srv->next_client_id;
        protocol_line_reader_init(&c->reader, srv->config->max_request_bytes);
        if (peer_identity_read(cfd, srv->config->admin_group, &c->peer, &err) < 0) {
            log_warning(srv->log, "%s", err.message);
            client_free(c);
            continue;
        }
        int r = sd_event_add_io(srv->event, &c->io, cfd, EPOLLIN, on_client_io, c);
        if (r < 0) {
            log_warning(srv->log, "cannot watch a client: %s", strerror(-r));
            client_free(c);
            continue;
        }
        g_hash_table_insert(srv->clients, &c->id, c);
        log_debug(srv->log, "client %llu: %s (pid %d)%s", (unsigned long long)c->id,
                  c->peer.name, (int)c->peer.pid, c->peer.admin ? ", admin" : "");
        notify_status(srv);
    }
}

/* ------------------------------------------------------------ mailbox */

static int on_mailbox(sd_event_source *s, int fd, uint32_t revents, void *userdata)
{
    server *srv = userdata;
    (void)s;
    (void)fd;
    (void)revents;
    mailbox_message *list = mailbox_take_all(srv->mailbox);
    GHashTable *touched = g_hash_table_new(g_int64_hash, g_int64_equal);
    bool state_changed = false;
    for (mailbox_message *m = list; m; m = m->next) {
        if (m->client_id == MODEL_HOST_STATE_CHANGED) {
            state_changed = true;
            continue;
        }
        client *c = g_hash_table_lookup(srv->clients, &m->client_id);
        if (!c)
            continue;   /* gone: its lines have no reader */
        client_send(c, m->line);
        m->line = NULL;
        if (m->final && c->outstanding > 0 && c->outstanding-- == CLIENT_MAX_OUTSTANDING &&
            !srv->stopping)
            client_process_lines(c);   /* requests that waited for room */
        g_hash_table_add(touched, &c->id);
    }
    /* Settle each client once, after all its lines are queued. */
    GList *ids = g_hash_table_get_keys(touched);
    for (GList *l = ids; l; l = l->next) {
        client *c = g_hash_table_lookup(srv->clients, l->data);
        if (c)
            client_settle(c);
    }
    g_list_free(ids);
    g_hash_table_unref(touched);
    mailbox_messages_free(list);
    if (state_changed && !srv->stopping)
        notify_status(srv);
    return 0;
}

/* ------------------------------------------------------------ shutdown */

static int on_stop_timer(sd_event_source *s, uint64_t usec, void *userdata)
{
    server *srv = userdata;
    (void)s;
    (void)usec;
    log_warning(srv->log, "%u client(s) did not take their last replies in time",
                g_hash_table_size(srv->clients));
    sd_event_exit(srv->event, 0);
    return 0;
}

static int on_stop_signal(sd_event_source *s, const struct signalfd_siginfo *si, void *userdata)
{
    server *srv = userdata;
    (void)s;
    if (srv->stopping)
        return 0;
    srv->stopping = true;
    log_notice(srv->log, "%s: stopping", strsignal((int)si->ssi_signo));
    sd_notify(0, "STOPPING=1\nSTATUS=stopping");
    /* No new connections; the socket file goes (unless systemd owns it). */
    sd_event_source_disable_unref(srv->listen_source);
    srv->listen_source = NULL;
    listen_socket_close(&srv->listener);
    /* Queued requests are answered `cancelled`, the running one stops at
     * its next token and is answered too; then the threads are gone. */
    settings_worker_shutdown(srv->settings);
    model_host_shutdown(srv->host);
    on_mailbox(NULL, -1, 0, srv);
    /* Deliver what is queued, then close every connection. */
    GList *clients = g_hash_table_get_values(srv->clients);
    for (GList *l = clients; l; l = l->next) {
        client *c = l->data;
        c->close_after_flush = true;
        client_settle(c);
    }
    g_list_free(clients);
    if (g_hash_table_size(srv->clients) == 0) {
        sd_event_exit(srv->event, 0);
        return 0;
    }
    uint64_t now;
    sd_event_now(srv->event, CLOCK_MONOTONIC, &now);
    if (sd_event_add_time(srv->event, &srv->stop_timer, CLOCK_MONOTONIC, now + STOP_FLUSH_USEC,
                          0, on_stop_timer, srv) < 0)
        sd_event_exit(srv->event, 0);
    return 0;
}

/* ------------------------------------------------------------ run */

static void client_free_value(gpointer p)
{
    client_free(p);
}

int server_run(const server_options *options, alm_error *err)
{
    server srv = {
        .config = options->config,
        .store = options->store,
        .log = options->log,
        .listener = { .fd = -1 },
        .started_at = now_unix(),
    };
    int r;
    /* The signals are taken through signalfd: blocked before any thread
     * starts, so that every thread inherits the mask. */
    sigset_t mask;
    sigemptyset(&mask);
    sigaddset(&mask, SIGTERM);
    sigaddset(&mask, SIGINT);
    pthread_sigmask(SIG_BLOCK, &mask, NULL);
    signal(SIGPIPE, SIG_IGN);

    srv.clients = g_hash_table_new_full(g_int64_hash, g_int64_equal, NULL, client_free_value);
    r = sd_event_default(&srv.event);
    if (r < 0) {
        alm_error_set(err, r, "cannot create the event loop: %s", strerror(-r));
        goto out;
    }
    r = listen_socket_open(srv.config, &srv.listener, err);
    if (r < 0)
        goto out;
    r = mailbox_new(&srv.mailbox);
    if (r < 0) {
        alm_error_set(err, r, "cannot create the mailbox: %s", strerror(-r));
        goto out;
    }
    model_host_options host_options = {
        .config = srv.config, .store = srv.store, .mailbox = srv.mailbox, .log = srv.log,
    };
    r = model_host_new(&host_options, &srv.host, err);
    if (r < 0)
        goto out;
    r = settings_worker_new(srv.config, srv.store, srv.mailbox, srv.log, &srv.settings, err);
    if (r < 0)
        goto out;
    if ((r = sd_event_add_io(srv.event, &srv.listen_source, srv.listener.fd, EPOLLIN, on_accept,
                             &srv)) < 0 ||
        (r = sd_event_add_io(srv.event, &srv.mailbox_source, mailbox_fd(srv.mailbox), EPOLLIN,
                             on_mailbox, &srv)) < 0 ||
        (r = sd_event_add_signal(srv.event, NULL, SIGTERM, on_stop_signal, &srv)) < 0 ||
        (r = sd_event_add_signal(srv.event, NULL, SIGINT, on_stop_signal, &srv)) < 0 ||
        (r = sd_event_set_watchdog(srv.event, true)) < 0) {
        alm_error_set(err, r, "cannot set up the event loop: %s", strerror(-r));
        goto out;
    }
    log_info(srv.log, "listening on %s",
             srv.listener.activated ? "the socket systemd passed" : srv.config->socket_path);
    sd_notify(0, "STATUS=loading models");
    r = model_host_load(srv.host, MODEL_HOST_STATE_CHANGED, NULL, err);
    if (r < 0)
        goto out;
    r = sd_event_loop(srv.event);
    if (r < 0)
        alm_error_set(err, r, "event loop: %s", strerror(-r));
    else
        r = 0;
out:
    settings_worker_shutdown(srv.settings);
    if (srv.host)
        model_host_shutdown(srv.host);
    g_hash_table_destroy(srv.clients);
    sd_event_source_disable_unref(srv.stop_timer);
    sd_event_source_disable_unref(srv.listen_source);
    sd_event_source_disable_unref(srv.mailbox_source);
    model_host_free(srv.host);
    settings_worker_free(srv.settings);
    mailbox_free(srv.mailbox);
    listen_socket_close(&srv.listener);
    sd_event_unref(srv.event);
    return r;
}
