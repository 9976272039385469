/* almd's event loop (sd-event): the listening socket, the clients, the
 * mailbox from the worker threads, signals, the watchdog and sd_notify.
 * The structs are shared with the method handlers (methods.c) and nothing
 * else. */
#ifndef ALM_DAEMON_SERVER_H
#define ALM_DAEMON_SERVER_H

#include <stdbool.h>
#include <stdint.h>

#include <glib.h>
#include <systemd/sd-event.h>

#include "config_file.h"
#include "listen_socket.h"
#include "log.h"
#include "mailbox.h"
#include "model_host.h"
#include "peer.h"
#include "protocol.h"
#include "settings_store.h"
#include "settings_worker.h"

typedef struct server server;

typedef struct client {
    server *srv;
    uint64_t id;
    int fd;
    sd_event_source *io;
    protocol_line_reader reader;
    char *out;                 /* bytes not yet written: out[out_start..out_len) */
    size_t out_start, out_len, out_cap;
    peer_identity peer;
    unsigned outstanding;      /* requests answered from other threads, not yet done */
    bool read_closed;          /* the peer shut down its side: no more requests */
    bool close_after_flush;    /* a fatal error was answered */
    bool dead;                 /* to be dropped at the next settle */
} client;

struct server {
    sd_event *event;
    const daemon_config *config;
    settings_store *store;
    model_host *host;
    settings_worker *settings;  /* config.set / config.unset */
    mailbox *mailbox;
    const daemon_log *log;
    listen_socket listener;
    sd_event_source *listen_source, *mailbox_source, *stop_timer;
    GHashTable *clients;       /* id -> client */
    uint64_t next_client_id;
    double started_at;         /* Unix time */
    bool stopping;
    bool ready_notified;
};

typedef struct server_options {
    const daemon_config *config;
    settings_store *store;
    const daemon_log *log;
} server_options;

/* Opens the socket (or takes systemd's), starts the model host and the
 * first load, and runs until SIGTERM/SIGINT. Returns 0 after a clean
 * shutdown, or a negative errno with err set when it could not start. */
int server_run(const server_options *options, alm_error *err);

/* Queues a line (taken; NULL means out of memory) for the client. Never
 * frees the client: the loop writes and drops clients after each event. */
void client_send(client *c, char *line);

#endif
