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

/* The speculative-decoding options that generate and bench share. */
typedef struct spec_options {
    const char *draft_dir;   /* --draft DIR */
    const char *mode;        /* --speculative draft|ngram|hybrid|off */
    const char *k;           /* --num-draft-tokens K|auto */
    const char *p_min;       /* --draft-p-min P */
    const char *ngram;       /* --ngram MAX[:MIN] */
    const char *device;      /* --device cpu|cuda, for the target and the draft */
    const char *draft_vocab; /* --draft-vocab N */
} spec_options;

/* --device: where the model runs (NULL: the default, cpu or $ALM_DEVICE). */
#define DEVICE_LONG_OPTION { "device", required_argument, NULL, 'V' }
#define DEVICE_USAGE "[--device cpu|cuda]"

/* The load parameters for --device (NULL: the defaults). */
alm_model_params tool_model_params(const char *device);

#define SPEC_LONG_OPTIONS                                          \
    { "draft", required_argument, NULL, 'D' },                     \
    { "speculative", required_argument, NULL, 'X' },               \
    { "num-draft-tokens", required_argument, NULL, 'K' },          \
    { "draft-p-min", required_argument, NULL, 'Q' },               \
    { "ngram", required_argument, NULL, 'G' },                     \
    { "draft-vocab", required_argument, NULL, 'W' },               \
    DEVICE_LONG_OPTION

#define SPEC_USAGE                                                                      \
    "         [--draft DIR] [--speculative draft|ngram|hybrid|off] [--num-draft-tokens K|auto]\n" \
    "         [--draft-p-min P] [--draft-vocab N] [--ngram MAX[:MIN]] " DEVICE_USAGE "\n"

/* Records option c if it is one of SPEC_LONG_OPTIONS; returns 1 if taken. */
int spec_options_take(spec_options *o, int c, const char *arg);
/* Turns the options into parameters (mode defaults to draft when --draft
 * is given, else off) and loads the draft model if one is needed. Prints
 * the error and returns -1 on bad input. */
int spec_options_resolve(const spec_options *o, alm_speculative_params *out,
                         alm_model **draft_model);
/* Adds the speculative statistics to the stats object being built. */
void spec_stats_add(JsonBuilder *b, const alm_speculative_stats *s, int generated_tokens);

int cmd_tokenize(int argc, char **argv);
int cmd_detokenize(int argc, char **argv);
int cmd_logits(int argc, char **argv);
int cmd_generate(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_convert(int argc, char **argv);

#endif
