/* Which socket alm talks to. */
#ifndef ALM_CLI_SOCKET_PATH_H
#define ALM_CLI_SOCKET_PATH_H

#define CLI_SYSTEM_SOCKET "/run/alm/almd.sock"

/* --socket, else $ALM_SOCKET, else the user instance's socket when it
 * exists, else the system one. Returns a malloc'ed path, NULL when out of
 * memory. */
char *cli_socket_path(const char *option);

#endif
