/* Socket activation or a socket of our own: see listen_socket.h. */
#include "listen_socket.h"

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>

#include "core/error.h"

int make_parent_dirs(const char *path, alm_error *err)
{
    char *copy = strdup(path);
    if (!copy)
        return alm_error_set(err, -ENOMEM, "out of memory");
    char *slash = strrchr(copy, '/');
    if (!slash || slash == copy) {
        free(copy);
        return 0;
    }
    *slash = '\0';
    /* Create each missing component from the top down. */
    for (char *p = copy + 1;; p++) {
        bool end = *p == '\0';
        if (*p == '/' || end) {
            char saved = *p;
            *p = '\0';
            if (mkdir(copy, 0755) < 0 && errno != EEXIST) {
                int e = errno;
                int r = alm_error_set(err, -e, "cannot create folder %s: %s", copy, strerror(e));
                free(copy);
                return r;
            }
            *p = saved;
        }
        if (end)
            break;
    }
    free(copy);
    return 0;
}

static int set_nonblocking_cloexec(int fd)
{
    int fl = fcntl(fd, F_GETFL);
    if (fl < 0 || fcntl(fd, F_SETFL, fl | O_NONBLOCK) < 0)
        return -errno;
    int fdfl = fcntl(fd, F_GETFD);
    if (fdfl < 0 || fcntl(fd, F_SETFD, fdfl | FD_CLOEXEC) < 0)
        return -errno;
    return 0;
}

static int activated_socket(listen_socket *out, int n, alm_error *err)
{
    if (n != 1)
        return alm_error_set(err, -EINVAL,
                             "systemd passed %d sockets; almd takes exactly one (a Unix stream "
                             "socket)", n);
    int fd = SD_LISTEN_FDS_START;
    if (sd_is_socket_unix(fd, SOCK_STREAM, 1, NULL, 0) <= 0)
        return alm_error_set(err, -EINVAL,
                             "the socket systemd passed is not a listening Unix stream socket");
    int r = set_nonblocking_cloexec(fd);
    if (r < 0)
        return alm_error_set(err, r, "cannot set up the passed socket: %s", strerror(-r));
    out->fd = fd;
    out->activated = true;
    return 0;
}

/* Whether something listens on path: 1 yes, 0 no (stale file or none),
 * negative errno when the file is not a socket or cannot be checked. */
static int socket_in_use(const struct sockaddr_un *addr, const char *path, alm_error *err)
{
    struct stat st;
    if (lstat(path, &st) < 0) {
        if (errno == ENOENT)
            return 0;
        return alm_error_set(err, -errno, "%s: %s", path, strerror(errno));
    }
    if (!S_ISSOCK(st.st_mode))
        return alm_error_set(err, -EEXIST, "%s exists and is not a socket; not replacing it",
                             path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return alm_error_set(err, -errno, "socket: %s", strerror(errno));
    int r = connect(fd, (const struct sockaddr *)addr, sizeof *addr);
    int e = errno;
    close(fd);
    if (r == 0)
        return 1;
    if (e == ECONNREFUSED)
        return 0;
    return alm_error_set(err, -e, "cannot check whether %s is in use: %s", path, strerror(e));
}

static int own_socket(const daemon_config *config, listen_socket *out, alm_error *err)
{
    const char *path = config->socket_path;
    struct sockaddr_un addr = { .sun_family = AF_UNIX };
    if (strlen(path) >= sizeof addr.sun_path)
        return alm_error_set(err, -ENAMETOOLONG, "socket path %s is longer than %zu bytes",
                             path, sizeof addr.sun_path - 1);
    memcpy(addr.sun_path, path, strlen(path) + 1);

    gid_t gid = (gid_t)-1;
    if (config->socket_group && *config->socket_group) {
        struct group *g = getgrnam(config->socket_group);
        if (!g)
            return alm_error_set(err, -ENOENT,
                                 "socket_group \"%s\": no such group (create it, or set "
                                 "socket_group in the configuration file)",
                                 config->socket_group);
        gid = g->gr_gid;
    }
    int r = make_parent_dirs(path, err);
    if (r < 0)
        return r;
    r = socket_in_use(&addr, path, err);
    if (r < 0)
        return r;
    if (r > 0)
        return alm_error_set(err, -EADDRINUSE,
                             "another almd is already listening on %s", path);
    if (unlink(path) < 0 && errno != ENOENT)
        return alm_error_set(err, -errno, "cannot remove the stale socket %s: %s", path,
                             strerror(errno));

    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return alm_error_set(err, -errno, "socket: %s", strerror(errno));
    if (bind(fd, (const struct sockaddr *)&addr, sizeof addr) < 0) {
        int e = errno;
        close(fd);
        return alm_error_set(err, -e, "cannot bind %s: %s", path, strerror(e));
    }
    const char *step = NULL;
    if (chmod(path, config->socket_mode) < 0)
        step = "chmod";
    else if (gid != (gid_t)-1 && chown(path, (uid_t)-1, gid) < 0)
        step = "chown to socket_group";
    else if (listen(fd, SOMAXCONN) < 0)
        step = "listen";
    if (step) {
        int e = errno;
        close(fd);
        unlink(path);
        return alm_error_set(err, -e, "%s: %s: %s", path, step, strerror(e));
    }
    out->path = strdup(path);
    if (!out->path) {
        close(fd);
        unlink(path);
        return alm_error_set(err, -ENOMEM, "out of memory");
    }
    out->fd = fd;
    out->activated = false;
    return 0;
}

int listen_socket_open(const daemon_config *config, listen_socket *out, alm_error *err)
{
    memset(out, 0, sizeof *out);
    out->fd = -1;
    int n = sd_listen_fds(1);
    if (n < 0)
        return alm_error_set(err, n, "sd_listen_fds: %s", strerror(-n));
    if (n > 0)
        return activated_socket(out, n, err);
    return own_socket(config, out, err);
}

void listen_socket_close(listen_socket *s)
{
    if (s->fd >= 0)
        close(s->fd);
    s->fd = -1;
    if (s->path) {
        unlink(s->path);
        free(s->path);
        s->path = NULL;
    }
}
