/* almd.yaml: defaults, every key, and every kind of error with its position. */
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "config_file.h"
#include "tap.h"

static daemon_config_defaults defaults;

static int load(const char *yaml, daemon_config *c, alm_error *err)
{
    memset(err, 0, sizeof *err);
    return daemon_config_load_string(yaml, strlen(yaml), "almd.yaml", &defaults, c, err);
}

/* The load fails and the message contains every fragment given. */
static void expect_error(const char *yaml, const char *what, const char *frag1,
                         const char *frag2)
{
    daemon_config c;
    alm_error err;
    int r = load(yaml, &c, &err);
    bool ok = r < 0 && strstr(err.message, frag1) && (!frag2 || strstr(err.message, frag2)) &&
              c.socket_path == NULL && c.model_dirs == NULL;
    tap_ok(ok, "%s: \"%s\"", what, err.message);
    daemon_config_clear(&c);
}

static void test_defaults(void)
{
    daemon_config c;
    alm_error err = { 0 };
    tap_ok(daemon_config_load(NULL, &defaults, &c, &err) == 0 &&
               c.source == DAEMON_CONFIG_NO_PATH,
           "no path: defaults, source says so");
    tap_ok(strcmp(c.socket_path, "/run/alm/almd.sock") == 0 &&
               strcmp(c.database_path, "/var/lib/alm/alm.db") == 0,
           "system socket and database defaults");
    tap_ok(c.socket_mode == 0660 && strcmp(c.socket_group, "alm") == 0 &&
               strcmp(c.admin_group, "alm-admin") == 0,
           "socket mode 0660, group alm, admin group alm-admin");
    tap_ok(c.n_model_dirs == 1 && strcmp(c.model_dirs[0], "/usr/share/alm/models") == 0,
           "default models folder searched");
    tap_ok(c.log_level == DAEMON_LOG_INFO && c.max_clients == 64 &&
               c.max_request_bytes == 1048576 && c.max_prompt_tokens == 32768,
           "log level and limits default");
    daemon_config_clear(&c);

    tap_ok(daemon_config_load("/nonexistent/almd.yaml", &defaults, &c, &err) == 0 &&
               c.source == DAEMON_CONFIG_FILE_ABSENT && c.max_clients == 64,
           "absent file: defaults, source says absent");
    daemon_config_clear(&c);

    tap_ok(daemon_config_load("/", &defaults, &c, &err) < 0 && strstr(err.message, "/"),
           "a directory is an error, not defaults: %s", err.message);

    tap_ok(load("# only a comment\n", &c, &err) == 0 && c.source == DAEMON_CONFIG_FROM_FILE &&
               c.max_clients == 64,
           "a file of comments keeps the defaults");
    daemon_config_clear(&c);
    tap_ok(load("", &c, &err) == 0 && c.max_clients == 64, "an empty file keeps the defaults");
    daemon_config_clear(&c);
    tap_ok(load("---\n...\n", &c, &err) == 0 && c.max_clients == 64,
           "an empty document keeps the defaults (%s)", err.message);
    daemon_config_clear(&c);
    tap_ok(load("---\nmax_clients: 2\n", &c, &err) == 0 && c.max_clients == 2,
           "a document start marker is fine");
    daemon_config_clear(&c);
    tap_ok(load("dirs: &d [/srv/a]\n", &c, &err) < 0, "anchors do not make unknown keys valid");
    tap_ok(load("model_dirs: &d [/srv/a, *d]\n", &c, &err) < 0,
           "a recursive alias is refused: %s", err.message);

    daemon_config_defaults user;
    tap_ok(daemon_config_defaults_user(&user, "/m", "/run/user/1000", NULL, "/home/u", &err) ==
                   0 &&
               strcmp(user.socket_path, "/run/user/1000/alm/almd.sock") == 0 &&
               strcmp(user.database_path, "/home/u/.local/state/alm/alm.db") == 0,
           "user defaults under XDG_RUNTIME_DIR and ~/.local/state");
    tap_ok(daemon_config_defaults_user(&user, "/m", "/run/user/1000", "/st", "/home/u", &err) ==
                   0 &&
               strcmp(user.database_path, "/st/alm/alm.db") == 0,
           "user database under XDG_STATE_HOME");
    tap_ok(daemon_config_defaults_user(&user, "/m", NULL, NULL, "/home/u", &err) < 0 &&
               strstr(err.message, "XDG_RUNTIME_DIR"),
           "user instance without XDG_RUNTIME_DIR refused: %s", err.message);
    tap_ok(daemon_config_defaults_user(&user, "/m", "run", NULL, "/home/u", &err) < 0,
           "relative XDG_RUNTIME_DIR refused");
}

static void test_all_keys(void)
{
    const char *yaml = "# almd\n"
                       "socket: /tmp/t/almd.sock\n"
                       "socket_mode: 0600\n"
                       "socket_group: wheel\n"
                       "admin_group: ops\n"
                       "database: /tmp/t/alm.db\n"
                       "model_dirs:\n"
                       "  - /srv/models\n"
                       "  - /opt/models\n"
                       "  - /srv/models\n"
                       "log_level: debug\n"
                       "max_clients: 3\n"
                       "max_request_bytes: 2M\n"
                       "max_prompt_tokens: 100\n";
    daemon_config c;
    alm_error err;
    int r = load(yaml, &c, &err);
    tap_ok(r == 0, "every key: loads (%s)", r ? err.message : "ok");
    if (r)
        return;
    tap_ok(strcmp(c.socket_path, "/tmp/t/almd.sock") == 0 && c.socket_mode == 0600 &&
               strcmp(c.socket_group, "wheel") == 0 && strcmp(c.admin_group, "ops") == 0 &&
               strcmp(c.database_path, "/tmp/t/alm.db") == 0,
           "socket, mode, groups and database read");
    tap_ok(c.n_model_dirs == 3 && strcmp(c.model_dirs[0], "/srv/models") == 0 &&
               strcmp(c.model_dirs[1], "/opt/models") == 0 &&
               strcmp(c.model_dirs[2], "/usr/share/alm/models") == 0,
           "model_dirs in order, duplicate dropped, default folder last");
    tap_ok(c.log_level == DAEMON_LOG_DEBUG && c.max_clients == 3 &&
               c.max_request_bytes == 2u << 20 && c.max_prompt_tokens == 100,
           "log level and limits read (2M = 2 MiB)");
    daemon_config_clear(&c);

    tap_ok(load("model_dirs: [/usr/share/alm/models, /a]\n", &c, &err) == 0 &&
               c.n_model_dirs == 2 && strcmp(c.model_dirs[1], "/a") == 0,
           "default folder listed explicitly is not added twice");
    daemon_config_clear(&c);
    tap_ok(load("model_dirs: []\n", &c, &err) == 0 && c.n_model_dirs == 1,
           "empty model_dirs still searches the default folder");
    daemon_config_clear(&c);

    static const struct { const char *yaml; mode_t mode; } modes[] = {
        { "socket_mode: 0660\n", 0660 }, { "socket_mode: \"0660\"\n", 0660 },
        { "socket_mode: 660\n", 0660 },  { "socket_mode: 0o640\n", 0640 },
        { "socket_mode: '0777'\n", 0777 },
    };
    for (size_t i = 0; i < sizeof modes / sizeof modes[0]; i++) {
        r = load(modes[i].yaml, &c, &err);
        tap_ok(r == 0 && c.socket_mode == modes[i].mode, "socket_mode octal: %.*s",
               (int)strlen(modes[i].yaml) - 1, modes[i].yaml);
        daemon_config_clear(&c);
    }
    tap_ok(load("max_request_bytes: 64KiB\n", &c, &err) == 0 && c.max_request_bytes == 65536,
           "64KiB suffix");
    daemon_config_clear(&c);
    tap_ok(load("{log_level: error, max_clients: 1}\n", &c, &err) == 0 &&
               c.log_level == DAEMON_LOG_ERROR && c.max_clients == 1,
           "flow mapping accepted");
    daemon_config_clear(&c);
}

static void test_errors(void)
{
    expect_error("socket: /a\n  bad: [\n", "syntax error", "almd.yaml:", "YAML syntax error");
    expect_error("max_clients: 3\nlog_level: [unclosed\n", "syntax error has line",
                 "almd.yaml:3:", NULL);
    expect_error("log_level: info\nsockt: /x\n", "unknown key with position",
                 "almd.yaml:2:1: unknown key \"sockt\"", "(known: socket, socket_mode");
    expect_error("max_clients: 3\nmax_clients: 4\n", "duplicate key",
                 "almd.yaml:2:1: duplicate key \"max_clients\"", "line 1");
    expect_error("- a\n- b\n", "top level a list", "almd.yaml:1:1:", "must be a mapping");
    expect_error("just text\n", "top level a scalar", "almd.yaml:1:1:", "must be a mapping");
    expect_error("max_clients: many\n", "integer key with text", "almd.yaml:1:14:",
                 "max_clients: expected an integer");
    expect_error("max_clients: \"3\"\n", "quoted integer", "quoted string", NULL);
    expect_error("max_clients: 0\n", "max_clients 0", "out of range (1..65536)", NULL);
    expect_error("max_clients: 99999999999999999999999\n", "overflowing integer",
                 "out of range", NULL);
    expect_error("max_clients: -1\n", "negative integer", "expected an integer", NULL);
    expect_error("max_clients: 3.5\n", "fraction", "expected an integer", NULL);
    expect_error("max_request_bytes: 100\n", "max_request_bytes too small", "out of range",
                 NULL);
    expect_error("max_request_bytes: 5T\n", "unknown suffix", "expected an integer", NULL);
    expect_error("max_request_bytes: 2G\n", "max_request_bytes too large", "out of range",
                 NULL);
    expect_error("max_prompt_tokens: 0\n", "max_prompt_tokens 0", "out of range", NULL);
    expect_error("socket_mode: 0680\n", "non-octal mode", "expected an octal mode", NULL);
    expect_error("socket_mode: 01777\n", "mode with sticky bit", "out of range", NULL);
    expect_error("socket_mode: 0066\n", "mode the owner cannot use", "owner", NULL);
    expect_error("socket: relative/path\n", "relative socket", "not an absolute path", NULL);
    expect_error("socket:\n", "empty value", "almd.yaml:1:", "no value");
    expect_error("database: ~\n", "null value", "database: no value", NULL);
    expect_error("database: [/a]\n", "list for a path", "expected an absolute path, got a list",
                 NULL);
    expect_error("model_dirs: /srv/models\n", "scalar for model_dirs",
                 "model_dirs: expected a list", NULL);
    expect_error("model_dirs:\n  - /a\n  - b\n", "relative folder in model_dirs",
                 "almd.yaml:3:5:", "\"b\" is not an absolute path");
    expect_error("model_dirs:\n  - {a: 1}\n", "mapping in model_dirs", "got a mapping", NULL);
    expect_error("log_level: loud\n", "unknown log level", "unknown level \"loud\"",
                 "debug, info, notice, warning, error");
    expect_error("socket_group: \"a b\"\n", "bad group name", "not a valid group name", NULL);
    expect_error("admin_group: {x: 1}\n", "mapping for a group", "got a mapping", NULL);
    expect_error("[a]: 1\n", "non-scalar key", "key must be a plain name", NULL);
    expect_error("max_clients: 1\n---\nmax_clients: 2\n", "two documents",
                 "second YAML document", NULL);
    expect_error("socket: \"/a\\0b\"\n", "NUL in a value", "NUL", NULL);
    expect_error("max_clients: 1\n\xff\xfe\n", "invalid UTF-8", "almd.yaml:2:1:", "UTF-8");

    /* No partial config: an error after valid keys leaves *out empty. */
    daemon_config c;
    alm_error err;
    memset(&c, 0x55, sizeof c);
    tap_ok(load("max_clients: 5\nsocket: /x\nlog_level: bad\n", &c, &err) < 0 &&
               c.socket_path == NULL && c.max_clients == 0 && c.n_model_dirs == 0,
           "failed load leaves the output zeroed, not half-filled");
}

static void test_file(void)
{
    char path[] = "/tmp/alm-test-config-XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0) {
        tap_ok(0, "mkstemp: %s", strerror(errno));
        return;
    }
    const char *yaml = "max_clients: 7\nlog_level: warning\nbogus: 1\n";
    tap_ok(write(fd, yaml, strlen(yaml)) == (ssize_t)strlen(yaml), "wrote a temporary file");
    close(fd);
    daemon_config c;
    alm_error err = { 0 };
    char expected[64];
    snprintf(expected, sizeof expected, "%s:3:1: unknown key \"bogus\"", path);
    tap_ok(daemon_config_load(path, &defaults, &c, &err) < 0 &&
               strstr(err.message, expected) != NULL,
           "error from a file names that file: %s", err.message);
    fd = open(path, O_WRONLY | O_TRUNC);
    tap_ok(fd >= 0 && write(fd, yaml, 34) == 34, "rewrote the file without the bad key");
    close(fd);
    tap_ok(daemon_config_load(path, &defaults, &c, &err) == 0 &&
               c.source == DAEMON_CONFIG_FROM_FILE && c.max_clients == 7 &&
               c.log_level == DAEMON_LOG_WARNING,
           "file read");
    daemon_config_clear(&c);
    unlink(path);
}

/* Random mutations of a valid file: every load either succeeds or fails with
 * a message, never crashes (the sanitized build checks memory). */
static void test_mutations(void)
{
    const char *base = "socket: /tmp/a.sock\nsocket_mode: 0660\nmodel_dirs: [/a, /b]\n"
                       "log_level: info\nmax_request_bytes: 1M\nadmin_group: ops\n";
    size_t n = strlen(base);
    char buf[256];
    uint64_t state = 0x9e3779b97f4a7c15ull;
    int failures = 0, successes = 0, silent = 0;
    const char alphabet[] = ":-[]{}\"'#&*!|>%@`\n \t,?0a\\";
    for (int iter = 0; iter < 3000; iter++) {
        memcpy(buf, base, n);
        size_t len = n;
        int edits = 1 + (int)(iter % 4);
        for (int e = 0; e < edits; e++) {
            state = state * 6364136223846793005ull + 1442695040888963407ull;
            size_t pos = (size_t)(state >> 33) % len;
            unsigned kind = (unsigned)(state >> 20) % 3;
            char ch = (state >> 8) & 1 ? alphabet[(state >> 12) % (sizeof alphabet - 1)]
                                       : (char)(state >> 40);
            if (kind == 0)
                buf[pos] = ch;
            else if (kind == 1 && len + 1 < sizeof buf) {
                memmove(buf + pos + 1, buf + pos, len - pos);
                buf[pos] = ch;
                len++;
            } else if (len > 1) {
                memmove(buf + pos, buf + pos + 1, len - pos - 1);
                len--;
            }
        }
        daemon_config c;
        alm_error err = { 0 };
        int r = daemon_config_load_string(buf, len, "fuzz.yaml", &defaults, &c, &err);
        if (r == 0) {
            successes++;
            silent += c.socket_path == NULL || c.n_model_dirs == 0;
        } else {
            failures++;
            silent += err.message[0] == '\0' || strncmp(err.message, "fuzz.yaml", 9) != 0;
        }
        daemon_config_clear(&c);
    }
    tap_diag("mutations: %d loaded, %d refused", successes, failures);
    tap_ok(silent == 0 && failures > 0 && successes > 0,
           "3000 mutated files: each loads or fails with a message naming the file");
}

int main(void)
{
    alm_error err = { 0 };
    if (daemon_config_defaults_system(&defaults, "/usr/share/alm/models", &err) < 0) {
        tap_ok(0, "defaults: %s", err.message);
        return tap_done();
    }
    test_defaults();
    test_all_keys();
    test_errors();
    test_file();
    test_mutations();
    return tap_done();
}
