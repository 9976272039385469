/* A setting's value in effect: the stored one, else the key's default.
 * Also typed readers for the daemon's own use of the values. */
#ifndef ALM_DAEMON_SETTINGS_EFFECTIVE_H
#define ALM_DAEMON_SETTINGS_EFFECTIVE_H

#include <stdbool.h>

#include "alm.h"
#include "settings_store.h"

/* *value: malloc'ed. *is_default (may be NULL): nothing is stored. A stored
 * value that no longer validates (an edited database) is ignored in favour
 * of the default, and err->message says so while the call still succeeds
 * (err->code is then -EINVAL). */
int settings_effective(settings_store *store, const char *key, char **value, bool *is_default,
                       alm_error *err);

/* Typed: the effective value as a number or an integer ("auto" reads as 0). */
double settings_effective_number(settings_store *store, const char *key, alm_error *err);
long settings_effective_int(settings_store *store, const char *key, alm_error *err);

#endif
