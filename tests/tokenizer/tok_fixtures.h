/* Helpers for the tokenizer tests: paths of the test models, JSON reference
 * files, comparing id lists and writing small tokenizer.json variants into
 * temporary folders. */
#ifndef ALM_TESTS_TOKENIZER_FIXTURES_H
#define ALM_TESTS_TOKENIZER_FIXTURES_H

#include <json-glib/json-glib.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "alm.h"
#include "tap.h"

/* $ALM_TEST_DATA/<rel> (malloc'ed), or NULL when ALM_TEST_DATA is unset. */
char *tok_data_path(const char *rel);
/* $ALM_SHARED_DIR/<rel> when that folder exists, else NULL. */
char *tok_shared_path(const char *rel);

/* Loads a tokenizer and reports the outcome as one TAP check. Inline, so
 * that the check counts in the calling test's own TAP counter. */
static inline alm_tokenizer *tok_load_checked(const char *dir, const char *what)
{
    alm_tokenizer *tok = NULL;
    alm_error err = { 0 };
    int r = alm_tokenizer_load(dir, &tok, &err);
    tap_ok(r == 0, "%s: tokenizer loads%s%s", what, r ? ": " : "", r ? err.message : "");
    return r == 0 ? tok : NULL;
}

/* Parses a JSON file; NULL (with a diagnostic) on failure. Free with
 * g_object_unref. */
JsonParser *tok_read_json(const char *path);

/* json-glib stops strings at an embedded NUL ("\u0000" in the reference
 * texts), so the tests read string values themselves: every string value
 * of `key` in the file, in file order, with exact lengths (a null value
 * gives s == NULL). */
typedef struct tok_string {
    char *s;
    size_t len;
} tok_string;
tok_string *tok_json_strings(const char *path, const char *key, size_t *n);
void tok_json_strings_free(tok_string *list, size_t n);

/* A JSON array of integers as a malloc'ed id list. */
int32_t *tok_json_ids(JsonArray *a, size_t *n);

/* A one-line, escaped preview of s for check names (static buffer of the
 * caller: out must hold at least 64 bytes). */
const char *tok_preview(const char *s, size_t len, char *out, size_t size);

bool tok_ids_equal(const int32_t *a, size_t na, const int32_t *b, size_t nb);
/* Prints both lists as a diagnostic, for a failed comparison. */
void tok_diag_ids(const char *label, const int32_t *ids, size_t n);

/* Encodes (aborting the check on error) and returns the ids. */
int32_t *tok_encode(const alm_tokenizer *tok, const char *text, size_t len, bool add_special,
                    size_t *n);
/* Decodes; NULL on error. */
char *tok_decode(const alm_tokenizer *tok, const int32_t *ids, size_t n, bool skip_special,
                 size_t *len);
/* Streams ids through a detokenizer; returns everything it emitted. */
char *tok_stream(const alm_tokenizer *tok, const int32_t *ids, size_t n, bool skip_special,
                 size_t *len);

/* A fresh folder under $TMPDIR; free with tok_rmtree. */
char *tok_tmpdir(void);
void tok_rmtree(char *dir);
bool tok_write_file(const char *dir, const char *name, const char *text);

#endif
