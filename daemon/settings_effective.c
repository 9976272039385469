/* Stored value or default: see settings_effective.h. */
#include "settings_effective.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "settings_keys.h"

int settings_effective(settings_store *store, const char *key, char **value, bool *is_default,
                       alm_error *err)
{
    *value = NULL;
    const char *def = settings_key_default(key);
    if (!def)
        return alm_error_set(err, -ENOENT, "unknown setting %s", key);
    char *stored = NULL;
    int r = settings_store_get(store, key, &stored, err);
    if (r < 0)
        return r;
    if (r > 0) {
        alm_error verr = { 0 };
        char *normalized = NULL;
        if (settings_key_validate(key, stored, &normalized, &verr) == 0) {
            free(stored);
            *value = normalized;
            if (is_default)
                *is_default = false;
            return 0;
        }
        alm_error_set(err, -EINVAL, "stored %s is not valid (%s); using the default", key,
                      verr.message);
        free(stored);
    }
    *value = strdup(def);
    if (!*value)
        return alm_error_set(err, -ENOMEM, "out of memory");
    if (is_default)
        *is_default = true;
    return 0;
}

static char *effective_or_default(settings_store *store, const char *key, alm_error *err)
{
    char *value = NULL;
    if (settings_effective(store, key, &value, NULL, err) < 0) {
        const char *def = settings_key_default(key);
        value = def ? strdup(def) : NULL;
    }
    return value;
}

double settings_effective_number(settings_store *store, const char *key, alm_error *err)
{
    char *value = effective_or_default(store, key, err);
    double v = value ? strtod(value, NULL) : 0.0;
    free(value);
    return v;
}

long settings_effective_int(settings_store *store, const char *key, alm_error *err)
{
    char *value = effective_or_default(store, key, err);
    long v = value && strcmp(value, "auto") != 0 ? strtol(value, NULL, 10) : 0;
    free(value);
    return v;
}
