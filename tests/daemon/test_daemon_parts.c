/* The small parts of almd: model names resolved through model_dirs (and
 * never out of them), peer credentials and the admin check, and a setting's
 * effective value (stored, else default; a stored value that no longer
 * validates falls back to the default). */
#include <errno.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "model_resolve.h"
#include "peer.h"
#include "settings_effective.h"
#include "settings_store.h"
#include "tap.h"

static char tmpdir[256];

static void make_model_folder(const char *dir)
{
    char path[512];
    mkdir(dir, 0755);
    snprintf(path, sizeof path, "%s/config.json", dir);
    FILE *f = fopen(path, "w");
    if (f) {
        fputs("{}", f);
        fclose(f);
    }
}

static void test_model_resolve(void)
{
    char first[300], second[300], model_a[400], model_b[400], shadow[400], empty[400];
    snprintf(first, sizeof first, "%s/first", tmpdir);
    snprintf(second, sizeof second, "%s/second", tmpdir);
    mkdir(first, 0755);
    mkdir(second, 0755);
    snprintf(model_a, sizeof model_a, "%s/a", first);
    snprintf(model_b, sizeof model_b, "%s/b", second);
    snprintf(shadow, sizeof shadow, "%s/a", second);
    snprintf(empty, sizeof empty, "%s/empty", first);
    make_model_folder(model_a);
    make_model_folder(model_b);
    make_model_folder(shadow);
    mkdir(empty, 0755);   /* a folder without config.json is no model */

    char *dirs[] = { first, second };
    daemon_config config = { .model_dirs = dirs, .n_model_dirs = 2 };
    alm_error err = { 0 };
    char *dir = NULL;
    int r = model_resolve(&config, "a", &dir, &err);
    tap_ok(r == 0 && strcmp(dir, model_a) == 0,
           "a name is looked up in model_dirs, the first folder first (%s)", r == 0 ? dir : "");
    free(dir);
    r = model_resolve(&config, "b", &dir, &err);
    tap_ok(r == 0 && strcmp(dir, model_b) == 0, "... then the next (%s)", r == 0 ? dir : "");
    free(dir);
    r = model_resolve(&config, model_b, &dir, &err);
    tap_ok(r == 0 && strcmp(dir, model_b) == 0, "an absolute path is taken as it is");
    free(dir);
    dir = (char *)"x";
    r = model_resolve(&config, "empty", &dir, &err);
    tap_ok(r == -ENOENT && dir == NULL && strstr(err.message, first) && strstr(err.message, second),
           "a folder without config.json is not found, and the message lists model_dirs (%s)",
           err.message);
    r = model_resolve(&config, "../second/b", &dir, &err);
    tap_ok(r == -EINVAL && dir == NULL, "a name with a slash cannot leave model_dirs (%s)",
           err.message);
    r = model_resolve(&config, "..", &dir, &err);
    tap_ok(r == -EINVAL, "\"..\" is refused");
    r = model_resolve(&config, "/nonexistent/model", &dir, &err);
    tap_ok(r == -ENOENT && strstr(err.message, "/nonexistent/model"),
           "an absolute path that is no model folder: not found (%s)", err.message);
    r = model_resolve(&config, "", &dir, &err);
    tap_ok(r == -EINVAL, "an empty name is refused");
}

static void test_peer(void)
{
    int pair[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, pair) < 0) {
        tap_ok(0, "socketpair");
        return;
    }
    peer_identity who;
    alm_error err = { 0 };
    struct group *own = getgrgid(getgid());
    char own_group[256];
    snprintf(own_group, sizeof own_group, "%s", own ? own->gr_name : "root");
    int r = peer_identity_read(pair[0], "no-such-group-for-alm", &who, &err);
    tap_ok(r == 0 && who.uid == getuid() && who.gid == getgid() && who.pid == getpid(),
           "SO_PEERCRED gives our own uid, gid and pid");
    struct passwd *pw = getpwuid(getuid());
    tap_ok(!pw || strcmp(who.name, pw->pw_name) == 0, "the peer's name is its user name (%s)",
           who.name);
    tap_ok(who.admin == (getuid() == 0), "with a missing admin group only root is admin");
    r = peer_identity_read(pair[0], own_group, &who, &err);
    tap_ok(r == 0 && who.admin, "a member of admin_group (primary group %s) is admin", own_group);
    tap_ok(peer_in_group(getuid(), getgid(), own_group), "peer_in_group: the primary group");
    tap_ok(!peer_in_group(65534, 65534, "root") || getgrnam("root") == NULL,
           "peer_in_group: nobody is not in root");
    tap_ok(!peer_in_group(getuid(), getgid(), "no-such-group-for-alm") &&
               !peer_group_exists("no-such-group-for-alm") && peer_group_exists(own_group),
           "a group that does not exist has no members");
    close(pair[0]);
    close(pair[1]);
    r = peer_identity_read(pair[0], "root", &who, &err);
    tap_ok(r < 0 && err.message[0], "a closed descriptor: an error (%s)", err.message);
}

static void test_settings_effective(void)
{
    char path[300];
    snprintf(path, sizeof path, "%s/effective.db", tmpdir);
    settings_store *store = NULL;
    alm_error err = { 0 };
    if (!tap_ok(settings_store_open(path, &store, &err) == 0, "open a store (%s)", err.message))
        return;
    char *value = NULL;
    bool is_default = false;
    int r = settings_effective(store, "num_draft_tokens", &value, &is_default, &err);
    tap_ok(r == 0 && strcmp(value, "4") == 0 && is_default, "nothing stored: the default");
    free(value);
    settings_store_set(store, "num_draft_tokens", "auto", "test", &err);
    r = settings_effective(store, "num_draft_tokens", &value, &is_default, &err);
    tap_ok(r == 0 && strcmp(value, "auto") == 0 && !is_default, "stored: the stored value");
    free(value);
    tap_ok(settings_effective_int(store, "num_draft_tokens", &err) == 0, "auto reads as 0");
    /* A value the table refuses (as if written by hand or an older almd). */
    settings_store_set(store, "top_p", "7", "test", &err);
    memset(&err, 0, sizeof err);
    r = settings_effective(store, "top_p", &value, &is_default, &err);
    tap_ok(r == 0 && strcmp(value, "1") == 0 && is_default && err.code == -EINVAL &&
               strstr(err.message, "top_p"),
           "a stored value that does not validate: the default, with a warning (%s)",
           err.message);
    free(value);
    settings_store_set(store, "temperature", "0.25", "test", &err);
    tap_ok(settings_effective_number(store, "temperature", &err) == 0.25, "typed number");
    r = settings_effective(store, "colour", &value, NULL, &err);
    tap_ok(r == -ENOENT && value == NULL, "an unknown key: -ENOENT");
    settings_store_close(store);
}

int main(void)
{
    snprintf(tmpdir, sizeof tmpdir, "/tmp/alm-daemon-parts-XXXXXX");
    if (!mkdtemp(tmpdir))
        return tap_skip_all("cannot create a temporary folder");
    test_model_resolve();
    test_peer();
    test_settings_effective();
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (system(cmd) != 0)
        tap_diag("could not remove %s", tmpdir);
    return tap_done();
}
