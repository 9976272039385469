/* Error reporting inside the engine: set a message, return the code. */
#ifndef ALM_CORE_ERROR_H
#define ALM_CORE_ERROR_H

#include "alm.h"

/* Formats the message into err (which may be NULL) and returns code, a
 * negative errno, so that callers can write `return alm_error_set(...)`. */
int alm_error_set(alm_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* Prepends "prefix: " to a message already set (used to add context, such as
 * the file name, as an error travels up). Returns err->code. */
int alm_error_prefix(alm_error *err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#endif
