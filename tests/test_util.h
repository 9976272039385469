/* Helpers shared by the test programs: data paths and JSON loading. */
#ifndef ALM_TESTS_TEST_UTIL_H
#define ALM_TESTS_TEST_UTIL_H

#include <json-glib/json-glib.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* $VAR/rel, or NULL when the variable is unset. Caller frees. */
static inline char *test_path(const char *var, const char *rel)
{
    const char *base = getenv(var);
    if (!base)
        return NULL;
    char *p;
    if (asprintf(&p, "%s/%s", base, rel) < 0)
        return NULL;
    return p;
}

static inline int test_exists(const char *path)
{
    struct stat st;
    return path && stat(path, &st) == 0;
}

/* Parses a JSON file; NULL (with a message on stderr) on failure. */
static inline JsonParser *test_load_json(const char *path)
{
    JsonParser *parser = json_parser_new();
    GError *error = NULL;
    if (!json_parser_load_from_file(parser, path, &error)) {
        fprintf(stderr, "%s: %s\n", path, error->message);
        g_error_free(error);
        g_object_unref(parser);
        return NULL;
    }
    return parser;
}

/* A JSON array of integers as a malloc'ed int32 array. */
static inline int32_t *test_int_array(JsonArray *a, size_t *n)
{
    *n = json_array_get_length(a);
    int32_t *out = malloc(sizeof *out * (*n ? *n : 1));
    for (size_t i = 0; i < *n; i++)
        out[i] = (int32_t)json_array_get_int_element(a, (guint)i);
    return out;
}

#endif
