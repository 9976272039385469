/* JSON documents of a model folder (safetensors headers, config.json,
 * model.safetensors.index.json): read with a size bound and parsed with
 * json-glib after checks json-glib does not make itself. */
#ifndef ALM_LOADER_JSON_DOCUMENT_H
#define ALM_LOADER_JSON_DOCUMENT_H

#include <stdbool.h>
#include <stddef.h>

#include <json-glib/json-glib.h>

#include "alm.h"

typedef struct json_document {
    JsonParser *parser;
    JsonObject *root;   /* owned by parser */
} json_document;

/* Parses text (not NUL-terminated) that must hold exactly one JSON object.
 * Refuses nesting deeper than max_depth (json-glib recurses, so a hostile
 * document could otherwise exhaust the stack), text after the object, and,
 * when refuse_duplicates, a name that occurs twice among the top-level
 * members (json-glib silently keeps the last one). Errors start with what,
 * e.g. the file's path. */
int json_document_parse(const char *text, size_t len, const char *what,
                        int max_depth, bool refuse_duplicates,
                        json_document *out, alm_error *err);
/* Reads a whole file of at most max_bytes and parses it as above. */
int json_document_load(const char *path, size_t max_bytes, int max_depth,
                       json_document *out, alm_error *err);
void json_document_clear(json_document *doc);

/* Reads a whole regular file of at most max_bytes; *text is malloc'ed and
 * NUL-terminated (the NUL is not counted in *len). */
int read_small_file(const char *path, size_t max_bytes, char **text,
                    size_t *len, alm_error *err);

#endif
