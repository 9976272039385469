/* The default socket: a user instance of almd (systemctl --user start
 * almd) listens under $XDG_RUNTIME_DIR, the system service on
 * /run/alm/almd.sock. A user who runs their own almd expects alm to find
 * it, so its socket wins when it exists; the path is the one
 * daemon_config_defaults_user (daemon/config_file.c) gives almd. */
#include "socket_path.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

char *cli_socket_path(const char *option)
{
    if (option && option[0])
        return strdup(option);
    const char *env = getenv("ALM_SOCKET");
    if (env && env[0])
        return strdup(env);
    /* The XDG base directory spec: relative values are to be ignored. */
    const char *runtime = getenv("XDG_RUNTIME_DIR");
    if (runtime && runtime[0] == '/') {
        char *user = NULL;
        if (asprintf(&user, "%s/alm/almd.sock", runtime) < 0)
            return NULL;
        struct stat st;
        if (stat(user, &st) == 0 && S_ISSOCK(st.st_mode))
            return user;
        free(user);
    }
    return strdup(CLI_SYSTEM_SOCKET);
}
