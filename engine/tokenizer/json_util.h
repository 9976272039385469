/* Small checked accessors over json-glib for the tokenizer's files. Each
 * getter validates the member's type and reports the file and component
 * (`where`) in the error message. */
#ifndef ALM_TOKENIZER_JSON_UTIL_H
#define ALM_TOKENIZER_JSON_UTIL_H

#include <json-glib/json-glib.h>
#include <stdbool.h>
#include <stdint.h>

#include "alm.h"

/* Reads and parses path. Returns -ENOENT (with a message) when the file does
 * not exist, -EINVAL for malformed JSON. *parser owns *root. */
int json_load_file(const char *path, JsonParser **parser, JsonNode **root, alm_error *err);

/* The member, or NULL when it is absent or JSON null. */
JsonNode *json_member(JsonObject *o, const char *name);

int json_get_bool(JsonObject *o, const char *name, bool dflt, bool *out, const char *where,
                  alm_error *err);
/* *out is NULL when the member is absent or null and not required. */
int json_get_string(JsonObject *o, const char *name, bool required, const char **out,
                    const char *where, alm_error *err);
int json_get_uint(JsonObject *o, const char *name, uint64_t dflt, uint64_t *out,
                  const char *where, alm_error *err);
/* The object member, or NULL when absent or null; an error for other types. */
int json_get_object(JsonObject *o, const char *name, bool required, JsonObject **out,
                    const char *where, alm_error *err);
int json_get_array(JsonObject *o, const char *name, bool required, JsonArray **out,
                   const char *where, alm_error *err);

/* A string node's value, or NULL when node is not a string. */
const char *json_node_string(JsonNode *node);
/* A short name of the node's JSON type, for messages. */
const char *json_node_kind(JsonNode *node);

/* Parses one component of a tokenizer.json pipeline ({"type": ...}). */
typedef int (*json_component_fn)(void *ctx, JsonNode *node, const char *where, int depth,
                                 alm_error *err);

/* The part every pipeline component shares: a nesting limit, an object
 * with a "type", and "Sequence" components whose members (under list_key)
 * are parsed in order with parse. what names the kind in messages ("a
 * decoder"). Returns 1 when node was a Sequence (fully handled), 0 with
 * *obj and *type set for any other type, or a negative errno. */
int json_component_head(JsonNode *node, const char *what, const char *list_key, int depth,
                        const char *where, json_component_fn parse, void *ctx,
                        JsonObject **obj, const char **type, alm_error *err);

#endif
