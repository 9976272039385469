/* Peer credentials and the admin check. */
#include "peer.h"

#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "core/error.h"

/* getpwuid_r/getgrnam_r want a caller buffer; large groups need more than
 * the suggested size, so grow it on ERANGE. */
static bool group_gid(const char *group_name, gid_t *gid)
{
    if (!group_name || !*group_name)
        return false;
    size_t size = 4096;
    for (int attempt = 0; attempt < 8; attempt++, size *= 4) {
        char *buf = malloc(size);
        if (!buf)
            return false;
        struct group grp, *found = NULL;
        int r = getgrnam_r(group_name, &grp, buf, size, &found);
        if (r == 0 && found)
            *gid = found->gr_gid;
        free(buf);
        if (r == ERANGE)
            continue;
        return r == 0 && found;
    }
    return false;
}

bool peer_group_exists(const char *group_name)
{
    gid_t gid;
    return group_gid(group_name, &gid);
}

/* The user's name into name (size bytes); false when uid has no entry. */
static bool user_name(uid_t uid, char *name, size_t size)
{
    size_t bufsize = 4096;
    for (int attempt = 0; attempt < 6; attempt++, bufsize *= 4) {
        char *buf = malloc(bufsize);
        if (!buf)
            return false;
        struct passwd pw, *found = NULL;
        int r = getpwuid_r(uid, &pw, buf, bufsize, &found);
        bool ok = r == 0 && found && strlen(found->pw_name) < size;
        if (ok)
            snprintf(name, size, "%s", found->pw_name);
        free(buf);
        if (r == ERANGE)
            continue;
        return ok;
    }
    return false;
}

bool peer_in_group(uid_t uid, gid_t gid, const char *group_name)
{
    gid_t wanted;
    if (!group_gid(group_name, &wanted))
        return false;
    if (gid == wanted)
        return true;
    char name[256];
    if (!user_name(uid, name, sizeof name))
        return false;
    int n = 64;
    for (int attempt = 0; attempt < 8; attempt++) {
        gid_t *groups = malloc(sizeof *groups * (size_t)n);
        if (!groups)
            return false;
        int count = n;
        int r = getgrouplist(name, gid, groups, &count);
        if (r >= 0) {
            bool member = false;
            for (int i = 0; i < count && !member; i++)
                member = groups[i] == wanted;
            free(groups);
            return member;
        }
        free(groups);
        /* count now holds the number needed. */
        n = count > n ? count : n * 2;
    }
    return false;
}

int peer_identity_read(int fd, const char *admin_group, peer_identity *out, alm_error *err)
{
    struct ucred cred;
    socklen_t len = sizeof cred;
    memset(out, 0, sizeof *out);
    if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
        return alm_error_set(err, -errno, "cannot read the peer's credentials: %s",
                             strerror(errno));
    out->pid = cred.pid;
    out->uid = cred.uid;
    out->gid = cred.gid;
    if (!user_name(cred.uid, out->name, sizeof out->name))
        snprintf(out->name, sizeof out->name, "uid %u", (unsigned)cred.uid);
    out->admin = cred.uid == 0 || peer_in_group(cred.uid, cred.gid, admin_group);
    return 0;
}
