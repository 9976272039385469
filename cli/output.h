/* How alm prints: one-line errors, JSON, and two-column tables whose values
 * are formatted for people (durations, sizes, rates, percentages). */
#ifndef ALM_CLI_OUTPUT_H
#define ALM_CLI_OUTPUT_H

#include <json-glib/json-glib.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

/* "alm: MESSAGE\n" on stderr. */
void cli_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));

/* A JSON value as text: strings as they are, integers plainly, other
 * numbers in shortest round-trip form, true/false, null as "", arrays as
 * their elements separated by spaces, objects as compact JSON.
 * malloc'ed (NULL when out of memory). */
char *cli_json_text(JsonNode *node);

/* The object as JSON followed by a newline; pretty: indented. */
void cli_print_json(FILE *out, JsonObject *object, bool pretty);

typedef struct cli_table_row {
    char *label;
    char *value;
} cli_table_row;

typedef struct cli_table {
    cli_table_row *rows;
    size_t n, cap;
    bool failed;               /* out of memory on some add */
} cli_table;

/* Adds a row (both strings copied). */
void cli_table_add(cli_table *t, const char *label, const char *value);
/* Adds a row per member of object, members of nested objects as
 * "parent.child", each value formatted by its name: *_s as a duration when
 * it is uptime-like, *_tok_s as a rate, *_bytes as a size, *_rate as a
 * percentage, anything else with cli_json_text. */
void cli_table_add_object(cli_table *t, const char *prefix, JsonObject *object);
/* Prints the rows with the labels padded to one width and empties the
 * table. false when a row could not be added (out of memory): what was
 * printed is incomplete. */
bool cli_table_flush(cli_table *t, FILE *out);

/* "1h 02m 03s", "4.2s". */
void cli_format_duration(double seconds, char *buf, size_t size);
/* "512 B", "9.4 MiB". */
void cli_format_bytes(double bytes, char *buf, size_t size);

#endif
