/* The settings table: every key accepts its good values (in their canonical
 * spelling), refuses bad ones with a message naming the key, what was
 * expected and what was given; defaults and reload flags are as documented. */
#include <errno.h>
#include <locale.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "settings_keys.h"
#include "tap.h"

/* A value as shown in a TAP line (which must stay one line). */
static const char *printable(const char *s)
{
    static char buf[128];
    size_t o = 0;
    for (; *s && o + 5 < sizeof buf; s++) {
        unsigned char c = (unsigned char)*s;
        if (c < 0x20 || c == 0x7f)
            o += (size_t)snprintf(buf + o, sizeof buf - o, "\\x%02x", c);
        else
            buf[o++] = (char)c;
    }
    buf[o] = '\0';
    return buf;
}

/* value is accepted and stored as expected_normalized. */
static void check_good(const char *key, const char *value, const char *expected_normalized)
{
    alm_error err = { 0 };
    char *normalized = NULL;
    int r = settings_key_validate(key, value, &normalized, &err);
    tap_ok(r == 0 && normalized && strcmp(normalized, expected_normalized) == 0,
           "%s = \"%s\" accepted as \"%s\" (got r=%d \"%s\" %s)", key, value,
           expected_normalized, r, normalized ? normalized : "(null)", err.message);
    free(normalized);
}

/* value is refused with -EINVAL and a message containing fragment. */
static void check_bad(const char *key, const char *value, const char *fragment)
{
    alm_error err = { 0 };
    char *normalized = (char *)"not touched";
    int r = settings_key_validate(key, value, &normalized, &err);
    tap_ok(r == -EINVAL && normalized == NULL && strstr(err.message, fragment) != NULL,
           "%s = \"%s\" refused with \"%s\" (got r=%d: %s)", key, printable(value),
           fragment, r, err.message);
}

static void test_models(void)
{
    check_good("model", "coder-target-4bit", "coder-target-4bit");
    check_good("model", "/srv/models/My Model", "/srv/models/My Model");
    check_good("model", "modèle", "modèle");
    check_bad("model", "", "model: expected a model name or folder, got \"\"");
    check_bad("model", "a\nb", "got \"a\\x0ab\"");
    check_bad("model", "\xff\xfe", "model: expected a model name or folder");
    char *long_name = malloc(5000);
    memset(long_name, 'a', 4999);
    long_name[4999] = '\0';
    check_bad("model", long_name, "got a value of 4999 bytes (at most 4096)");
    free(long_name);

    check_good("draft_model", "", "");
    check_good("draft_model", "coder-draft-4bit", "coder-draft-4bit");
    check_bad("draft_model", "x\ty", "draft_model: expected a model name or folder (empty for none)");
}

static void test_integers(void)
{
    check_good("num_draft_tokens", "1", "1");
    check_good("num_draft_tokens", "16", "16");
    check_good("num_draft_tokens", "03", "3");
    check_good("num_draft_tokens", "auto", "auto");
    check_good("num_draft_tokens", "AUTO", "auto");
    check_bad("num_draft_tokens", "x", "num_draft_tokens: expected an integer from 1 to 16 or auto, got \"x\"");
    check_bad("num_draft_tokens", "0", "got \"0\"");
    check_bad("num_draft_tokens", "17", "got \"17\"");
    check_bad("num_draft_tokens", "2.5", "expected an integer from 1 to 16 or auto");
    check_bad("num_draft_tokens", "", "got \"\"");
    check_bad("num_draft_tokens", " 3", "got \" 3\"");
    check_bad("num_draft_tokens", "+3", "got \"+3\"");
    check_bad("num_draft_tokens", "0x3", "got \"0x3\"");

    check_good("threads", "0", "0");
    check_good("threads", "1024", "1024");
    check_bad("threads", "1025", "threads: expected an integer from 0 (all CPUs) to 1024, got \"1025\"");
    check_bad("threads", "-1", "got \"-1\"");
    check_bad("threads", "auto", "got \"auto\"");
    check_bad("threads", "99999999999999999999999", "threads: expected an integer");

    check_good("context_length", "16", "16");
    check_good("context_length", "1048576", "1048576");
    check_good("context_length", "4096", "4096");
    check_bad("context_length", "15", "context_length: expected an integer from 16 to 1048576, got \"15\"");
    check_bad("context_length", "1048577", "got \"1048577\"");
    check_bad("context_length", "4k", "got \"4k\"");

    check_good("top_k", "0", "0");
    check_good("top_k", "40", "40");
    check_bad("top_k", "-1", "top_k: expected an integer >= 0, got \"-1\"");
    check_bad("top_k", "1e3", "got \"1e3\"");

    check_good("max_tokens", "1", "1");
    check_good("max_tokens", "2147483647", "2147483647");
    check_bad("max_tokens", "0", "max_tokens: expected an integer >= 1, got \"0\"");
    check_bad("max_tokens", "2147483648", "got \"2147483648\"");
    check_bad("max_tokens", "-", "got \"-\"");
}

static void test_numbers(void)
{
    check_good("draft_p_min", "0", "0");
    check_good("draft_p_min", "0.50", "0.5");
    check_good("draft_p_min", ".25", "0.25");
    check_good("draft_p_min", "0.999", "0.999");
    check_bad("draft_p_min", "1", "draft_p_min: expected a number p with 0 <= p < 1, got \"1\"");
    check_bad("draft_p_min", "-0.1", "got \"-0.1\"");
    check_bad("draft_p_min", "nan", "got \"nan\"");

    check_good("temperature", "0", "0");
    check_good("temperature", "0.7", "0.7");
    check_good("temperature", "0.70", "0.7");
    check_good("temperature", "1e-3", "0.001");
    check_good("temperature", "-0", "0");
    check_good("temperature", "100", "100");
    check_good("temperature", "2.5e1", "25");
    check_good("temperature", "1e20", "1e+20");
    check_bad("temperature", "-0.5", "temperature: expected a finite number >= 0, got \"-0.5\"");
    check_bad("temperature", "inf", "got \"inf\"");
    check_bad("temperature", "1e999", "got \"1e999\"");
    check_bad("temperature", "0x1p-2", "got \"0x1p-2\"");
    check_bad("temperature", "0.7 ", "got \"0.7 \"");
    check_bad("temperature", "", "got \"\"");
    check_bad("temperature", "hot", "got \"hot\"");

    check_good("top_p", "1", "1");
    check_good("top_p", "0.9", "0.9");
    check_good("top_p", "1e-9", "1e-09");
    check_bad("top_p", "0", "top_p: expected a number p with 0 < p <= 1, got \"0\"");
    check_bad("top_p", "1.01", "got \"1.01\"");

    check_good("min_p", "0", "0");
    check_good("min_p", "1", "1");
    check_good("min_p", "0.05", "0.05");
    check_bad("min_p", "1.5", "min_p: expected a number p with 0 <= p <= 1, got \"1.5\"");
    check_bad("min_p", "-1", "got \"-1\"");

    /* A decimal comma locale must not change what is accepted or stored. */
    if (setlocale(LC_NUMERIC, "de_DE.UTF-8") || setlocale(LC_NUMERIC, "fr_FR.UTF-8")) {
        check_good("temperature", "0.7", "0.7");
        check_bad("temperature", "0,7", "got \"0,7\"");
        setlocale(LC_NUMERIC, "C");
    } else {
        tap_diag("no decimal-comma locale installed: locale independence not checked");
    }
}

static void test_choices(void)
{
    check_good("speculative", "draft", "draft");
    check_good("speculative", "ngram", "ngram");
    check_good("speculative", "OFF", "off");
    check_bad("speculative", "on", "speculative: expected one of draft, ngram, hybrid, off, got \"on\"");
    check_bad("speculative", "", "got \"\"");

    check_good("device", "cpu", "cpu");
    check_good("device", "cuda", "cuda");
    check_bad("device", "gpu", "device: expected one of cpu, cuda, got \"gpu\"");
}

static void test_unknown_and_null(void)
{
    alm_error err = { 0 };
    char *normalized = NULL;
    int r = settings_key_validate("temprature", "1", &normalized, &err);
    tap_ok(r == -ENOENT && normalized == NULL, "unknown key refused with -ENOENT");
    tap_ok(strstr(err.message, "unknown setting \"temprature\"") != NULL,
           "message names the unknown key: %s", err.message);
    tap_ok(strstr(err.message, "known: model, draft_model, num_draft_tokens") != NULL &&
               strstr(err.message, "max_tokens") != NULL,
           "message lists the known keys");

    r = settings_key_validate("threads", NULL, &normalized, &err);
    tap_ok(r == -EINVAL && strstr(err.message, "threads: expected") != NULL,
           "a missing value is refused: %s", err.message);
    r = settings_key_validate(NULL, "1", &normalized, &err);
    tap_ok(r == -EINVAL, "a missing key is refused");
    r = settings_key_validate("threads", "4", NULL, NULL);
    tap_ok(r == 0, "normalized and err may be NULL");
    r = settings_key_validate("threads", "x", NULL, NULL);
    tap_ok(r == -EINVAL, "refusal without an error struct still returns -EINVAL");

    char long_value[300];
    memset(long_value, '9', sizeof long_value - 1);
    long_value[sizeof long_value - 1] = '\0';
    r = settings_key_validate("threads", long_value, NULL, &err);
    tap_ok(r == -EINVAL && strstr(err.message, "...\"") != NULL && strlen(err.message) < 200,
           "a long bad value is shortened in the message: %s", err.message);
}

static void test_table(void)
{
    static const char *const expected_keys[] = {
        "model", "draft_model", "num_draft_tokens", "speculative", "draft_p_min",
        "threads", "device", "context_length", "temperature", "top_p", "top_k",
        "min_p", "max_tokens",
    };
    size_t n = sizeof expected_keys / sizeof expected_keys[0];
    tap_ok(settings_key_count() == n, "%zu keys", settings_key_count());
    tap_ok(settings_key_at(settings_key_count()) == NULL, "iteration ends with NULL");
    for (size_t i = 0; i < n; i++) {
        const settings_key *k = settings_key_at(i);
        tap_ok(k && strcmp(k->name, expected_keys[i]) == 0, "key %zu is %s", i, expected_keys[i]);
        if (!k)
            continue;
        tap_ok(settings_key_lookup(k->name) == k, "%s: lookup finds the row", k->name);
        tap_ok(k->help && *k->help && k->expected && *k->expected, "%s: has help text", k->name);
        /* Every default is valid and already canonical. */
        char *normalized = NULL;
        alm_error err = { 0 };
        int r = settings_key_validate(k->name, k->default_value, &normalized, &err);
        tap_ok(r == 0 && normalized && strcmp(normalized, k->default_value) == 0,
               "%s: default \"%s\" is valid and canonical %s", k->name, k->default_value, err.message);
        free(normalized);
        tap_ok(settings_key_default(k->name) == k->default_value, "%s: settings_key_default", k->name);
    }
    tap_ok(settings_key_default("nope") == NULL, "no default for an unknown key");
    tap_ok(strcmp(settings_key_default("draft_model"), "") == 0, "draft_model defaults to none");
    tap_ok(strcmp(settings_key_default("model"), "coder-target-4bit") == 0,
           "model defaults to the embedded target");

    /* Models, device, threads and context need `alm restart`; sampling and
     * speculation parameters apply at once. */
    static const char *const reload_keys[] = { "model", "draft_model", "threads", "device", "context_length" };
    static const char *const live_keys[] = { "num_draft_tokens", "speculative", "draft_p_min",
                                             "temperature", "top_p", "top_k", "min_p", "max_tokens" };
    for (size_t i = 0; i < sizeof reload_keys / sizeof reload_keys[0]; i++)
        tap_ok(settings_key_needs_reload(reload_keys[i]), "%s needs a reload", reload_keys[i]);
    for (size_t i = 0; i < sizeof live_keys / sizeof live_keys[0]; i++)
        tap_ok(!settings_key_needs_reload(live_keys[i]), "%s applies at once", live_keys[i]);
    tap_ok(!settings_key_needs_reload("nope"), "unknown key: no reload");
    tap_ok(!settings_key_needs_reload(NULL), "NULL key: no reload");
}

int main(void)
{
    test_models();
    test_integers();
    test_numbers();
    test_choices();
    test_unknown_and_null();
    test_table();
    return tap_done();
}
