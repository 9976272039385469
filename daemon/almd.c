/* almd: the alm daemon. Reads almd.yaml, opens the settings database, and
 * serves the protocol on its socket until SIGTERM (see server.h). Runs in
 * the foreground, as systemd expects. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config_file.h"
#include "listen_socket.h"
#include "log.h"
#include "protocol.h"
#include "server.h"
#include "settings_store.h"

#ifndef ALM_VERSION
#define ALM_VERSION "unknown"
#endif
#ifndef ALMD_DEFAULT_MODELS_DIR
#define ALMD_DEFAULT_MODELS_DIR "/usr/share/alm/models"
#endif
#ifndef ALMD_SYSTEM_CONFIG
#define ALMD_SYSTEM_CONFIG "/etc/alm/almd.yaml"
#endif

static void print_help(void)
{
    printf("usage: almd [--config FILE] [--user] [--check-config]\n"
           "\n"
           "The alm daemon: keeps the models resident and serves alm(1) on a Unix socket.\n"
           "\n"
           "  --config FILE   almd.yaml(5) to read (default: %s for the system\n"
           "                  service; none for --user); an absent file means defaults\n"
           "  --user          per-user defaults: socket in $XDG_RUNTIME_DIR/alm,\n"
           "                  database in $XDG_STATE_HOME/alm\n"
           "  --check-config  read the configuration, print it and exit\n"
           "  --help          this text\n"
           "  --version       the version\n"
           "\n"
           "Methods (protocol version %d; * = root or admin_group only):\n",
           ALMD_SYSTEM_CONFIG, PROTOCOL_VERSION);
    size_t n;
    const protocol_method *methods = protocol_methods(&n);
    for (size_t i = 0; i < n; i++)
        printf("  %-13s%s %s\n", methods[i].name, methods[i].needs_admin ? "*" : " ",
               methods[i].summary);
}

static void print_config(const daemon_config *c)
{
    printf("socket: %s\nsocket_mode: 0%03o\nsocket_group: %s\nadmin_group: %s\n"
           "database: %s\nmodel_dirs:\n",
           c->socket_path, (unsigned)c->socket_mode, c->socket_group, c->admin_group,
           c->database_path);
    for (size_t i = 0; i < c->n_model_dirs; i++)
        printf("  - %s\n", c->model_dirs[i]);
    printf("log_level: %s\nmax_clients: %u\nmax_request_bytes: %zu\nmax_prompt_tokens: %zu\n",
           daemon_log_level_name(c->log_level), c->max_clients, c->max_request_bytes,
           c->max_prompt_tokens);
}

int main(int argc, char **argv)
{
    static const struct option options[] = {
        { "config", required_argument, NULL, 'c' },
        { "user", no_argument, NULL, 'u' },
        { "check-config", no_argument, NULL, 'k' },
        { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, 'V' },
        { 0 },
    };
    const char *config_path = NULL;
    bool user = false, check_only = false, config_given = false;
    int opt;
    while ((opt = getopt_long(argc, argv, "c:", options, NULL)) != -1) {
        switch (opt) {
        case 'c': config_path = optarg; config_given = true; break;
        case 'u': user = true; break;
        case 'k': check_only = true; break;
        case 'h': print_help(); return 0;
        case 'V': printf("almd %s (protocol %d)\n", ALM_VERSION, PROTOCOL_VERSION); return 0;
        default: fprintf(stderr, "almd: try almd --help\n"); return 2;
        }
    }
    if (optind < argc) {
        fprintf(stderr, "almd: unexpected argument \"%s\" (try almd --help)\n", argv[optind]);
        return 2;
    }
    if (!config_given && !user)
        config_path = ALMD_SYSTEM_CONFIG;

    daemon_log log;
    daemon_log_init(&log, DAEMON_LOG_INFO);
    alm_error err = { 0 };
    daemon_config_defaults defaults;
    int r = user ? daemon_config_defaults_user(&defaults, ALMD_DEFAULT_MODELS_DIR,
                                               getenv("XDG_RUNTIME_DIR"),
                                               getenv("XDG_STATE_HOME"), getenv("HOME"), &err)
                 : daemon_config_defaults_system(&defaults, ALMD_DEFAULT_MODELS_DIR, &err);
    daemon_config config;
    if (r >= 0)
        r = daemon_config_load(config_path, &defaults, &config, &err);
    if (r < 0) {
        log_error(&log, "%s", err.message);
        return 1;
    }
    log.level = config.log_level;
    if (check_only) {
        print_config(&config);
        daemon_config_clear(&config);
        return 0;
    }
    if (config.source == DAEMON_CONFIG_FILE_ABSENT)
        log_info(&log, "%s does not exist: running on the defaults", config_path);

    settings_store *store = NULL;
    r = make_parent_dirs(config.database_path, &err);
    if (r >= 0)
        r = settings_store_open(config.database_path, &store, &err);
    if (r < 0) {
        log_error(&log, "%s", err.message);
        daemon_config_clear(&config);
        return 1;
    }
    server_options so = { .config = &config, .store = store, .log = &log };
    r = server_run(&so, &err);
    if (r < 0)
        log_error(&log, "%s", err.message);
    else
        log_info(&log, "stopped");
    settings_store_close(store);
    daemon_config_clear(&config);
    return r < 0 ? 1 : 0;
}
