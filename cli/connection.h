/* alm's side of the almd protocol (docs/PROTOCOL.md): one connection, one
 * request at a time, replies read line by line with common/protocol's
 * reader and parser. Every function prints its own one-line error (so that
 * commands only decide the exit status). */
#ifndef ALM_CLI_CONNECTION_H
#define ALM_CLI_CONNECTION_H

#include <stdint.h>

#include "protocol.h"

/* Longest line alm accepts from almd: a done event carries the whole text
 * and its ids, so this is far above what a client may send. */
#define CLI_MAX_REPLY_BYTES ((size_t)256 << 20)

typedef struct cli_connection {
    int fd;
    const char *path;          /* borrowed, for messages */
    protocol_line_reader reader;
    protocol_id id;            /* of the request in flight */
    int64_t next_id;
    /* A signalfd for SIGINT/SIGTERM while waiting (-1: none): waiting then
     * returns -EINTR, the command closes the connection, and almd cancels
     * the request (that is how the protocol cancels). */
    int signal_fd;
} cli_connection;

/* Connects to path. On failure prints
 *   alm: cannot reach almd at PATH: REASON (is almd running?)
 * and returns a negative errno. */
int cli_connect(cli_connection *c, const char *path);
void cli_disconnect(cli_connection *c);

/* Sends one request (params may be NULL; borrowed). */
int cli_send(cli_connection *c, const char *method, JsonObject *params);

/* Waits for the next line about the request in flight and parses it into
 * *reply (protocol_reply_clear it). Returns 0, -EINTR when signal_fd fired,
 * or another negative errno after printing why (almd closed the
 * connection, a malformed line, ...). */
int cli_next_reply(cli_connection *c, protocol_reply *reply);

/* For methods that answer with one result: sends, waits, and returns 0
 * with *reply holding the result, or prints the daemon's error message
 * (alm: MESSAGE) and returns -EPROTO (any other failure: its errno). */
int cli_call(cli_connection *c, const char *method, JsonObject *params,
             protocol_reply *reply);

/* Prints an error reply as "alm: MESSAGE". */
void cli_print_error_reply(const protocol_reply *reply);

#endif
