/* alm generate: sends the prompt, writes the text to stdout as token
 * events arrive, and ends with the stats (--stats) or one JSON object
 * (--json). Ctrl-C closes the connection, which cancels the request. */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli.h"
#include "connection.h"
#include "interrupt.h"
#include "output.h"

/* A prompt read from stdin larger than this is refused here: almd's own
 * limit (max_request_bytes, 1 MiB by default) would refuse it anyway. */
#define CLI_MAX_STDIN_PROMPT ((size_t)1 << 30)

typedef struct generate_options {
    JsonObject *params;
    bool json;
    bool stats;
} generate_options;

static bool parse_int(const char *s, long long min, long long max, long long *out)
{
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    if (errno || end == s || *end || v < min || v > max)
        return false;
    *out = v;
    return true;
}

static bool parse_number(const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end || !isfinite(v))
        return false;
    *out = v;
    return true;
}

static int bad_option(const char *name, const char *value, const char *expected)
{
    cli_error("--%s: expected %s, got \"%s\"", name, expected, value);
    return -EINVAL;
}

/* Parses the options into params (ranges are almd's to check: it has the
 * one table of them and says what is wrong). */
static int parse_options(int argc, char **argv, generate_options *o)
{
    enum { OPT_TOP_P = 256, OPT_TOP_K, OPT_MIN_P, OPT_NO_DRAFT, OPT_IGNORE_EOS, OPT_JSON, OPT_STATS };
    static const struct option options[] = {
        { "max-tokens", required_argument, NULL, 'n' },
        { "temperature", required_argument, NULL, 't' },
        { "top-p", required_argument, NULL, OPT_TOP_P },
        { "top-k", required_argument, NULL, OPT_TOP_K },
        { "min-p", required_argument, NULL, OPT_MIN_P },
        { "seed", required_argument, NULL, 's' },
        { "no-draft", no_argument, NULL, OPT_NO_DRAFT },
        { "ignore-eos", no_argument, NULL, OPT_IGNORE_EOS },
        { "chat", no_argument, NULL, 'c' },
        { "json", no_argument, NULL, OPT_JSON },
        { "stats", no_argument, NULL, OPT_STATS },
        { 0 },
    };
    int c, index;
    while ((c = getopt_long(argc, argv, "n:t:s:c", options, &index)) != -1) {
        long long i;
        double d;
        switch (c) {
        case 'n':
            if (!parse_int(optarg, 1, INT32_MAX, &i))
                return bad_option("max-tokens", optarg, "a positive integer");
            json_object_set_int_member(o->params, "max_tokens", i);
            break;
        case OPT_TOP_K:
            if (!parse_int(optarg, 0, INT32_MAX, &i))
                return bad_option("top-k", optarg, "an integer >= 0");
            json_object_set_int_member(o->params, "top_k", i);
            break;
        case 's':
            if (!parse_int(optarg, 0, INT64_MAX, &i))
                return bad_option("seed", optarg, "an integer >= 0");
            json_object_set_int_member(o->params, "seed", i);
            break;
        case 't':
            if (!parse_number(optarg, &d))
                return bad_option("temperature", optarg, "a number");
            json_object_set_double_member(o->params, "temperature", d);
            break;
        case OPT_TOP_P:
            if (!parse_number(optarg, &d))
                return bad_option("top-p", optarg, "a number");
            json_object_set_double_member(o->params, "top_p", d);
            break;
        case OPT_MIN_P:
            if (!parse_number(optarg, &d))
                return bad_option("min-p", optarg, "a number");
            json_object_set_double_member(o->params, "min_p", d);
            break;
        case OPT_IGNORE_EOS:
            json_object_set_boolean_member(o->params, "ignore_eos", true);
            break;
        case OPT_NO_DRAFT:
            json_object_set_boolean_member(o->params, "draft", false);
            break;
        case 'c':
            json_object_set_boolean_member(o->params, "chat", true);
            break;
        case OPT_JSON:
            o->json = true;
            break;
        case OPT_STATS:
            o->stats = true;
            break;
        default:
            fprintf(stderr, "Try `alm generate --help`.\n");
            return -EINVAL;
        }
    }
    return 0;
}

static char *read_stdin(void)
{
    GString *s = g_string_new(NULL);
    char buf[65536];
    size_t n;
    while ((n = fread(buf, 1, sizeof buf, stdin)) > 0) {
        if (s->len + n > CLI_MAX_STDIN_PROMPT) {
            cli_error("the prompt on standard input is over %zu bytes", CLI_MAX_STDIN_PROMPT);
            g_string_free(s, TRUE);
            return NULL;
        }
        g_string_append_len(s, buf, (gssize)n);
    }
    if (ferror(stdin)) {
        cli_error("reading the prompt from standard input failed");
        g_string_free(s, TRUE);
        return NULL;
    }
    char *out = strdup(s->str);
    g_string_free(s, TRUE);
    return out;
}

/* The prompt: the remaining arguments joined by spaces, or stdin for "-" or
 * for no arguments when stdin is not a terminal. NULL after a message. */
static char *read_prompt(int argc, char **argv)
{
    if (optind >= argc) {
        if (isatty(STDIN_FILENO)) {
            cli_error("no prompt (usage: alm generate [OPTIONS] [PROMPT | -])");
            return NULL;
        }
        return read_stdin();
    }
    if (optind == argc - 1 && strcmp(argv[optind], "-") == 0)
        return read_stdin();
    GString *s = g_string_new(NULL);
    for (int i = optind; i < argc; i++)
        g_string_append_printf(s, "%s%s", i > optind ? " " : "", argv[i]);
    char *out = strdup(s->str);
    g_string_free(s, TRUE);
    return out;
}

static double number_member(JsonObject *o, const char *name, bool *found)
{
    JsonNode *n = o ? json_object_get_member(o, name) : NULL;
    *found = n && JSON_NODE_HOLDS_VALUE(n) && (json_node_get_value_type(n) == G_TYPE_INT64 ||
                                               json_node_get_value_type(n) == G_TYPE_DOUBLE);
    return *found ? json_node_get_double(n) : 0;
}

/* One line: "64 tokens, 212.5 tok/s (prompt 9 tokens, 1530.2 tok/s),
 * acceptance 71.3% (43 of 60 drafted)". */
static void print_stats_line(JsonObject *result)
{
    JsonNode *sn = result ? json_object_get_member(result, "stats") : NULL;
    JsonObject *s = sn && JSON_NODE_HOLDS_OBJECT(sn) ? json_node_get_object(sn) : NULL;
    bool has_gen, has_dec, has_prompt, has_pre, has_drafted, has_acc, has_rate;
    double gen = number_member(s, "generated_tokens", &has_gen);
    double dec = number_member(s, "decode_tok_s", &has_dec);
    double prompt = number_member(s, "prompt_tokens", &has_prompt);
    double pre = number_member(s, "prefill_tok_s", &has_pre);
    double drafted = number_member(s, "drafted", &has_drafted);
    double accepted = number_member(s, "accepted", &has_acc);
    double rate = number_member(s, "acceptance_rate", &has_rate);
    GString *line = g_string_new(NULL);
    if (has_gen)
        g_string_append_printf(line, "%.0f tokens", gen);
    if (has_dec)
        g_string_append_printf(line, "%s%.1f tok/s", line->len ? ", " : "", dec);
    if (has_prompt && has_pre)
        g_string_append_printf(line, "%sprompt %.0f tokens at %.1f tok/s",
                               line->len ? ", " : "", prompt, pre);
    if (has_drafted && drafted > 0) {
        if (!has_rate)
            rate = accepted / drafted;
        g_string_append_printf(line, "%sacceptance %.1f%% (%.0f of %.0f drafted)",
                               line->len ? ", " : "", rate * 100, accepted, drafted);
    } else if (has_drafted) {
        g_string_append_printf(line, "%sno speculation", line->len ? ", " : "");
    }
    fprintf(stderr, "%s\n", line->len ? line->str : "no stats from almd");
    g_string_free(line, TRUE);
}

static int stream(cli_connection *c, const generate_options *o)
{
    bool tty = isatty(STDOUT_FILENO);
    bool ends_with_newline = true;
    for (;;) {
        protocol_reply reply;
        int r = cli_next_reply(c, &reply);
        if (r == -EINTR) {
            if (tty && !ends_with_newline)
                fputc('\n', stdout);
            fflush(stdout);
            cli_error("generate cancelled");
            return CLI_EXIT_INTERRUPTED;
        }
        if (r < 0)
            return CLI_EXIT_FAILURE;
        int status = -1;
        if (reply.kind == PROTOCOL_REPLY_EVENT && strcmp(reply.event, "token") == 0) {
            JsonNode *text = json_object_get_member(reply.object, "text");
            if (!o->json && text && JSON_NODE_HOLDS_VALUE(text) &&
                json_node_get_value_type(text) == G_TYPE_STRING) {
                const char *t = json_node_get_string(text);
                size_t len = strlen(t);
                if (len) {
                    fwrite(t, 1, len, stdout);
                    fflush(stdout);
                    ends_with_newline = t[len - 1] == '\n';
                }
            }
        } else if (reply.kind == PROTOCOL_REPLY_ERROR) {
            if (!o->json && tty && !ends_with_newline)
                fputc('\n', stdout);
            cli_print_error_reply(&reply);
            status = CLI_EXIT_FAILURE;
        } else if (reply.kind == PROTOCOL_REPLY_DONE || reply.kind == PROTOCOL_REPLY_RESULT) {
            if (o->json) {
                cli_print_json(stdout, reply.result, false);
            } else if (tty && !ends_with_newline) {
                /* Only on a terminal: piped text stays byte for byte. */
                fputc('\n', stdout);
            }
            fflush(stdout);
            if (o->stats)
                print_stats_line(reply.result);
            status = ferror(stdout) ? CLI_EXIT_FAILURE : CLI_EXIT_OK;
            if (status != CLI_EXIT_OK)
                cli_error("writing the text to standard output failed");
        }
        protocol_reply_clear(&reply);
        if (status >= 0)
            return status;
    }
}

int cli_generate_run(const cli_context *ctx, int argc, char **argv)
{
    generate_options o = { .params = json_object_new() };
    int status = CLI_EXIT_USAGE;
    char *prompt = NULL;
    if (parse_options(argc, argv, &o) < 0 || !(prompt = read_prompt(argc, argv)))
        goto out;
    json_object_set_string_member(o.params, "prompt", prompt);

    cli_connection c;
    status = CLI_EXIT_FAILURE;
    if (cli_connect(&c, ctx->socket_path) < 0)
        goto out;
    c.signal_fd = cli_interrupt_fd_open();
    if (cli_send(&c, "generate", o.params) == 0)
        status = stream(&c, &o);
    /* Closing the connection is what cancels the request after Ctrl-C. */
    cli_disconnect(&c);
    cli_interrupt_fd_close(c.signal_fd);
out:
    free(prompt);
    json_object_unref(o.params);
    return status;
}
