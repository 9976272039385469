/* Shared pieces of the alm-engine subcommands: option parsing helpers and
 * JSON output. */
#ifndef ALM_TOOLS_TOOL_H
#define ALM_TOOLS_TOOL_H

#include <json-glib/json-glib.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "alm.h"

/* Prints "alm-engine: <message>" on stderr; returns 1 (the exit status). */
int tool_fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* Parses "1,2,3" into a malloc'ed array; -EINVAL with a message on junk. */
int tool_parse_ids(const char *text, int32_t **ids, size_t *n);
int tool_parse_int(const char *text, const char *option, long min, long max, long *out);
int tool_parse_double(const char *text, const char *option, double *out);
/* Reads a whole file (NUL-terminated). */
int tool_read_file(const char *path, char **data, size_t *len);

/* Writes the builder's root as one line of JSON on stdout. */
void tool_print_json(JsonBuilder *b);
void tool_add_ids(JsonBuilder *b, const char *member, const int32_t *ids, size_t n);
double tool_now(void);

int cmd_tokenize(int argc, char **argv);
int cmd_detokenize(int argc, char **argv);
int cmd_logits(int argc, char **argv);
int cmd_generate(int argc, char **argv);
int cmd_bench(int argc, char **argv);

#endif
