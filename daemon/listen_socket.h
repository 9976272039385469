/* The socket almd listens on: the one systemd passes in (socket
 * activation, sd_listen_fds), or one almd creates at config->socket_path
 * with socket_mode and socket_group. A stale socket file (nothing listening:
 * connect fails with ECONNREFUSED) is replaced; a live one means another
 * almd is running, and almd refuses to start. */
#ifndef ALM_DAEMON_LISTEN_SOCKET_H
#define ALM_DAEMON_LISTEN_SOCKET_H

#include <stdbool.h>

#include "alm.h"
#include "config_file.h"

typedef struct listen_socket {
    int fd;
    bool activated;      /* passed in by systemd: not ours to unlink */
    char *path;          /* the file we created (NULL when activated) */
} listen_socket;

/* Returns 0 with *out filled (non-blocking, close-on-exec), or a negative
 * errno with a message that says what was wrong. */
int listen_socket_open(const daemon_config *config, listen_socket *out, alm_error *err);

/* Closes the socket and removes the file almd created. */
void listen_socket_close(listen_socket *s);

/* Creates the parent folders of path (mode 0755) that do not exist yet. */
int make_parent_dirs(const char *path, alm_error *err);

#endif
