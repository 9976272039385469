/* The settings table and its validation. Values are strings everywhere (in
 * the database, on the wire, on the command line); this file decides which
 * strings are valid and what their one canonical spelling is. */
#include "settings_keys.h"

#include <errno.h>
#include <glib.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "core/error.h"

/* Longest model name or path accepted (PATH_MAX). */
#define SETTINGS_MODEL_MAX 4096

static const char *const speculative_choices[] = { "draft", "ngram", "hybrid", "off", NULL };
static const char *const device_choices[] = { "cpu", "cuda", NULL };

static const settings_key settings_keys[] = {
    { .name = "model", .type = SETTINGS_TYPE_MODEL, .default_value = "coder-target-4bit",
      .needs_reload = true, .allow_empty = false,
      .expected = "a model name or folder",
      .help = "target model: a name looked up in model_dirs, or a folder" },
    { .name = "draft_model", .type = SETTINGS_TYPE_MODEL, .default_value = "",
      .needs_reload = true, .allow_empty = true,
      .expected = "a model name or folder (empty for none)",
      .help = "draft model for speculative decoding (empty = none); must share the target's vocabulary" },
    { .name = "num_draft_tokens", .type = SETTINGS_TYPE_INTEGER, .default_value = "4",
      .int_min = 1, .int_max = ALM_MAX_DRAFT_TOKENS, .allow_auto = true,
      .expected = "an integer from 1 to 16 or auto",
      .help = "tokens drafted per step (auto adapts to the acceptance rate)" },
    { .name = "speculative", .type = SETTINGS_TYPE_CHOICE, .default_value = "draft",
      .choices = speculative_choices,
      .expected = "one of draft, ngram, hybrid, off",
      .help = "draft: use draft_model when one is set; ngram: prompt lookup; hybrid: prompt lookup where it finds a match, else draft_model (lookup alone without one); off: plain decoding" },
    { .name = "draft_p_min", .type = SETTINGS_TYPE_NUMBER, .default_value = "0",
      .min = 0, .max = 1, .has_max = true, .max_open = true,
      .expected = "a number p with 0 <= p < 1",
      .help = "stop drafting once the draft's top probability is below this (0 = off)" },
    { .name = "threads", .type = SETTINGS_TYPE_INTEGER, .default_value = "0",
      .needs_reload = true, .int_min = 0, .int_max = 1024,
      .expected = "an integer from 0 (all CPUs) to 1024",
      .help = "worker threads for the forward pass (0 = one per CPU)" },
    { .name = "device", .type = SETTINGS_TYPE_CHOICE, .default_value = "cpu",
      .needs_reload = true, .choices = device_choices,
      .expected = "one of cpu, cuda",
      .help = "where the models run" },
    { .name = "context_length", .type = SETTINGS_TYPE_INTEGER, .default_value = "4096",
      .needs_reload = true, .int_min = 16, .int_max = 1048576,
      .expected = "an integer from 16 to 1048576",
      .help = "tokens a sequence may hold (prompt and output; capped by the model's own limit)" },
    { .name = "temperature", .type = SETTINGS_TYPE_NUMBER, .default_value = "0",
      .min = 0, .has_max = false,
      .expected = "a finite number >= 0",
      .help = "default sampling temperature (0 = greedy)" },
    { .name = "top_p", .type = SETTINGS_TYPE_NUMBER, .default_value = "1",
      .min = 0, .min_open = true, .max = 1, .has_max = true,
      .expected = "a number p with 0 < p <= 1",
      .help = "default nucleus sampling threshold (1 = off)" },
    { .name = "top_k", .type = SETTINGS_TYPE_INTEGER, .default_value = "0",
      .int_min = 0, .int_max = INT32_MAX,
      .expected = "an integer >= 0",
      .help = "default top-k sampling (0 = off)" },
    { .name = "min_p", .type = SETTINGS_TYPE_NUMBER, .default_value = "0",
      .min = 0, .max = 1, .has_max = true,
      .expected = "a number p with 0 <= p <= 1",
      .help = "default min-p sampling threshold, relative to the top token (0 = off)" },
    { .name = "max_tokens", .type = SETTINGS_TYPE_INTEGER, .default_value = "128",
      .int_min = 1, .int_max = INT32_MAX,
      .expected = "an integer >= 1",
      .help = "default number of tokens a request may generate" },
};

#define SETTINGS_KEY_COUNT (sizeof settings_keys / sizeof settings_keys[0])

size_t settings_key_count(void)
{
    return SETTINGS_KEY_COUNT;
}

const settings_key *settings_key_at(size_t index)
{
    return index < SETTINGS_KEY_COUNT ? &settings_keys[index] : NULL;
}

const settings_key *settings_key_lookup(const char *name)
{
    if (!name)
        return NULL;
    for (size_t i = 0; i < SETTINGS_KEY_COUNT; i++)
        if (strcmp(settings_keys[i].name, name) == 0)
            return &settings_keys[i];
    return NULL;
}

bool settings_key_needs_reload(const char *key)
{
    const settings_key *k = settings_key_lookup(key);
    return k && k->needs_reload;
}

const char *settings_key_default(const char *key)
{
    const settings_key *k = settings_key_lookup(key);
    return k ? k->default_value : NULL;
}

/* The value as it appears in a one-line message: control characters and
 * quotes escaped, long values cut (the user typed it; they know the rest). */
static void quote_for_message(const char *value, char *out, size_t out_size)
{
    const size_t shown_max = 64;
    size_t o = 0, i = 0;
    for (; value[i] && i < shown_max && o + 5 < out_size; i++) {
        unsigned char c = (unsigned char)value[i];
        if (c == '"' || c == '\\') {
            out[o++] = '\\';
            out[o++] = (char)c;
        } else if (c < 0x20 || c == 0x7f) {
            o += (size_t)snprintf(out + o, out_size - o, "\\x%02x", c);
        } else {
            out[o++] = (char)c;
        }
    }
    if (value[i] && o + 4 < out_size) {
        memcpy(out + o, "...", 3);
        o += 3;
    }
    out[o] = '\0';
}

static int refuse(const settings_key *k, const char *value, alm_error *err)
{
    char shown[64 * 4 + 8];
    quote_for_message(value, shown, sizeof shown);
    return alm_error_set(err, -EINVAL, "%s: expected %s, got \"%s\"",
                         k->name, k->expected, shown);
}

static int duplicate_into(const char *s, char **normalized, alm_error *err)
{
    if (!normalized)
        return 0;
    *normalized = strdup(s);
    if (!*normalized)
        return alm_error_set(err, -ENOMEM, "out of memory");
    return 0;
}

static int validate_model(const settings_key *k, const char *value, char **normalized,
                          alm_error *err)
{
    size_t len = strlen(value);
    if (len == 0 && !k->allow_empty)
        return refuse(k, value, err);
    if (len > SETTINGS_MODEL_MAX)
        return alm_error_set(err, -EINVAL, "%s: expected %s, got a value of %zu bytes (at most %d)",
                             k->name, k->expected, len, SETTINGS_MODEL_MAX);
    /* Names end up in paths, logs and one-line replies: no control bytes. */
    for (size_t i = 0; i < len; i++) {
        unsigned char c = (unsigned char)value[i];
        if (c < 0x20 || c == 0x7f)
            return refuse(k, value, err);
    }
    if (!g_utf8_validate(value, (gssize)len, NULL))
        return refuse(k, value, err);
    return duplicate_into(value, normalized, err);
}

static int validate_choice(const settings_key *k, const char *value, char **normalized,
                           alm_error *err)
{
    for (const char *const *c = k->choices; *c; c++)
        if (strcasecmp(*c, value) == 0)
            return duplicate_into(*c, normalized, err);
    return refuse(k, value, err);
}

/* Optional '-' then decimal digits only: no spaces, '+', hex or octal. */
static bool parse_decimal_integer(const char *s, int64_t *out)
{
    const char *p = s;
    if (*p == '-')
        p++;
    if (!*p)
        return false;
    for (const char *q = p; *q; q++)
        if (*q < '0' || *q > '9')
            return false;
    errno = 0;
    char *end;
    long long v = strtoll(s, &end, 10);
    if (errno == ERANGE || *end)
        return false;
    *out = (int64_t)v;
    return true;
}

static int validate_integer(const settings_key *k, const char *value, char **normalized,
                            alm_error *err)
{
    if (k->allow_auto && strcasecmp(value, "auto") == 0)
        return duplicate_into("auto", normalized, err);
    int64_t v;
    if (!parse_decimal_integer(value, &v) || v < k->int_min || v > k->int_max)
        return refuse(k, value, err);
    char canonical[32];
    snprintf(canonical, sizeof canonical, "%lld", (long long)v);
    return duplicate_into(canonical, normalized, err);
}

/* A plain decimal number ("0.5", ".5", "1e-3"); refuses what strtod would
 * also take but nobody means here: "inf", "nan", hex floats, spaces. The C
 * locale's '.' always, whatever the process's locale. */
static bool parse_decimal_number(const char *s, double *out)
{
    if (!*s)
        return false;
    for (const char *p = s; *p; p++)
        if (!strchr("0123456789.eE+-", *p))
            return false;
    char *end;
    errno = 0;
    double v = g_ascii_strtod(s, &end);
    if (*end || errno == ERANGE || !isfinite(v))
        return false;
    *out = v;
    return true;
}

/* The shortest "%g" spelling that reads back as the same double, so that
 * "0.70" is stored as "0.7", not "0.69999999999999996"; whole numbers that
 * people type in full stay in full ("100", not "1e+02"). */
static void format_shortest(double v, char *out, size_t out_size)
{
    for (int precision = 1; precision <= 17; precision++) {
        char format[8];
        snprintf(format, sizeof format, "%%.%dg", precision);
        g_ascii_formatd(out, (gint)out_size, format, v);
        bool exponent_for_whole_number = strchr(out, 'e') && fabs(v) >= 1 && fabs(v) < 1e17;
        if (g_ascii_strtod(out, NULL) == v && !exponent_for_whole_number)
            return;
    }
}

static int validate_number(const settings_key *k, const char *value, char **normalized,
                           alm_error *err)
{
    double v;
    if (!parse_decimal_number(value, &v))
        return refuse(k, value, err);
    bool low_ok = k->min_open ? v > k->min : v >= k->min;
    bool high_ok = !k->has_max || (k->max_open ? v < k->max : v <= k->max);
    if (!low_ok || !high_ok)
        return refuse(k, value, err);
    if (v == 0)
        v = 0;   /* "-0" is stored as "0" */
    char canonical[G_ASCII_DTOSTR_BUF_SIZE];
    format_shortest(v, canonical, sizeof canonical);
    return duplicate_into(canonical, normalized, err);
}

static int refuse_unknown(const char *key, alm_error *err)
{
    char known[256] = "";
    size_t used = 0;
    for (size_t i = 0; i < SETTINGS_KEY_COUNT && used < sizeof known; i++)
        used += (size_t)snprintf(known + used, sizeof known - used, "%s%s",
                                 i ? ", " : "", settings_keys[i].name);
    char shown[64 * 4 + 8];
    quote_for_message(key, shown, sizeof shown);
    return alm_error_set(err, -ENOENT, "unknown setting \"%s\" (known: %s)", shown, known);
}

int settings_key_validate(const char *key, const char *value, char **normalized,
                          alm_error *err)
{
    if (normalized)
        *normalized = NULL;
    if (!key)
        return alm_error_set(err, -EINVAL, "no setting name given");
    const settings_key *k = settings_key_lookup(key);
    if (!k)
        return refuse_unknown(key, err);
    if (!value)
        return alm_error_set(err, -EINVAL, "%s: expected %s, got no value", k->name, k->expected);
    switch (k->type) {
    case SETTINGS_TYPE_MODEL:
        return validate_model(k, value, normalized, err);
    case SETTINGS_TYPE_CHOICE:
        return validate_choice(k, value, normalized, err);
    case SETTINGS_TYPE_INTEGER:
        return validate_integer(k, value, normalized, err);
    case SETTINGS_TYPE_NUMBER:
        return validate_number(k, value, normalized, err);
    }
    return alm_error_set(err, -EINVAL, "%s: unsupported setting type", k->name);
}
