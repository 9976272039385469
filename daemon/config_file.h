/* almd's YAML configuration file (almd.yaml(5)): where the socket and the
 * database live, who may change settings, and the limits that protect the
 * daemon from its clients. Loaded once at start; a file that cannot be read
 * or has a bad key stops almd with file:line:column in the message. */
#ifndef ALM_DAEMON_CONFIG_FILE_H
#define ALM_DAEMON_CONFIG_FILE_H

#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "alm.h"

typedef enum daemon_log_level {
    DAEMON_LOG_DEBUG,
    DAEMON_LOG_INFO,
    DAEMON_LOG_NOTICE,
    DAEMON_LOG_WARNING,
    DAEMON_LOG_ERROR,
} daemon_log_level;

/* Why the values in a daemon_config are what they are. */
typedef enum daemon_config_source {
    DAEMON_CONFIG_FROM_FILE,       /* the file was read */
    DAEMON_CONFIG_NO_PATH,         /* no file was named: defaults */
    DAEMON_CONFIG_FILE_ABSENT,     /* the named file does not exist: defaults */
} daemon_config_source;

/* The defaults that depend on how almd runs (system service or user
 * instance) and on where it was installed. Fixed-size so that nothing needs
 * freeing. */
typedef struct daemon_config_defaults {
    char socket_path[PATH_MAX];
    char database_path[PATH_MAX];
    /* Installed default models' folder: always searched, after model_dirs. */
    char default_models_dir[PATH_MAX];
} daemon_config_defaults;

typedef struct daemon_config {
    daemon_config_source source;
    char *socket_path;
    mode_t socket_mode;
    char *socket_group;
    char *admin_group;             /* may use config set/unset and restart */
    char *database_path;
    /* Folders in which model names are looked up, in order: the configured
     * ones, then the default models' folder (always present, never twice). */
    char **model_dirs;
    size_t n_model_dirs;
    daemon_log_level log_level;
    unsigned max_clients;
    size_t max_request_bytes;
    size_t max_prompt_tokens;
} daemon_config;

#define DAEMON_CONFIG_DEFAULT_SOCKET_MODE 0660
#define DAEMON_CONFIG_DEFAULT_SOCKET_GROUP "alm"
#define DAEMON_CONFIG_DEFAULT_ADMIN_GROUP "alm-admin"
#define DAEMON_CONFIG_DEFAULT_MAX_CLIENTS 64u
#define DAEMON_CONFIG_DEFAULT_MAX_REQUEST_BYTES ((size_t)1 << 20)
#define DAEMON_CONFIG_DEFAULT_MAX_PROMPT_TOKENS ((size_t)32768)
/* Files larger than this are refused before parsing (a config is tiny). */
#define DAEMON_CONFIG_MAX_FILE_BYTES ((size_t)1 << 20)

/* System service: /run/alm/almd.sock and /var/lib/alm/alm.db. */
int daemon_config_defaults_system(daemon_config_defaults *d,
                                  const char *default_models_dir, alm_error *err);

/* User instance: $XDG_RUNTIME_DIR/alm/almd.sock and
 * $XDG_STATE_HOME/alm/alm.db (XDG_STATE_HOME defaults to $HOME/.local/state).
 * The environment values are parameters so that tests need no setenv; pass
 * getenv("XDG_RUNTIME_DIR") and so on. An unset or relative XDG_RUNTIME_DIR
 * (or HOME, when XDG_STATE_HOME is unset) is an error. */
int daemon_config_defaults_user(daemon_config_defaults *d, const char *default_models_dir,
                                const char *xdg_runtime_dir, const char *xdg_state_home,
                                const char *home, alm_error *err);

/* Loads path (NULL: none) over the defaults. On success *out owns its
 * strings (daemon_config_clear); on error *out is left zeroed and err says
 * "FILE:LINE:COLUMN: what is wrong". */
int daemon_config_load(const char *path, const daemon_config_defaults *defaults,
                       daemon_config *out, alm_error *err);

/* The same from text already in memory; name is used in messages. */
int daemon_config_load_string(const char *text, size_t len, const char *name,
                              const daemon_config_defaults *defaults,
                              daemon_config *out, alm_error *err);

void daemon_config_clear(daemon_config *config);

const char *daemon_log_level_name(daemon_log_level level);
/* Returns 0 and sets *level, or -EINVAL for an unknown name. */
int daemon_log_level_from_name(const char *name, daemon_log_level *level);

#endif
