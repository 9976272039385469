/* The settings almd keeps in its database (`alm config set KEY VALUE`): one
 * table of keys drives validation, defaults, reload flags and help text, so
 * the daemon, the CLI and the man page can never disagree about them. */
#ifndef ALM_COMMON_SETTINGS_KEYS_H
#define ALM_COMMON_SETTINGS_KEYS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "alm.h"

typedef enum settings_key_type {
    /* A model name (looked up in the daemon's model_dirs) or a folder.
     * settings_key_validate checks only the syntax; whether it resolves to a
     * loadable folder, and whether a draft fits the model, is the caller's
     * check (the daemon knows model_dirs and can load the tokenizers). */
    SETTINGS_TYPE_MODEL,
    SETTINGS_TYPE_CHOICE,   /* one of choices[] (case-insensitive, stored lower-case) */
    SETTINGS_TYPE_INTEGER,  /* int_min..int_max, or "auto" when allow_auto */
    SETTINGS_TYPE_NUMBER,   /* a finite decimal number in the stated range */
} settings_key_type;

typedef struct settings_key {
    const char *name;
    settings_key_type type;
    const char *default_value;   /* already normalized */
    bool needs_reload;           /* takes effect on `alm restart` only */
    /* SETTINGS_TYPE_MODEL: whether the empty string (= none) is allowed. */
    bool allow_empty;
    /* SETTINGS_TYPE_CHOICE: NULL-terminated list. */
    const char *const *choices;
    /* SETTINGS_TYPE_INTEGER */
    int64_t int_min, int_max;
    bool allow_auto;
    /* SETTINGS_TYPE_NUMBER: [min, max] with either end open when flagged;
     * max is ignored when has_max is false. */
    double min, max;
    bool min_open, max_open, has_max;
    /* What a valid value is, as used in "KEY: expected WHAT, got ...". */
    const char *expected;
    const char *help;            /* one line for `alm config list` / --help */
} settings_key;

/* Iteration in table order (the order `alm config list` shows). */
size_t settings_key_count(void);
const settings_key *settings_key_at(size_t index);   /* NULL past the end */

/* The key's table row, or NULL when unknown. */
const settings_key *settings_key_lookup(const char *name);

/* Validates value for key. On success returns 0 and, when normalized is not
 * NULL, stores there a malloc'ed canonical form (the one to store: "07" ->
 * "7", "0.50" -> "0.5", "OFF" -> "off"). On failure returns -EINVAL (unknown
 * key: -ENOENT, with the list of known keys) and a message such as
 *   num_draft_tokens: expected an integer from 1 to 16 or auto, got "x"
 * and *normalized is left NULL. Models: see SETTINGS_TYPE_MODEL. */
int settings_key_validate(const char *key, const char *value, char **normalized,
                          alm_error *err);

/* Whether a change to key takes effect only on `alm restart` (false for
 * unknown keys). */
bool settings_key_needs_reload(const char *key);

/* The default value (normalized), or NULL for an unknown key. */
const char *settings_key_default(const char *key);

#endif
