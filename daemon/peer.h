/* Who is on the other end of a client connection: the credentials the
 * kernel recorded at connect() (SO_PEERCRED), the user's name for the
 * settings history, and whether the peer may use admin methods (root, or a
 * member of admin_group). Evaluated once, at accept. */
#ifndef ALM_DAEMON_PEER_H
#define ALM_DAEMON_PEER_H

#include <stdbool.h>
#include <sys/types.h>

#include "alm.h"

typedef struct peer_identity {
    pid_t pid;
    uid_t uid;
    gid_t gid;
    bool admin;
    char name[64];     /* user name, or "uid N" when it has none */
} peer_identity;

/* Reads fd's peer credentials and decides admin against admin_group (a
 * group that does not exist makes only root an admin). */
int peer_identity_read(int fd, const char *admin_group, peer_identity *out, alm_error *err);

/* Whether the user uid (primary group gid) belongs to group_name, as a
 * supplementary or primary member. False when the group does not exist. */
bool peer_in_group(uid_t uid, gid_t gid, const char *group_name);

/* Whether group_name names an existing group. */
bool peer_group_exists(const char *group_name);

#endif
