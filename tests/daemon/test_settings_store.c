/* almd's settings database: round trips, history, persistence, migrations,
 * refusal of files that are not ours (left byte for byte as they were),
 * concurrent readers and writers, request-log sums, and kill -9 during
 * writes (the database stays consistent: each setting is old or new, with
 * its matching history row). */
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <sqlite3.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "settings_store.h"
#include "tap.h"

static char tmpdir[256];

static char *path_in_tmp(const char *name)
{
    char *p;
    if (asprintf(&p, "%s/%s", tmpdir, name) < 0)
        abort();
    return p;
}

static void remove_db(const char *path)
{
    char side[512];
    unlink(path);
    snprintf(side, sizeof side, "%s-wal", path);
    unlink(side);
    snprintf(side, sizeof side, "%s-shm", path);
    unlink(side);
    snprintf(side, sizeof side, "%s-journal", path);
    unlink(side);
}

/* The whole file, malloc'ed; *size its length. */
static unsigned char *read_all(const char *path, size_t *size)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    fseek(f, 0, SEEK_END);
    long len = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *data = malloc(len > 0 ? (size_t)len : 1);
    *size = fread(data, 1, (size_t)len, f);
    fclose(f);
    return data;
}

static void write_all(const char *path, const void *data, size_t size)
{
    FILE *f = fopen(path, "wb");
    fwrite(data, 1, size, f);
    fclose(f);
}

static void sql(const char *path, const char *statements)
{
    sqlite3 *db;
    sqlite3_open(path, &db);
    char *msg = NULL;
    if (sqlite3_exec(db, statements, NULL, NULL, &msg) != SQLITE_OK)
        tap_diag("sql on %s failed: %s", path, msg);
    sqlite3_free(msg);
    sqlite3_close(db);
}

/* Opening path must fail with code, a message containing fragment, and the
 * file's bytes unchanged. */
static void check_refused(const char *path, int code, const char *fragment, const char *what)
{
    size_t before_size = 0, after_size = 0;
    unsigned char *before = read_all(path, &before_size);
    settings_store *store = NULL;
    alm_error err = { 0 };
    int r = settings_store_open(path, &store, &err);
    tap_ok(r == code && store == NULL, "%s: refused with %d (got %d)", what, code, r);
    tap_ok(strstr(err.message, fragment) != NULL && !strchr(err.message, '\n'),
           "%s: one-line message has \"%s\": %s", what, fragment, err.message);
    unsigned char *after = read_all(path, &after_size);
    tap_ok(before && after && before_size == after_size && memcmp(before, after, before_size) == 0,
           "%s: file unchanged (%zu bytes)", what, before_size);
    settings_store_close(store);
    free(before);
    free(after);
}

static settings_store *open_ok(const char *path, const char *what)
{
    settings_store *store = NULL;
    alm_error err = { 0 };
    int r = settings_store_open(path, &store, &err);
    tap_ok(r == 0 && store, "%s: opens (%s)", what, err.message);
    return store;
}

static char *get(settings_store *store, const char *key)
{
    char *value = NULL;
    alm_error err = { 0 };
    if (settings_store_get(store, key, &value, &err) < 0)
        tap_diag("get %s: %s", key, err.message);
    return value;
}

static void test_round_trip(void)
{
    char *path = path_in_tmp("round.db");
    settings_store *store = open_ok(path, "new database");
    if (!store)
        return;
    alm_error err = { 0 };
    char *value = (char *)"x";
    tap_ok(settings_store_get(store, "temperature", &value, &err) == 0 && value == NULL,
           "unset key: get returns 0 and NULL");
    tap_ok(settings_store_set(store, "temperature", "0.7", "uid 1000", &err) == 1, "set returns 1");
    value = get(store, "temperature");
    tap_ok(value && strcmp(value, "0.7") == 0, "get returns the value set");
    free(value);
    tap_ok(settings_store_set(store, "temperature", "0.7", "uid 1000", &err) == 0,
           "setting the same value returns 0");
    tap_ok(settings_store_set(store, "temperature", "0.2", "root", &err) == 1, "changing returns 1");
    tap_ok(settings_store_set(store, "draft_model", "", "root", &err) == 1, "an empty value is stored");
    value = get(store, "draft_model");
    tap_ok(value && strcmp(value, "") == 0, "empty value round trip");
    free(value);
    tap_ok(settings_store_set(store, "model", "coder-target-4bit", "root", &err) == 1, "set model");
    tap_ok(settings_store_unset(store, "temperature", "uid 1000", &err) == 1, "unset returns 1");
    tap_ok(settings_store_unset(store, "temperature", "uid 1000", &err) == 0,
           "unset of an unset key returns 0");
    value = get(store, "temperature");
    tap_ok(value == NULL, "unset key reads as not set");
    tap_ok(settings_store_set(store, "", "1", "root", &err) == -EINVAL, "empty key refused");
    tap_ok(settings_store_set(store, "top_k", NULL, "root", &err) == -EINVAL, "NULL value refused");

    settings_entry *entries = NULL;
    size_t n = 0;
    tap_ok(settings_store_list(store, &entries, &n, &err) == 0 && n == 2, "list: 2 settings");
    tap_ok(n == 2 && strcmp(entries[0].key, "draft_model") == 0 && strcmp(entries[1].key, "model") == 0 &&
               strcmp(entries[1].value, "coder-target-4bit") == 0,
           "list is sorted by key with values");
    tap_ok(n == 2 && strlen(entries[0].updated_at) == 24 && entries[0].updated_at[23] == 'Z',
           "updated_at is ISO 8601 UTC: %s", n ? entries[0].updated_at : "");
    settings_entries_free(entries, n);

    settings_history_entry *h = NULL;
    tap_ok(settings_store_history(store, "temperature", 0, &h, &n, &err) == 0 && n == 3,
           "temperature: 3 history rows (set, change, unset; not the no-op)");
    if (n == 3) {
        tap_ok(h[0].old_value == NULL && strcmp(h[0].new_value, "0.7") == 0 &&
                   strcmp(h[0].changed_by, "uid 1000") == 0, "history 1: none -> 0.7 by uid 1000");
        tap_ok(strcmp(h[1].old_value, "0.7") == 0 && strcmp(h[1].new_value, "0.2") == 0 &&
                   strcmp(h[1].changed_by, "root") == 0, "history 2: 0.7 -> 0.2 by root");
        tap_ok(strcmp(h[2].old_value, "0.2") == 0 && h[2].new_value == NULL,
               "history 3: 0.2 -> unset");
        tap_ok(h[0].id < h[1].id && h[1].id < h[2].id, "history ids increase");
    }
    settings_history_free(h, n);
    tap_ok(settings_store_history(store, NULL, 2, &h, &n, &err) == 0 && n == 2 &&
               strcmp(h[0].key, "model") == 0 && strcmp(h[1].key, "temperature") == 0,
           "history of all keys, newest 2, oldest first");
    settings_history_free(h, n);
    tap_ok(settings_store_check_integrity(store, &err) == 0, "integrity_check passes");
    settings_store_close(store);

    /* Persistence. */
    store = open_ok(path, "reopen");
    if (store) {
        value = get(store, "model");
        tap_ok(value && strcmp(value, "coder-target-4bit") == 0, "value survives reopening");
        free(value);
        value = get(store, "temperature");
        tap_ok(value == NULL, "unset survives reopening");
        settings_store_close(store);
    }

    /* The file is what the documentation says: WAL, schema version 1, ours. */
    sqlite3 *db;
    sqlite3_open(path, &db);
    sqlite3_stmt *stmt;
    sqlite3_prepare_v2(db, "SELECT (SELECT user_version FROM pragma_user_version), "
                           "(SELECT journal_mode FROM pragma_journal_mode), "
                           "(SELECT application_id FROM pragma_application_id)", -1, &stmt, NULL);
    int rc = sqlite3_step(stmt);
    tap_ok(rc == SQLITE_ROW && sqlite3_column_int(stmt, 0) == SETTINGS_STORE_SCHEMA_VERSION,
           "user_version is %d", SETTINGS_STORE_SCHEMA_VERSION);
    tap_ok(rc == SQLITE_ROW && strcmp((const char *)sqlite3_column_text(stmt, 1), "wal") == 0,
           "journal_mode is wal");
    tap_ok(rc == SQLITE_ROW && sqlite3_column_int(stmt, 2) == 0x616c6d64, "application_id is 'almd'");
    sqlite3_finalize(stmt);
    sqlite3_close(db);
    remove_db(path);
    free(path);
}

static void test_empty_file_migrates(void)
{
    char *path = path_in_tmp("empty.db");
    write_all(path, "", 0);
    settings_store *store = open_ok(path, "empty file");
    alm_error err = { 0 };
    if (store) {
        tap_ok(settings_store_set(store, "top_k", "40", "root", &err) == 1,
               "empty file: schema created, set works");
        settings_store_close(store);
    }
    remove_db(path);
    free(path);
}

static void test_refusals(void)
{
    char *path = path_in_tmp("bad.db");

    write_all(path, "model: coder\nthreads: 4\n", 24);
    check_refused(path, -EBADMSG, "is not a SQLite database", "a text file");

    unsigned char garbage[8192];
    memcpy(garbage, "SQLite format 3", 16);
    for (size_t i = 16; i < sizeof garbage; i++)
        garbage[i] = (unsigned char)(i * 131 + 7);
    write_all(path, garbage, sizeof garbage);
    check_refused(path, -EBADMSG, "refusing to use it", "SQLite magic followed by garbage");
    remove_db(path);

    /* A real database of ours with one page overwritten. */
    {
        settings_store *store = open_ok(path, "database to corrupt");
        alm_error err = { 0 };
        char key[32], value[256];
        for (int i = 0; store && i < 200; i++) {
            snprintf(key, sizeof key, "key%03d", i);
            memset(value, 'a' + i % 26, sizeof value - 1);
            value[sizeof value - 1] = '\0';
            settings_store_set(store, key, value, "root", &err);
        }
        settings_store_close(store);
        size_t size = 0;
        unsigned char *data = read_all(path, &size);
        /* Page 2 (4 KiB pages): a b-tree page of the schema's tables. */
        if (data && size > 3 * 4096) {
            memset(data + 4096, 0xA5, 4096);
            write_all(path, data, size);
        }
        free(data);
        check_refused(path, -EBADMSG, "is corrupt (quick_check: *** in database main ***; Page 2",
                      "a page overwritten");
        remove_db(path);
    }

    /* Written by a newer almd. */
    {
        settings_store *store = open_ok(path, "database for the version test");
        settings_store_close(store);
        sql(path, "PRAGMA user_version = 7");
        check_refused(path, -ENOTSUP, "has schema version 7, newer than the 1 this almd knows",
                      "a future schema version");
        remove_db(path);
    }

    /* The newer version sits in the WAL of a process that died before it
     * checkpointed: refusing must not checkpoint it into the database. */
    {
        settings_store *store = open_ok(path, "database for the WAL version test");
        settings_store_close(store);
        fflush(stdout);
        pid_t pid = fork();
        if (pid == 0) {
            sqlite3 *db;
            sqlite3_open(path, &db);
            sqlite3_exec(db, "PRAGMA wal_autocheckpoint = 0; PRAGMA user_version = 9", NULL, NULL, NULL);
            _exit(0);   /* no close: the WAL stays */
        }
        int status;
        waitpid(pid, &status, 0);
        char *wal;
        if (asprintf(&wal, "%s-wal", path) < 0)
            abort();
        struct stat st;
        tap_ok(stat(wal, &st) == 0 && st.st_size > 0, "a WAL with a commit was left behind");
        check_refused(path, -ENOTSUP, "has schema version 9", "a future version in the WAL");
        free(wal);
        remove_db(path);
    }

    /* Another program's SQLite files. */
    sql(path, "CREATE TABLE settings (k TEXT, v TEXT); PRAGMA user_version = 1;");
    check_refused(path, -EBADMSG, "table settings has no column key", "settings of the wrong shape");
    remove_db(path);
    sql(path, "CREATE TABLE notes (body TEXT);");
    check_refused(path, -EBADMSG, "has tables but no almd schema version", "another program's tables");
    remove_db(path);
    sql(path, "PRAGMA application_id = 1234; CREATE TABLE t (x);");
    check_refused(path, -EBADMSG, "belongs to another program", "another application_id");
    remove_db(path);

    /* A folder that does not exist, a folder that is a file. */
    settings_store *store = NULL;
    alm_error err = { 0 };
    char *missing = path_in_tmp("no-such-folder/almd.db");
    int r = settings_store_open(missing, &store, &err);
    tap_ok(r == -ENOENT && store == NULL && strstr(err.message, "no-such-folder: No such file or directory"),
           "missing folder: %s", err.message);
    free(missing);
    write_all(path, "x", 1);
    char *under_file;
    if (asprintf(&under_file, "%s/almd.db", path) < 0)
        abort();
    r = settings_store_open(under_file, &store, &err);
    tap_ok(r == -ENOTDIR && strstr(err.message, "is not a folder"), "folder is a file: %s", err.message);
    free(under_file);
    unlink(path);

    /* Read-only folder and file: root bypasses permissions, so only as a user. */
    if (geteuid() != 0) {
        char *ro = path_in_tmp("ro");
        mkdir(ro, 0500);
        char *ro_db;
        if (asprintf(&ro_db, "%s/almd.db", ro) < 0)
            abort();
        r = settings_store_open(ro_db, &store, &err);
        tap_ok(r == -EACCES && strstr(err.message, "is not writable"), "read-only folder: %s", err.message);
        chmod(ro, 0700);
        settings_store_close(open_ok(ro_db, "database in a writable folder"));
        remove_db(ro_db);
        write_all(ro_db, "", 0);
        chmod(ro_db, 0400);
        r = settings_store_open(ro_db, &store, &err);
        tap_ok(r == -EACCES && strstr(err.message, "is not writable"), "read-only file: %s", err.message);
        unlink(ro_db);
        rmdir(ro);
        free(ro_db);
        free(ro);
    } else {
        tap_diag("running as root: read-only folder and file not checked");
    }
    free(path);
}

static void test_request_log(void)
{
    char *path = path_in_tmp("log.db");
    settings_store *store = open_ok(path, "request log database");
    if (!store)
        return;
    alm_error err = { 0 };
    request_stats stats;
    tap_ok(settings_store_request_stats(store, &stats, &err) == 0 && stats.requests == 0 &&
               stats.n_positions == 0 && stats.prompt_tokens == 0, "no requests: zero sums");
    request_stats_clear(&stats);

    const int64_t first_positions[] = { 10, 6, 2 };
    const int64_t second_positions[] = { 5, 4, 3, 1 };
    request_log_entry e = {
        .started_at = 1700000000.0, .finished_at = 1700000001.5,
        .model = "coder-target-4bit", .draft_model = "coder-draft-4bit",
        .prompt_tokens = 12, .generated_tokens = 40, .prefill_seconds = 0.25, .decode_seconds = 1.0,
        .drafted = 30, .accepted = 18, .accepted_by_position = first_positions, .n_positions = 3,
        .finish_reason = "length", .client_uid = 1000,
    };
    tap_ok(settings_store_log_request(store, &e, &err) == 0, "log a request");
    e.prompt_tokens = 8;
    e.generated_tokens = 20;
    e.prefill_seconds = 0.5;
    e.decode_seconds = 2.0;
    e.drafted = 20;
    e.accepted = 13;
    e.accepted_by_position = second_positions;
    e.n_positions = 4;
    e.draft_model = NULL;
    e.client_uid = -1;
    tap_ok(settings_store_log_request(store, &e, &err) == 0, "log a second request");
    e.accepted_by_position = NULL;
    e.n_positions = 0;
    e.drafted = e.accepted = 0;
    tap_ok(settings_store_log_request(store, &e, &err) == 0, "log a request without drafting");
    e.generated_tokens = -1;
    tap_ok(settings_store_log_request(store, &e, &err) == -EINVAL, "negative counts refused");
    e.generated_tokens = 1;
    e.model = NULL;
    tap_ok(settings_store_log_request(store, &e, &err) == -EINVAL, "a request without a model refused");

    tap_ok(settings_store_request_stats(store, &stats, &err) == 0, "stats");
    tap_ok(stats.requests == 3 && stats.prompt_tokens == 28 && stats.generated_tokens == 80,
           "sums of requests and tokens (%lld, %lld, %lld)", (long long)stats.requests,
           (long long)stats.prompt_tokens, (long long)stats.generated_tokens);
    tap_ok(stats.drafted == 50 && stats.accepted == 31, "sums of drafted and accepted");
    tap_ok(stats.prefill_seconds == 1.25 && stats.decode_seconds == 5.0, "sums of seconds");
    tap_ok(stats.n_positions == 4 && stats.accepted_by_position[0] == 15 &&
               stats.accepted_by_position[1] == 10 && stats.accepted_by_position[2] == 5 &&
               stats.accepted_by_position[3] == 1, "accepted by position summed per position");
    request_stats_clear(&stats);
    settings_store_close(store);

    /* Persisted and read through a second connection. */
    store = open_ok(path, "reopen the request log");
    if (store) {
        tap_ok(settings_store_request_stats(store, &stats, &err) == 0 && stats.requests == 3,
               "request log survives reopening");
        request_stats_clear(&stats);
        settings_store_close(store);
    }
    remove_db(path);
    free(path);
}

/* --------------------------------------------------------- concurrency */

/* A child that reads in a loop while others write: every value it sees must
 * be one the writer wrote. Exit status 0 when all was well. */
static int reader_child(const char *path, int iterations)
{
    settings_store *store = NULL;
    alm_error err = { 0 };
    if (settings_store_open(path, &store, &err) < 0) {
        fprintf(stderr, "reader: %s\n", err.message);
        return 2;
    }
    int status = 0;
    for (int i = 0; i < iterations && status == 0; i++) {
        char *value = NULL;
        if (settings_store_get(store, "max_tokens", &value, &err) < 0) {
            fprintf(stderr, "reader: %s\n", err.message);
            status = 3;
        } else if (value && strncmp(value, "w", 1) != 0) {
            status = 4;
        }
        free(value);
        settings_entry *entries;
        size_t n;
        if (settings_store_list(store, &entries, &n, &err) < 0) {
            fprintf(stderr, "reader: %s\n", err.message);
            status = 5;
        } else {
            settings_entries_free(entries, n);
        }
    }
    settings_store_close(store);
    return status;
}

static int writer_child(const char *path, const char *key, int iterations)
{
    settings_store *store = NULL;
    alm_error err = { 0 };
    if (settings_store_open(path, &store, &err) < 0) {
        fprintf(stderr, "writer: %s\n", err.message);
        return 2;
    }
    int status = 0;
    for (int i = 0; i < iterations && status == 0; i++) {
        char value[32];
        snprintf(value, sizeof value, "w%d", i);
        if (settings_store_set(store, key, value, "writer", &err) < 0) {
            fprintf(stderr, "writer: %s\n", err.message);
            status = 3;
        }
    }
    settings_store_close(store);
    return status;
}

typedef struct thread_job {
    settings_store *store;
    const char *key;
    int result;
} thread_job;

static void *writer_thread(void *arg)
{
    thread_job *job = arg;
    alm_error err = { 0 };
    job->result = 0;
    for (int i = 0; i < 100 && job->result == 0; i++) {
        char value[32];
        snprintf(value, sizeof value, "t%d", i);
        if (settings_store_set(job->store, job->key, value, "thread", &err) < 0)
            job->result = -1;
    }
    return NULL;
}

static void test_concurrency(void)
{
    char *path = path_in_tmp("concurrent.db");
    settings_store *store = open_ok(path, "shared database");
    if (!store)
        return;
    enum { readers = 3, writers = 2, iterations = 60 };
    pid_t pids[readers + writers];
    static const char *const writer_keys[writers] = { "max_tokens", "top_k" };
    fflush(stdout);
    for (int i = 0; i < readers + writers; i++) {
        pids[i] = fork();
        if (pids[i] == 0) {
            settings_store_close(store);   /* never use a parent's connection */
            int status = i < readers ? reader_child(path, iterations * 2)
                                     : writer_child(path, writer_keys[i - readers], iterations);
            free(path);
            _exit(status);
        }
    }
    /* Meanwhile this process writes too, through one store from two threads. */
    thread_job jobs[2] = { { store, "temperature", -1 }, { store, "min_p", -1 } };
    pthread_t threads[2];
    for (int i = 0; i < 2; i++)
        pthread_create(&threads[i], NULL, writer_thread, &jobs[i]);
    for (int i = 0; i < 2; i++)
        pthread_join(threads[i], NULL);
    tap_ok(jobs[0].result == 0 && jobs[1].result == 0, "two threads write through one store");

    int all_ok = 1;
    for (int i = 0; i < readers + writers; i++) {
        int status = -1;
        waitpid(pids[i], &status, 0);
        if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
            all_ok = 0;
            tap_diag("%s %d ended with status %d", i < readers ? "reader" : "writer", i, status);
        }
    }
    tap_ok(all_ok, "%d reader and %d writer processes ran without an error", readers, writers);
    alm_error err = { 0 };
    settings_history_entry *h;
    size_t n;
    tap_ok(settings_store_history(store, "top_k", 0, &h, &n, &err) == 0 && n == iterations,
           "every write of the other process has its history row (%zu)", n);
    settings_history_free(h, n);
    tap_ok(settings_store_history(store, "min_p", 0, &h, &n, &err) == 0 && n == 100,
           "every write of a thread has its history row (%zu)", n);
    settings_history_free(h, n);
    char *value = get(store, "max_tokens");
    char expected[32];
    snprintf(expected, sizeof expected, "w%d", iterations - 1);
    tap_ok(value && strcmp(value, expected) == 0, "the last write wins (%s)", value ? value : "(null)");
    free(value);
    settings_store_close(store);
    remove_db(path);
    free(path);
}

/* ------------------------------------------------------------- kill -9 */

static const char *const kill_keys[] = { "model", "temperature", "num_draft_tokens" };
enum { n_kill_keys = 3 };

/* Sets kill_keys[i % 3] = "R-i" for i = 1, 2, ... and reports each commit
 * on fd, until killed. */
static void kill_child(const char *path, int round, int fd)
{
    settings_store *store = NULL;
    alm_error err = { 0 };
    if (settings_store_open(path, &store, &err) < 0) {
        fprintf(stderr, "kill child: %s\n", err.message);
        _exit(2);
    }
    for (int i = 1;; i++) {
        char value[64];
        snprintf(value, sizeof value, "%d-%d", round, i);
        if (settings_store_set(store, kill_keys[i % n_kill_keys], value, "child", &err) < 0) {
            fprintf(stderr, "kill child: %s\n", err.message);
            _exit(3);
        }
        if (write(fd, &i, sizeof i) != (ssize_t)sizeof i)
            _exit(4);
    }
}

/* History of key is a chain (each old value is the previous new value) that
 * ends in the current value. */
static int history_consistent(settings_store *store, const char *key, const char *current)
{
    settings_history_entry *h;
    size_t n;
    alm_error err = { 0 };
    if (settings_store_history(store, key, 0, &h, &n, &err) < 0)
        return 0;
    int ok = n > 0;
    for (size_t i = 1; ok && i < n; i++)
        ok = h[i - 1].new_value && h[i].old_value && strcmp(h[i - 1].new_value, h[i].old_value) == 0;
    ok = ok && h[n - 1].new_value && current && strcmp(h[n - 1].new_value, current) == 0;
    settings_history_free(h, n);
    return ok;
}

static void test_kill_during_writes(void)
{
    char *path = path_in_tmp("kill.db");
    settings_store *store = open_ok(path, "database for kill -9");
    alm_error err = { 0 };
    /* Known starting values. */
    char previous[n_kill_keys][64];
    for (int k = 0; store && k < n_kill_keys; k++) {
        snprintf(previous[k], sizeof previous[k], "start-%d", k);
        settings_store_set(store, kill_keys[k], previous[k], "test", &err);
    }
    settings_store_close(store);

    unsigned seed = (unsigned)time(NULL) ^ (unsigned)getpid();
    tap_diag("kill -9 seed %u", seed);
    srand(seed);
    const int rounds = 8;
    int rounds_ok = 0, rounds_with_commits = 0, total_commits = 0;
    for (int round = 1; round <= rounds; round++) {
        int fds[2];
        if (pipe(fds) < 0)
            break;
        fflush(stdout);
        pid_t pid = fork();
        if (pid == 0) {
            close(fds[0]);
            kill_child(path, round, fds[1]);
        }
        close(fds[1]);
        /* Wait for the first commit (opening takes a variable time on a
         * busy machine), then kill at a random moment among the writes. */
        int acked = 0, i;
        if (read(fds[0], &i, sizeof i) == (ssize_t)sizeof i)
            acked = i;
        struct timespec pause = { 0, (long)(rand() % 40000) * 1000L };
        nanosleep(&pause, NULL);
        kill(pid, SIGKILL);
        int status;
        waitpid(pid, &status, 0);
        while (read(fds[0], &i, sizeof i) == (ssize_t)sizeof i)
            acked = i;
        close(fds[0]);
        total_commits += acked;
        if (acked > 0)
            rounds_with_commits++;

        store = NULL;
        int r = settings_store_open(path, &store, &err);
        int ok = r == 0 && settings_store_check_integrity(store, &err) == 0;
        if (!ok)
            tap_diag("round %d: %s", round, err.message);
        for (int k = 0; ok && k < n_kill_keys; k++) {
            /* Allowed: the last acknowledged value of this key, or the one
             * in flight when the child died (committed or not). */
            char acked_value[64], in_flight[64] = "";
            snprintf(acked_value, sizeof acked_value, "%s", previous[k]);
            for (int j = acked; j >= 1; j--)
                if (j % n_kill_keys == k) {
                    snprintf(acked_value, sizeof acked_value, "%d-%d", round, j);
                    break;
                }
            if ((acked + 1) % n_kill_keys == k)
                snprintf(in_flight, sizeof in_flight, "%d-%d", round, acked + 1);
            char *value = get(store, kill_keys[k]);
            int value_ok = value && (strcmp(value, acked_value) == 0 || strcmp(value, in_flight) == 0);
            if (!value_ok)
                tap_diag("round %d: %s = %s, expected %s or %s", round, kill_keys[k],
                         value ? value : "(null)", acked_value, in_flight);
            int history_ok = value && history_consistent(store, kill_keys[k], value);
            if (!history_ok)
                tap_diag("round %d: %s: history does not end in the current value", round, kill_keys[k]);
            ok = value_ok && history_ok;
            if (value)
                snprintf(previous[k], sizeof previous[k], "%s", value);
            free(value);
        }
        settings_store_close(store);
        rounds_ok += ok;
    }
    tap_ok(rounds_ok == rounds, "after each of %d kill -9: opens, integrity_check passes, every "
           "setting old or new with its history row (%d ok)", rounds, rounds_ok);
    tap_ok(rounds_with_commits == rounds, "the child committed in %d of %d rounds (%d commits): "
           "the kills landed during writes", rounds_with_commits, rounds, total_commits);
    remove_db(path);
    free(path);
}

int main(void)
{
    const char *base = getenv("TMPDIR") ? getenv("TMPDIR") : "/tmp";
    snprintf(tmpdir, sizeof tmpdir, "%s/alm-store-XXXXXX", base);
    if (!mkdtemp(tmpdir))
        return tap_skip_all("cannot create a temporary folder");
    test_round_trip();
    test_empty_file_migrates();
    test_refusals();
    test_request_log();
    test_concurrency();
    test_kill_during_writes();
    rmdir(tmpdir);
    return tap_done();
}
