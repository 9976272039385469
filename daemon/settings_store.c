/* almd's SQLite store. Opening is careful in a fixed order: everything that
 * only reads (the file's magic bytes, quick_check, the schema version, the
 * tables' shape) runs before anything that writes (WAL mode, migrations), so
 * a file we cannot make sense of is refused untouched. */
#include "settings_store.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <libgen.h>
#include <math.h>
#include <pthread.h>
#include <sqlite3.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/cleanup.h"
#include "core/error.h"

/* PRAGMA application_id: 'almd', so that another program's SQLite file that
 * happens to sit at our path is recognised as not ours. */
#define SETTINGS_STORE_APPLICATION_ID 0x616c6d64

/* How long a write waits for another process's write before giving up. */
#define SETTINGS_STORE_BUSY_TIMEOUT_MS 5000

/* A corrupted JSON array in one row must not make stats allocate the world. */
#define SETTINGS_STORE_MAX_POSITIONS 1024

struct settings_store {
    sqlite3 *db;
    char *path;
    pthread_mutex_t lock;   /* one transaction at a time on this connection */
};

static inline void finalizep(sqlite3_stmt **stmt) { sqlite3_finalize(*stmt); }
#define _cleanup_finalize_ _cleanup_(finalizep)

/* ------------------------------------------------------------- schema */

/* migrations[v] takes a database from version v - 1 to v. Append only: a
 * released step is never edited, a new one is added with its own number. */
static const char *const migrations[SETTINGS_STORE_SCHEMA_VERSION + 1] = {
    [1] =
        "CREATE TABLE settings ("
        "  key TEXT PRIMARY KEY NOT NULL,"
        "  value TEXT NOT NULL,"
        "  updated_at TEXT NOT NULL);"
        "CREATE TABLE setting_history ("
        "  id INTEGER PRIMARY KEY,"
        "  key TEXT NOT NULL,"
        "  old_value TEXT,"
        "  new_value TEXT,"
        "  changed_by TEXT NOT NULL,"
        "  changed_at TEXT NOT NULL);"
        "CREATE INDEX setting_history_by_key ON setting_history (key, id);"
        "CREATE TABLE request_log ("
        "  id INTEGER PRIMARY KEY,"
        "  started_at REAL NOT NULL,"
        "  finished_at REAL NOT NULL,"
        "  model TEXT NOT NULL,"
        "  draft_model TEXT,"
        "  prompt_tokens INTEGER NOT NULL,"
        "  generated_tokens INTEGER NOT NULL,"
        "  prefill_seconds REAL NOT NULL,"
        "  decode_seconds REAL NOT NULL,"
        "  drafted INTEGER NOT NULL,"
        "  accepted INTEGER NOT NULL,"
        "  accepted_by_position TEXT NOT NULL DEFAULT '[]',"
        "  finish_reason TEXT NOT NULL,"
        "  client_uid INTEGER);",
};

/* The columns this code reads and writes, per table, at the current schema
 * version: a database that lacks one was not written by us. */
typedef struct table_shape {
    const char *table;
    const char *const *columns;
} table_shape;

static const char *const settings_columns[] = { "key", "value", "updated_at", NULL };
static const char *const history_columns[] = {
    "id", "key", "old_value", "new_value", "changed_by", "changed_at", NULL };
static const char *const request_log_columns[] = {
    "id", "started_at", "finished_at", "model", "draft_model", "prompt_tokens",
    "generated_tokens", "prefill_seconds", "decode_seconds", "drafted", "accepted",
    "accepted_by_position", "finish_reason", "client_uid", NULL };

static const table_shape schema_shape[] = {
    { "settings", settings_columns },
    { "setting_history", history_columns },
    { "request_log", request_log_columns },
};

/* ------------------------------------------------------------ helpers */

static int sqlite_to_errno(int rc)
{
    switch (rc & 0xff) {
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return -EBUSY;
    case SQLITE_NOMEM:
        return -ENOMEM;
    case SQLITE_READONLY:
        return -EROFS;
    case SQLITE_FULL:
        return -ENOSPC;
    case SQLITE_PERM:
    case SQLITE_AUTH:
        return -EACCES;
    case SQLITE_CANTOPEN:
        return -ENOENT;
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB:
        return -EBADMSG;
    case SQLITE_CONSTRAINT:
    case SQLITE_MISMATCH:
    case SQLITE_TOOBIG:
        return -EINVAL;
    default:
        return -EIO;
    }
}

static int db_error(const settings_store *store, int rc, const char *what, alm_error *err)
{
    return alm_error_set(err, sqlite_to_errno(rc), "settings database %s: %s: %s",
                         store->path, what, sqlite3_errmsg(store->db));
}

static int exec_sql(settings_store *store, const char *sql, const char *what, alm_error *err)
{
    int rc = sqlite3_exec(store->db, sql, NULL, NULL, NULL);
    return rc == SQLITE_OK ? 0 : db_error(store, rc, what, err);
}

static int prepare(settings_store *store, const char *sql, sqlite3_stmt **stmt, alm_error *err)
{
    int rc = sqlite3_prepare_v2(store->db, sql, -1, stmt, NULL);
    return rc == SQLITE_OK ? 0 : db_error(store, rc, "preparing a query", err);
}

/* A single integer from a query such as "PRAGMA user_version". */
static int query_int(settings_store *store, const char *sql, int64_t *out, alm_error *err)
{
    _cleanup_finalize_ sqlite3_stmt *stmt = NULL;
    int r = prepare(store, sql, &stmt, err);
    if (r < 0)
        return r;
    int rc = sqlite3_step(stmt);
    if (rc != SQLITE_ROW)
        return db_error(store, rc, sql, err);
    *out = sqlite3_column_int64(stmt, 0);
    return 0;
}

static char *column_strdup(sqlite3_stmt *stmt, int column)
{
    const unsigned char *text = sqlite3_column_text(stmt, column);
    return text ? strdup((const char *)text) : NULL;
}

/* UTC wall-clock time, ISO 8601 with milliseconds, computed once per
 * transaction so that a setting and its history row carry the same time. */
static void now_iso8601(char out[32])
{
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    size_t used = strftime(out, 24, "%Y-%m-%dT%H:%M:%S", &tm);
    int milliseconds = (int)(ts.tv_nsec / 1000000) % 1000;
    snprintf(out + used, 32 - used, ".%03dZ", milliseconds);
}

static int begin_write(settings_store *store, alm_error *err)
{
    /* IMMEDIATE takes the write lock up front: a read-then-write transaction
     * never has to upgrade (and fail with SQLITE_BUSY) halfway through. */
    return exec_sql(store, "BEGIN IMMEDIATE", "starting a transaction", err);
}

static int finish_write(settings_store *store, int r, alm_error *err)
{
    if (r < 0) {
        sqlite3_exec(store->db, "ROLLBACK", NULL, NULL, NULL);
        return r;
    }
    int c = exec_sql(store, "COMMIT", "committing", err);
    if (c < 0) {
        sqlite3_exec(store->db, "ROLLBACK", NULL, NULL, NULL);
        return c;
    }
    return r;
}

/* ----------------------------------------------------- opening, checks */

/* What can be said about path without SQLite: the folder exists and can be
 * written (WAL needs its -wal and -shm files beside the database), and an
 * existing non-empty file starts with SQLite's magic bytes. */
static int check_location(const char *path, alm_error *err)
{
    _cleanup_free_ char *path_copy = strdup(path);
    if (!path_copy)
        return alm_error_set(err, -ENOMEM, "out of memory");
    const char *folder = dirname(path_copy);
    struct stat st;
    if (stat(folder, &st) < 0)
        return alm_error_set(err, -errno, "settings database %s: folder %s: %s",
                             path, folder, strerror(errno));
    if (!S_ISDIR(st.st_mode))
        return alm_error_set(err, -ENOTDIR, "settings database %s: %s is not a folder", path, folder);
    if (access(folder, W_OK | X_OK) < 0)
        return alm_error_set(err, -errno, "settings database %s: folder %s is not writable (%s)",
                             path, folder, strerror(errno));

    if (stat(path, &st) < 0) {
        if (errno == ENOENT)
            return 0;   /* created by the open */
        return alm_error_set(err, -errno, "settings database %s: %s", path, strerror(errno));
    }
    if (!S_ISREG(st.st_mode))
        return alm_error_set(err, -EINVAL, "settings database %s is not a regular file", path);
    _cleanup_close_ int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return alm_error_set(err, -errno, "settings database %s cannot be read: %s",
                             path, strerror(errno));
    if (access(path, W_OK) < 0)
        return alm_error_set(err, -errno, "settings database %s is not writable: %s",
                             path, strerror(errno));
    if (st.st_size == 0)
        return 0;   /* an empty file is an empty database: the schema is created */
    static const char magic[16] = "SQLite format 3";   /* with its NUL */
    char head[16] = { 0 };
    ssize_t got = read(fd, head, sizeof head);
    if (got != (ssize_t)sizeof head || memcmp(head, magic, sizeof magic) != 0)
        return alm_error_set(err, -EBADMSG,
                             "settings database %s is not a SQLite database (its first bytes "
                             "are not \"SQLite format 3\"); refusing to use it, the file is left "
                             "as it is", path);
    return 0;
}

/* A check's report (several lines, one per problem) as one short line. */
static void summarize_report(const char *report, char *out, size_t out_size)
{
    size_t o = 0;
    for (const char *p = report; *p && o + 4 < out_size; p++) {
        if (*p == '\n') {
            out[o++] = ';';
            out[o++] = ' ';
        } else {
            out[o++] = *p;
        }
    }
    if (o + 4 >= out_size) {   /* cut: say so */
        memcpy(out + out_size - 4, "...", 3);
        o = out_size - 1;
    }
    out[o] = '\0';
}

static int check_quick(settings_store *store, alm_error *err)
{
    _cleanup_finalize_ sqlite3_stmt *stmt = NULL;
    int rc = sqlite3_prepare_v2(store->db, "PRAGMA quick_check", -1, &stmt, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_step(stmt);
    if (rc != SQLITE_ROW)
        return alm_error_set(err, sqlite_to_errno(rc) == -EBUSY ? -EBUSY : -EBADMSG,
                             "settings database %s cannot be read: %s; refusing to use it, "
                             "the file is left as it is", store->path, sqlite3_errmsg(store->db));
    const char *result = (const char *)sqlite3_column_text(stmt, 0);
    if (!result || strcmp(result, "ok") != 0) {
        char summary[160];
        summarize_report(result ? result : "?", summary, sizeof summary);
        return alm_error_set(err, -EBADMSG,
                             "settings database %s is corrupt (quick_check: %s); refusing to use "
                             "it, the file is left as it is", store->path, summary);
    }
    return 0;
}

static int check_table_shape(settings_store *store, const table_shape *shape, alm_error *err)
{
    _cleanup_finalize_ sqlite3_stmt *stmt = NULL;
    int r = prepare(store, "SELECT 1 FROM pragma_table_info(?1) WHERE name = ?2", &stmt, err);
    if (r < 0)
        return r;
    for (const char *const *column = shape->columns; *column; column++) {
        sqlite3_reset(stmt);
        sqlite3_bind_text(stmt, 1, shape->table, -1, SQLITE_STATIC);
        sqlite3_bind_text(stmt, 2, *column, -1, SQLITE_STATIC);
        int rc = sqlite3_step(stmt);
        if (rc == SQLITE_DONE)
            return alm_error_set(err, -EBADMSG,
                                 "settings database %s: table %s has no column %s (or the table "
                                 "is missing); it was not written by almd, refusing to use it",
                                 store->path, shape->table, *column);
        if (rc != SQLITE_ROW)
            return db_error(store, rc, "reading the schema", err);
    }
    return 0;
}

/* Everything that decides whether the file is ours, read-only. Returns the
 * schema version found. */
static int check_readable(settings_store *store, int64_t *version, alm_error *err)
{
    int r = check_quick(store, err);
    if (r < 0)
        return r;
    int64_t application_id, tables;
    if ((r = query_int(store, "PRAGMA application_id", &application_id, err)) < 0 ||
        (r = query_int(store, "PRAGMA user_version", version, err)) < 0 ||
        (r = query_int(store, "SELECT count(*) FROM sqlite_schema", &tables, err)) < 0)
        return r;
    if (application_id != 0 && application_id != SETTINGS_STORE_APPLICATION_ID)
        return alm_error_set(err, -EBADMSG,
                             "settings database %s belongs to another program (application_id "
                             "0x%" PRIx64 "); refusing to use it", store->path, application_id);
    if (*version > SETTINGS_STORE_SCHEMA_VERSION || *version < 0)
        return alm_error_set(err, -ENOTSUP,
                             "settings database %s has schema version %" PRId64 ", newer than "
                             "the %d this almd knows (written by a newer almd?); refusing to use "
                             "it, the file is left as it is", store->path, *version,
                             SETTINGS_STORE_SCHEMA_VERSION);
    if (*version == 0 && tables > 0)
        return alm_error_set(err, -EBADMSG,
                             "settings database %s has tables but no almd schema version (another "
                             "program's database?); refusing to use it", store->path);
    /* Only the current version has a shape to check; older ones are
     * migrated by steps that would fail on tables that are not theirs. */
    if (*version == SETTINGS_STORE_SCHEMA_VERSION)
        for (size_t i = 0; i < sizeof schema_shape / sizeof schema_shape[0]; i++)
            if ((r = check_table_shape(store, &schema_shape[i], err)) < 0)
                return r;
    return 0;
}

static int migrate(settings_store *store, alm_error *err)
{
    int r = begin_write(store, err);
    if (r < 0)
        return r;
    /* Read again under the write lock: another almd may have just migrated. */
    int64_t version;
    r = query_int(store, "PRAGMA user_version", &version, err);
    for (int64_t v = version + 1; r >= 0 && v <= SETTINGS_STORE_SCHEMA_VERSION; v++) {
        char what[64];
        snprintf(what, sizeof what, "migrating to schema version %" PRId64, v);
        r = exec_sql(store, migrations[v], what, err);
    }
    if (r >= 0 && version < SETTINGS_STORE_SCHEMA_VERSION) {
        char sql[128];
        snprintf(sql, sizeof sql, "PRAGMA user_version = %d; PRAGMA application_id = %d",
                 SETTINGS_STORE_SCHEMA_VERSION, SETTINGS_STORE_APPLICATION_ID);
        r = exec_sql(store, sql, "recording the schema version", err);
    }
    return finish_write(store, r, err);
}

static int configure_connection(settings_store *store, alm_error *err)
{
    /* WAL: readers (alm stats, a second almd checking) never block the
     * writer and a crash never leaves a half-written page in the database.
     * synchronous=FULL rather than NORMAL: in WAL mode NORMAL stays
     * consistent but may lose the last commits on power loss; settings and
     * the request log are written once per human action or per request, so
     * an fsync each is cheap, and an acknowledged `alm config set` then
     * survives a power cut too. */
    _cleanup_finalize_ sqlite3_stmt *stmt = NULL;
    int r = prepare(store, "PRAGMA journal_mode = WAL", &stmt, err);
    if (r < 0)
        return r;
    int rc = sqlite3_step(stmt);
    if (rc != SQLITE_ROW)
        return db_error(store, rc, "switching to WAL mode", err);
    const char *mode = (const char *)sqlite3_column_text(stmt, 0);
    if (!mode || strcmp(mode, "wal") != 0)
        return alm_error_set(err, -ENOTSUP,
                             "settings database %s: WAL mode is not available here (journal "
                             "mode stays %s); is the file on a network file system?",
                             store->path, mode ? mode : "?");
    return exec_sql(store, "PRAGMA synchronous = FULL", "setting synchronous", err);
}

void settings_store_close(settings_store *store)
{
    if (!store)
        return;
    sqlite3_close(store->db);
    pthread_mutex_destroy(&store->lock);
    free(store->path);
    free(store);
}

static inline void settings_store_closep(settings_store **store) { settings_store_close(*store); }

int settings_store_open(const char *path, settings_store **out, alm_error *err)
{
    *out = NULL;
    if (!path || !*path)
        return alm_error_set(err, -EINVAL, "settings database: no path given");
    int r = check_location(path, err);
    if (r < 0)
        return r;

    _cleanup_(settings_store_closep) settings_store *store = calloc(1, sizeof *store);
    if (!store)
        return alm_error_set(err, -ENOMEM, "out of memory");
    store->path = strdup(path);
    if (!store->path || pthread_mutex_init(&store->lock, NULL) != 0) {
        free(store->path);
        free(TAKE_PTR(store));
        return alm_error_set(err, -ENOMEM, "out of memory");
    }
    int rc = sqlite3_open_v2(path, &store->db,
                             SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX,
                             NULL);
    if (rc != SQLITE_OK)
        return alm_error_set(err, sqlite_to_errno(rc), "settings database %s cannot be opened: %s",
                             path, store->db ? sqlite3_errmsg(store->db) : sqlite3_errstr(rc));
    sqlite3_extended_result_codes(store->db, 1);
    sqlite3_busy_timeout(store->db, SETTINGS_STORE_BUSY_TIMEOUT_MS);
    /* Closing checkpoints the WAL into the database: a write. Off until the
     * file is recognised as ours, so that refusing one writes nothing. */
    sqlite3_db_config(store->db, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, NULL);

    int64_t version;
    if ((r = check_readable(store, &version, err)) < 0)
        return r;
    /* From here on we write: the file has been recognised as ours. */
    if ((r = configure_connection(store, err)) < 0)
        return r;
    if (version < SETTINGS_STORE_SCHEMA_VERSION && (r = migrate(store, err)) < 0)
        return r;
    sqlite3_db_config(store->db, SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 0, NULL);
    *out = TAKE_PTR(store);
    return 0;
}

int settings_store_check_integrity(settings_store *store, alm_error *err)
{
    pthread_mutex_lock(&store->lock);
    _cleanup_finalize_ sqlite3_stmt *stmt = NULL;
    int r = prepare(store, "PRAGMA integrity_check", &stmt, err);
    if (r >= 0) {
        int rc = sqlite3_step(stmt);
        const char *result = rc == SQLITE_ROW ? (const char *)sqlite3_column_text(stmt, 0) : NULL;
        if (rc != SQLITE_ROW)
            r = db_error(store, rc, "integrity_check", err);
        else if (!result || strcmp(result, "ok") != 0) {
            char summary[160];
            summarize_report(result, summary, sizeof summary);
            r = alm_error_set(err, -EBADMSG, "settings database %s is corrupt (integrity_check: %s)",
                              store->path, summary);
        }
    }
    pthread_mutex_unlock(&store->lock);
    return r;
}

/* ----------------------------------------------------------- settings */

static int check_key(const char *key, alm_error *err)
{
    if (!key || !*key)
        return alm_error_set(err, -EINVAL, "settings database: empty setting name");
    return 0;
}

/* Inside the lock. *value NULL when not set. */
static int read_value(settings_store *store, const char *key, char **value, alm_error *err)
{
    *value = NULL;
    _cleanup_finalize_ sqlite3_stmt *stmt = NULL;
    int r = prepare(store, "SELECT value FROM settings WHERE key = ?1", &stmt, err);
    if (r < 0)
        return r;
    sqlite3_bind_text(stmt, 1, key, -1, SQLITE_STATIC);
    int rc = sqlite3_step(stmt);
    if (rc == SQLITE_DONE)
        return 0;
    if (rc != SQLITE_ROW)
        return db_error(store, rc, "reading a setting", err);
    *value = column_strdup(stmt, 0);
    if (!*value)
        return alm_error_set(err, -ENOMEM, "out of memory");
    return 1;
}

int settings_store_get(settings_store *store, const char *key, char **value, alm_error *err)
{
    *value = NULL;
    int r = check_key(key, err);
    if (r < 0)
        return r;
    pthread_mutex_lock(&store->lock);
    r = read_value(store, key, value, err);
    pthread_mutex_unlock(&store->lock);
    return r;
}

static int add_history(settings_store *store, const char *key, const char *old_value,
                       const char *new_value, const char *changed_by, const char *now,
                       alm_error *err)
{
    _cleanup_finalize_ sqlite3_stmt *stmt = NULL;
    int r = prepare(store,
                    "INSERT INTO setting_history (key, old_value, new_value, changed_by, changed_at) "
                    "VALUES (?1, ?2, ?3, ?4, ?5)", &stmt, err);
    if (r < 0)
        return r;
    sqlite3_bind_text(stmt, 1, key, -1, SQLITE_STATIC);
    sqlite3_bind_text(stmt, 2, old_value, -1, SQLITE_STATIC);   /* NULL binds NULL */
    sqlite3_bind_text(stmt, 3, new_value, -1, SQLITE_STATIC);
    sqlite3_bind_text(stmt, 4, changed_by, -1, SQLITE_STATIC);
    sqlite3_bind_text(stmt, 5, now, -1, SQLITE_STATIC);
    int rc = sqlite3_step(stmt);
    return rc == SQLITE_DONE ? 0 : db_error(store, rc, "recording the change", err);
}

/* Inside a write transaction. */
static int set_in_transaction(settings_store *store, const char *key, const char *value,
                              const char *changed_by, alm_error *err)
{
    _cleanup_free_ char *old_value = NULL;
    int r = read_value(store, key, &old_value, err);
    if (r < 0)
        return r;
    if (old_value && strcmp(old_value, value) == 0)
        return 0;
    char now[32];
    now_iso8601(now);
    _cleanup_finalize_ sqlite3_stmt *stmt = NULL;
    r = prepare(store,
                "INSERT INTO settings (key, value, updated_at) VALUES (?1, ?2, ?3) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value, "
                "updated_at = excluded.updated_at", &stmt, err);
    if (r < 0)
        return r;
    sqlite3_bind_text(stmt, 1, key, -1, SQLITE_STATIC);
    sqlite3_bind_text(stmt, 2, value, -1, SQLITE_STATIC);
    sqlite3_bind_text(stmt, 3, now, -1, SQLITE_STATIC);
    int rc = sqlite3_step(stmt);
    if (rc != SQLITE_DONE)
        return db_error(store, rc, "storing a setting", err);
    r = add_history(store, key, old_value, value, changed_by, now, err);
    return r < 0 ? r : 1;
}

int settings_store_set(settings_store *store, const char *key, const char *value,
                       const char *changed_by, alm_error *err)
{
    int r = check_key(key, err);
    if (r < 0)
        return r;
    if (!value)
        return alm_error_set(err, -EINVAL, "settings database: %s: no value given", key);
    pthread_mutex_lock(&store->lock);
    r = begin_write(store, err);
    if (r >= 0)
        r = finish_write(store, set_in_transaction(store, key, value,
                                                   changed_by ? changed_by : "unknown", err), err);
    pthread_mutex_unlock(&store->lock);
    return r;
}

static int unset_in_transaction(settings_store *store, const char *key, const char *changed_by,
                                alm_error *err)
{
    _cleanup_free_ char *old_value = NULL;
    int r = read_value(store, key, &old_value, err);
    if (r <= 0)
        return r;
    _cleanup_finalize_ sqlite3_stmt *stmt = NULL;
    r = prepare(store, "DELETE FROM settings WHERE key = ?1", &stmt, err);
    if (r < 0)
        return r;
    sqlite3_bind_text(stmt, 1, key, -1, SQLITE_STATIC);
    int rc = sqlite3_step(stmt);
    if (rc != SQLITE_DONE)
        return db_error(store, rc, "removing a setting", err);
    char now[32];
    now_iso8601(now);
    r = add_history(store, key, old_value, NULL, changed_by, now, err);
    return r < 0 ? r : 1;
}

int settings_store_unset(settings_store *store, const char *key, const char *changed_by,
                         alm_error *err)
{
    int r = check_key(key, err);
    if (r < 0)
        return r;
    pthread_mutex_lock(&store->lock);
    r = begin_write(store, err);
    if (r >= 0)
        r = finish_write(store, unset_in_transaction(store, key,
                                                     changed_by ? changed_by : "unknown", err), err);
    pthread_mutex_unlock(&store->lock);
    return r;
}

void settings_entries_free(settings_entry *entries, size_t n)
{
    for (size_t i = 0; entries && i < n; i++) {
        free(entries[i].key);
        free(entries[i].value);
        free(entries[i].updated_at);
    }
    free(entries);
}

static int list_locked(settings_store *store, settings_entry **entries, size_t *n, alm_error *err)
{
    _cleanup_finalize_ sqlite3_stmt *stmt = NULL;
    int r = prepare(store, "SELECT key, value, updated_at FROM settings ORDER BY key", &stmt, err);
    if (r < 0)
        return r;
    settings_entry *list = NULL;
    size_t count = 0;
    int rc;
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        settings_entry *grown = realloc(list, (count + 1) * sizeof *list);
        if (!grown) {
            settings_entries_free(list, count);
            return alm_error_set(err, -ENOMEM, "out of memory");
        }
        list = grown;
        settings_entry *e = &list[count++];
        e->key = column_strdup(stmt, 0);
        e->value = column_strdup(stmt, 1);
        e->updated_at = column_strdup(stmt, 2);
        if (!e->key || !e->value || !e->updated_at) {
            settings_entries_free(list, count);
            return alm_error_set(err, -ENOMEM, "out of memory");
        }
    }
    if (rc != SQLITE_DONE) {
        settings_entries_free(list, count);
        return db_error(store, rc, "listing settings", err);
    }
    *entries = list;
    *n = count;
    return 0;
}

int settings_store_list(settings_store *store, settings_entry **entries, size_t *n, alm_error *err)
{
    *entries = NULL;
    *n = 0;
    pthread_mutex_lock(&store->lock);
    int r = list_locked(store, entries, n, err);
    pthread_mutex_unlock(&store->lock);
    return r;
}

void settings_history_free(settings_history_entry *entries, size_t n)
{
    for (size_t i = 0; entries && i < n; i++) {
        free(entries[i].key);
        free(entries[i].old_value);
        free(entries[i].new_value);
        free(entries[i].changed_by);
        free(entries[i].changed_at);
    }
    free(entries);
}

static int history_locked(settings_store *store, const char *key, size_t limit,
                          settings_history_entry **entries, size_t *n, alm_error *err)
{
    _cleanup_finalize_ sqlite3_stmt *stmt = NULL;
    int r = prepare(store,
                    "SELECT id, key, old_value, new_value, changed_by, changed_at FROM ("
                    "  SELECT * FROM setting_history WHERE ?1 IS NULL OR key = ?1"
                    "  ORDER BY id DESC LIMIT ?2) ORDER BY id", &stmt, err);
    if (r < 0)
        return r;
    sqlite3_bind_text(stmt, 1, key, -1, SQLITE_STATIC);
    sqlite3_bind_int64(stmt, 2, limit ? (sqlite3_int64)limit : -1);
    settings_history_entry *list = NULL;
    size_t count = 0;
    int rc;
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        settings_history_entry *grown = realloc(list, (count + 1) * sizeof *list);
        if (!grown) {
            settings_history_free(list, count);
            return alm_error_set(err, -ENOMEM, "out of memory");
        }
        list = grown;
        settings_history_entry *e = &list[count++];
        e->id = sqlite3_column_int64(stmt, 0);
        e->key = column_strdup(stmt, 1);
        e->old_value = column_strdup(stmt, 2);
        e->new_value = column_strdup(stmt, 3);
        e->changed_by = column_strdup(stmt, 4);
        e->changed_at = column_strdup(stmt, 5);
        bool missing = !e->key || !e->changed_by || !e->changed_at ||
                       (!e->old_value && sqlite3_column_type(stmt, 2) != SQLITE_NULL) ||
                       (!e->new_value && sqlite3_column_type(stmt, 3) != SQLITE_NULL);
        if (missing) {
            settings_history_free(list, count);
            return alm_error_set(err, -ENOMEM, "out of memory");
        }
    }
    if (rc != SQLITE_DONE) {
        settings_history_free(list, count);
        return db_error(store, rc, "reading the history", err);
    }
    *entries = list;
    *n = count;
    return 0;
}

int settings_store_history(settings_store *store, const char *key, size_t limit,
                           settings_history_entry **entries, size_t *n, alm_error *err)
{
    *entries = NULL;
    *n = 0;
    pthread_mutex_lock(&store->lock);
    int r = history_locked(store, key, limit, entries, n, err);
    pthread_mutex_unlock(&store->lock);
    return r;
}

/* --------------------------------------------------------- request log */

static int check_request(const request_log_entry *e, alm_error *err)
{
    bool ok = e->model && e->finish_reason &&
              e->prompt_tokens >= 0 && e->generated_tokens >= 0 &&
              e->drafted >= 0 && e->accepted >= 0 &&
              isfinite(e->started_at) && isfinite(e->finished_at) &&
              isfinite(e->prefill_seconds) && e->prefill_seconds >= 0 &&
              isfinite(e->decode_seconds) && e->decode_seconds >= 0 &&
              (e->n_positions == 0 || e->accepted_by_position) &&
              e->n_positions <= SETTINGS_STORE_MAX_POSITIONS;
    for (size_t i = 0; ok && i < e->n_positions; i++)
        ok = e->accepted_by_position[i] >= 0;
    return ok ? 0 : alm_error_set(err, -EINVAL, "request log: incomplete or negative figures");
}

/* The positions as a JSON array of integers, e.g. "[12,7,3]". */
static char *positions_json(const int64_t *positions, size_t n)
{
    size_t size = 3 + n * 21;
    char *json = malloc(size);
    if (!json)
        return NULL;
    size_t used = 0;
    json[used++] = '[';
    for (size_t i = 0; i < n; i++)
        used += (size_t)snprintf(json + used, size - used, "%s%" PRId64, i ? "," : "", positions[i]);
    json[used++] = ']';
    json[used] = '\0';
    return json;
}

static int log_request_locked(settings_store *store, const request_log_entry *e,
                              const char *positions, alm_error *err)
{
    _cleanup_finalize_ sqlite3_stmt *stmt = NULL;
    int r = prepare(store,
                    "INSERT INTO request_log (started_at, finished_at, model, draft_model, "
                    "prompt_tokens, generated_tokens, prefill_seconds, decode_seconds, drafted, "
                    "accepted, accepted_by_position, finish_reason, client_uid) "
                    "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13)", &stmt, err);
    if (r < 0)
        return r;
    sqlite3_bind_double(stmt, 1, e->started_at);
    sqlite3_bind_double(stmt, 2, e->finished_at);
    sqlite3_bind_text(stmt, 3, e->model, -1, SQLITE_STATIC);
    if (e->draft_model && *e->draft_model)
        sqlite3_bind_text(stmt, 4, e->draft_model, -1, SQLITE_STATIC);
    sqlite3_bind_int64(stmt, 5, e->prompt_tokens);
    sqlite3_bind_int64(stmt, 6, e->generated_tokens);
    sqlite3_bind_double(stmt, 7, e->prefill_seconds);
    sqlite3_bind_double(stmt, 8, e->decode_seconds);
    sqlite3_bind_int64(stmt, 9, e->drafted);
    sqlite3_bind_int64(stmt, 10, e->accepted);
    sqlite3_bind_text(stmt, 11, positions, -1, SQLITE_STATIC);
    sqlite3_bind_text(stmt, 12, e->finish_reason, -1, SQLITE_STATIC);
    if (e->client_uid >= 0)
        sqlite3_bind_int64(stmt, 13, e->client_uid);
    int rc = sqlite3_step(stmt);
    return rc == SQLITE_DONE ? 0 : db_error(store, rc, "logging a request", err);
}

int settings_store_log_request(settings_store *store, const request_log_entry *entry,
                               alm_error *err)
{
    int r = check_request(entry, err);
    if (r < 0)
        return r;
    _cleanup_free_ char *positions = positions_json(entry->accepted_by_position, entry->n_positions);
    if (!positions)
        return alm_error_set(err, -ENOMEM, "out of memory");
    pthread_mutex_lock(&store->lock);
    r = begin_write(store, err);
    if (r >= 0)
        r = finish_write(store, log_request_locked(store, entry, positions, err), err);
    pthread_mutex_unlock(&store->lock);
    return r;
}

void request_stats_clear(request_stats *stats)
{
    free(stats->accepted_by_position);
    *stats = (request_stats){ 0 };
}

static int stats_locked(settings_store *store, request_stats *stats, alm_error *err)
{
    _cleanup_finalize_ sqlite3_stmt *sums = NULL;
    int r = prepare(store,
                    "SELECT count(*), coalesce(sum(prompt_tokens), 0), "
                    "coalesce(sum(generated_tokens), 0), coalesce(sum(drafted), 0), "
                    "coalesce(sum(accepted), 0), total(prefill_seconds), total(decode_seconds) "
                    "FROM request_log", &sums, err);
    if (r < 0)
        return r;
    int rc = sqlite3_step(sums);
    if (rc != SQLITE_ROW)
        return db_error(store, rc, "summing the request log", err);
    stats->requests = sqlite3_column_int64(sums, 0);
    stats->prompt_tokens = sqlite3_column_int64(sums, 1);
    stats->generated_tokens = sqlite3_column_int64(sums, 2);
    stats->drafted = sqlite3_column_int64(sums, 3);
    stats->accepted = sqlite3_column_int64(sums, 4);
    stats->prefill_seconds = sqlite3_column_double(sums, 5);
    stats->decode_seconds = sqlite3_column_double(sums, 6);

    /* Per-position sums: json_each turns each row's array into (index,
     * count) rows; rows whose text is not valid JSON are skipped. */
    _cleanup_finalize_ sqlite3_stmt *positions = NULL;
    r = prepare(store,
                "SELECT CAST(j.key AS INTEGER) AS position, sum(j.value) "
                "FROM request_log AS r, json_each(r.accepted_by_position) AS j "
                "WHERE json_valid(r.accepted_by_position) AND json_type(r.accepted_by_position) = 'array' "
                "AND position < ?1 GROUP BY position ORDER BY position", &positions, err);
    if (r < 0)
        return r;
    sqlite3_bind_int(positions, 1, SETTINGS_STORE_MAX_POSITIONS);
    while ((rc = sqlite3_step(positions)) == SQLITE_ROW) {
        int64_t position = sqlite3_column_int64(positions, 0);
        if (position < 0)
            continue;
        if ((size_t)position >= stats->n_positions) {
            int64_t *grown = realloc(stats->accepted_by_position, (size_t)(position + 1) * sizeof *grown);
            if (!grown)
                return alm_error_set(err, -ENOMEM, "out of memory");
            for (size_t i = stats->n_positions; i <= (size_t)position; i++)
                grown[i] = 0;
            stats->accepted_by_position = grown;
            stats->n_positions = (size_t)position + 1;
        }
        stats->accepted_by_position[position] = sqlite3_column_int64(positions, 1);
    }
    if (rc != SQLITE_DONE)
        return db_error(store, rc, "summing acceptance by position", err);
    return 0;
}

int settings_store_request_stats(settings_store *store, request_stats *stats, alm_error *err)
{
    *stats = (request_stats){ 0 };
    pthread_mutex_lock(&store->lock);
    /* One read transaction: the sums and the per-position sums see the same rows. */
    int r = exec_sql(store, "BEGIN", "starting a read", err);
    if (r >= 0) {
        r = stats_locked(store, stats, err);
        sqlite3_exec(store->db, "COMMIT", NULL, NULL, NULL);
    }
    pthread_mutex_unlock(&store->lock);
    if (r < 0)
        request_stats_clear(stats);
    return r;
}
