/* almd's SQLite database: the settings (`alm config`), the history of their
 * changes, and a log of requests for `alm stats`.
 *
 * The store keeps strings; which keys and values are valid is decided by
 * common/settings_keys.h before a value reaches settings_store_set. Every
 * write is one transaction (a setting and its history row commit together
 * or not at all). A database that cannot be read, fails its check, or was
 * written by a newer almd is refused with a message and never written to.
 *
 * A store may be used from several threads (calls are serialized); several
 * processes may open the same file (WAL: readers never wait for writers).
 * All functions return 0 (or the documented positive value) on success and
 * a negative errno with a message in err on failure. */
#ifndef ALM_DAEMON_SETTINGS_STORE_H
#define ALM_DAEMON_SETTINGS_STORE_H

#include <stddef.h>
#include <stdint.h>

#include "alm.h"

/* The schema version this code writes (PRAGMA user_version). */
#define SETTINGS_STORE_SCHEMA_VERSION 1

typedef struct settings_store settings_store;

/* Opens path, creating it (and its schema) when absent or empty, migrating an
 * older schema. The folder must exist. Refused, with the file left as it
 * was: not a SQLite database, quick_check failing, a schema version newer
 * than SETTINGS_STORE_SCHEMA_VERSION, another application's database, tables
 * of the wrong shape. */
int settings_store_open(const char *path, settings_store **out, alm_error *err);
void settings_store_close(settings_store *store);

/* Runs PRAGMA integrity_check (the full check; open runs the quicker
 * quick_check). 0 when it passes, -EIO with the first problem otherwise. */
int settings_store_check_integrity(settings_store *store, alm_error *err);

/* ------------------------------------------------------------- settings */

/* *value: malloc'ed copy of the stored value. Returns 1 when the key is set,
 * 0 (and *value NULL) when it is not. */
int settings_store_get(settings_store *store, const char *key, char **value, alm_error *err);

/* Stores value and, in the same transaction, a history row (old value, new
 * value, changed_by: the peer's user name or "uid N"). Returns 1 when the
 * value changed, 0 when it was already stored (nothing is written then). */
int settings_store_set(settings_store *store, const char *key, const char *value,
                       const char *changed_by, alm_error *err);

/* Removes key (so its default applies) with a history row whose new value is
 * NULL. Returns 1 when it was set, 0 when it was not (nothing written). */
int settings_store_unset(settings_store *store, const char *key, const char *changed_by,
                         alm_error *err);

typedef struct settings_entry {
    char *key;
    char *value;
    char *updated_at;   /* UTC, ISO 8601 with milliseconds */
} settings_entry;

/* All stored settings, sorted by key. Free with settings_entries_free. */
int settings_store_list(settings_store *store, settings_entry **entries, size_t *n,
                        alm_error *err);
void settings_entries_free(settings_entry *entries, size_t n);

typedef struct settings_history_entry {
    int64_t id;         /* increasing in commit order */
    char *key;
    char *old_value;    /* NULL: was not set */
    char *new_value;    /* NULL: unset */
    char *changed_by;
    char *changed_at;   /* UTC, ISO 8601 with milliseconds */
} settings_history_entry;

/* History rows, oldest first; key NULL for all keys. limit 0: all rows,
 * otherwise the newest limit rows. Free with settings_history_free. */
int settings_store_history(settings_store *store, const char *key, size_t limit,
                           settings_history_entry **entries, size_t *n, alm_error *err);
void settings_history_free(settings_history_entry *entries, size_t n);

/* ---------------------------------------------------------- request log */

typedef struct request_log_entry {
    double started_at, finished_at;     /* Unix time, seconds */
    const char *model;
    const char *draft_model;            /* NULL or "" when none */
    int64_t prompt_tokens, generated_tokens;
    double prefill_seconds, decode_seconds;
    int64_t drafted, accepted;
    const int64_t *accepted_by_position; /* [i]: accepted at draft depth i + 1 */
    size_t n_positions;
    const char *finish_reason;
    int64_t client_uid;                 /* -1 when unknown */
} request_log_entry;

int settings_store_log_request(settings_store *store, const request_log_entry *entry,
                               alm_error *err);

/* Sums over every logged request. */
typedef struct request_stats {
    int64_t requests, prompt_tokens, generated_tokens, drafted, accepted;
    double prefill_seconds, decode_seconds;
    int64_t *accepted_by_position;      /* malloc'ed, n_positions entries */
    size_t n_positions;
} request_stats;

int settings_store_request_stats(settings_store *store, request_stats *stats, alm_error *err);
void request_stats_clear(request_stats *stats);

#endif
