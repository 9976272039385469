/* The almd protocol: request validation with the right error code for each
 * kind of bad line, builders whose output parses back, the method table,
 * the line reader's bounds, and random lines that never crash. */
#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "protocol.h"
#include "tap.h"

#define MAX_BYTES 4096

static int parse(const char *line, protocol_request *req, protocol_error *error)
{
    return protocol_request_parse(line, strlen(line), MAX_BYTES, req, error);
}

static void expect_refused(const char *line, protocol_error_code code, const char *fragment)
{
    protocol_request req;
    protocol_error error;
    int r = parse(line, &req, &error);
    tap_ok(r < 0 && error.code == code && strstr(error.message, fragment) != NULL &&
               req.method == NULL && req.params == NULL,
           "%s: %.60s -> %s: %s", protocol_error_code_name(code), line,
           protocol_error_code_name(error.code), error.message);
    protocol_request_clear(&req);
}

static void test_table(void)
{
    size_t n;
    const protocol_method *m = protocol_methods(&n);
    static const char *const required[] = { "config.get", "config.set", "config.unset",
                                            "config.list", "restart", "generate",
                                            "stats", "status" };
    int found = 0;
    for (size_t i = 0; i < sizeof required / sizeof required[0]; i++)
        found += protocol_method_find(required[i]) != NULL;
    tap_ok(found == 8 && n == PROTOCOL_METHOD_COUNT_, "all eight methods in the table");
    bool ids_match = true;
    for (size_t i = 0; i < n; i++)
        ids_match = ids_match && m[i].id == (protocol_method_id)i &&
                    protocol_method_get(m[i].id) == &m[i] && m[i].summary;
    tap_ok(ids_match, "table order matches protocol_method_id, every method has a summary");
    tap_ok(protocol_method_find("config.set")->needs_admin &&
               protocol_method_find("config.unset")->needs_admin &&
               protocol_method_find("restart")->needs_admin &&
               !protocol_method_find("generate")->needs_admin &&
               !protocol_method_find("stats")->needs_admin &&
               !protocol_method_find("status")->needs_admin &&
               !protocol_method_find("config.get")->needs_admin,
           "admin only: config.set, config.unset, restart");
    tap_ok(protocol_method_find("generate")->streams && protocol_method_find("restart")->streams &&
               !protocol_method_find("stats")->streams,
           "generate and restart stream");
    tap_ok(protocol_method_find("Generate") == NULL && protocol_method_find("") == NULL,
           "method names are exact");
    for (int c = 0; c < PROTOCOL_ERROR_COUNT_; c++) {
        protocol_error_code back;
        if (protocol_error_code_from_name(protocol_error_code_name(c), &back) < 0 ||
            back != (protocol_error_code)c)
            tap_ok(0, "error code %d round trip", c);
    }
    protocol_error_code back;
    tap_ok(strcmp(protocol_error_code_name(PROTOCOL_ERROR_TOO_LARGE), "too_large") == 0 &&
               protocol_error_code_from_name("nope", &back) == -EINVAL,
           "error code names");
}

static void test_valid_requests(void)
{
    protocol_request req;
    protocol_error error;
    int r = parse("{\"version\":1,\"id\":7,\"method\":\"generate\",\"params\":{\"prompt\":"
                  "\"def f(\",\"max_tokens\":16,\"temperature\":0,\"top_p\":0.9,"
                  "\"draft\":false,\"seed\":42}}",
                  &req, &error);
    tap_ok(r == 0 && req.method->id == PROTOCOL_METHOD_GENERATE && req.id.kind == PROTOCOL_ID_INT &&
               req.id.number == 7,
           "generate request parsed (%s)", r ? error.message : "ok");
    const char *prompt = NULL;
    int64_t max_tokens = 0, seed = 0;
    double temperature = -1, top_p = 0;
    bool draft = true, chat = true;
    tap_ok(protocol_param_string(&req, "prompt", &prompt) && strcmp(prompt, "def f(") == 0 &&
               protocol_param_int(&req, "max_tokens", &max_tokens) && max_tokens == 16 &&
               protocol_param_number(&req, "temperature", &temperature) && temperature == 0 &&
               protocol_param_number(&req, "top_p", &top_p) && top_p == 0.9 &&
               protocol_param_bool(&req, "draft", &draft) && !draft &&
               protocol_param_int(&req, "seed", &seed) && seed == 42,
           "params read with their types");
    tap_ok(!protocol_param_bool(&req, "chat", &chat) && chat &&
               !protocol_param_string(&req, "max_tokens", &prompt),
           "absent or differently typed params report false");
    protocol_request_clear(&req);

    r = parse("{\"id\":\"abc\",\"method\":\"status\"}", &req, &error);
    tap_ok(r == 0 && req.id.kind == PROTOCOL_ID_STRING && strcmp(req.id.string, "abc") == 0 &&
               req.params && json_object_get_size(req.params) == 0,
           "string id, no version (means 1), no params (empty object)");
    protocol_request_clear(&req);
    r = parse("  {\"id\":-3,\"method\":\"stats\",\"params\":null}  ", &req, &error);
    tap_ok(r == 0 && req.id.number == -3, "negative id, null params, surrounding blanks");
    protocol_request_clear(&req);

    static const char *const values[][2] = {
        { "\"coder-draft-4bit\"", "coder-draft-4bit" }, { "3", "3" }, { "0.1", "0.1" },
        { "true", "true" },  { "-2.5e-3", "-0.0025" },
    };
    for (size_t i = 0; i < sizeof values / sizeof values[0]; i++) {
        char line[200];
        snprintf(line, sizeof line,
                 "{\"id\":1,\"method\":\"config.set\",\"params\":{\"key\":\"k\",\"value\":%s}}",
                 values[i][0]);
        r = parse(line, &req, &error);
        char *text = r == 0 ? protocol_param_scalar_text(&req, "value") : NULL;
        tap_ok(text && strcmp(text, values[i][1]) == 0, "config.set value %s as text \"%s\"",
               values[i][0], text ? text : error.message);
        free(text);
        protocol_request_clear(&req);
    }
}

static void test_refused(void)
{
    expect_refused("{\"id\":1,\"method\":\"status\"", PROTOCOL_ERROR_BAD_REQUEST,
                   "malformed JSON");
    expect_refused("not json", PROTOCOL_ERROR_BAD_REQUEST, "malformed JSON");
    expect_refused("", PROTOCOL_ERROR_BAD_REQUEST, "");
    expect_refused("[1,2]", PROTOCOL_ERROR_BAD_REQUEST, "must be a JSON object, not an array");
    expect_refused("\"status\"", PROTOCOL_ERROR_BAD_REQUEST, "not a string");
    expect_refused("{\"method\":\"status\"}", PROTOCOL_ERROR_BAD_REQUEST, "missing \"id\"");
    expect_refused("{\"id\":1.5,\"method\":\"status\"}", PROTOCOL_ERROR_BAD_REQUEST,
                   "\"id\" must be an integer or a string, not a number");
    expect_refused("{\"id\":[1],\"method\":\"status\"}", PROTOCOL_ERROR_BAD_REQUEST,
                   "not an array");
    expect_refused("{\"id\":1}", PROTOCOL_ERROR_BAD_REQUEST, "missing \"method\"");
    expect_refused("{\"id\":1,\"method\":5}", PROTOCOL_ERROR_BAD_REQUEST,
                   "\"method\" must be a string");
    expect_refused("{\"id\":1,\"method\":\"reboot\"}", PROTOCOL_ERROR_UNKNOWN_METHOD,
                   "unknown method \"reboot\" (known: status, stats");
    expect_refused("{\"version\":2,\"id\":1,\"method\":\"status\"}",
                   PROTOCOL_ERROR_UNSUPPORTED_VERSION, "version 2 is not supported");
    expect_refused("{\"version\":\"1\",\"id\":1,\"method\":\"status\"}",
                   PROTOCOL_ERROR_BAD_REQUEST, "\"version\" must be an integer");
    expect_refused("{\"id\":1,\"method\":\"status\",\"param\":{}}", PROTOCOL_ERROR_BAD_REQUEST,
                   "unknown member \"param\"");
    expect_refused("{\"id\":1,\"method\":\"status\",\"params\":[]}", PROTOCOL_ERROR_BAD_REQUEST,
                   "\"params\" must be an object, not an array");
    expect_refused("{\"id\":1,\"method\":\"status\",\"params\":{\"x\":1}}",
                   PROTOCOL_ERROR_BAD_REQUEST, "status: unknown param \"x\" (it takes none)");
    expect_refused("{\"id\":1,\"method\":\"generate\",\"params\":{}}",
                   PROTOCOL_ERROR_BAD_REQUEST, "generate: missing param \"prompt\"");
    expect_refused("{\"id\":1,\"method\":\"generate\",\"params\":{\"prompt\":1}}",
                   PROTOCOL_ERROR_BAD_REQUEST, "\"prompt\" must be a string, not an integer");
    expect_refused("{\"id\":1,\"method\":\"generate\",\"params\":{\"prompt\":\"x\","
                   "\"max_tokens\":2.5}}",
                   PROTOCOL_ERROR_BAD_REQUEST, "\"max_tokens\" must be an integer");
    expect_refused("{\"id\":1,\"method\":\"generate\",\"params\":{\"prompt\":\"x\","
                   "\"max_tokens\":0}}",
                   PROTOCOL_ERROR_INVALID_VALUE, "\"max_tokens\" is 0, outside 1..16777216");
    expect_refused("{\"id\":1,\"method\":\"generate\",\"params\":{\"prompt\":\"x\","
                   "\"top_p\":1.5}}",
                   PROTOCOL_ERROR_INVALID_VALUE, "\"top_p\" is 1.5");
    expect_refused("{\"id\":1,\"method\":\"generate\",\"params\":{\"prompt\":\"x\","
                   "\"tmperature\":1}}",
                   PROTOCOL_ERROR_BAD_REQUEST, "unknown param \"tmperature\" (known: prompt");
    expect_refused("{\"id\":1,\"method\":\"config.set\",\"params\":{\"key\":\"k\"}}",
                   PROTOCOL_ERROR_BAD_REQUEST, "missing param \"value\"");
    expect_refused("{\"id\":1,\"method\":\"config.set\",\"params\":{\"key\":\"k\","
                   "\"value\":[1]}}",
                   PROTOCOL_ERROR_BAD_REQUEST, "must be a string, number or boolean");
    expect_refused("{\"id\":1,\"method\":\"status\"}\xff", PROTOCOL_ERROR_BAD_REQUEST,
                   "not valid UTF-8");

    char id[300];
    memset(id, 'x', sizeof id);
    char line[400];
    snprintf(line, sizeof line, "{\"id\":\"%.*s\",\"method\":\"status\"}", 200, id);
    expect_refused(line, PROTOCOL_ERROR_BAD_REQUEST, "longer than 128");

    /* A NUL inside the line (JSON text cannot hold one). */
    protocol_request req;
    protocol_error error;
    static const char with_nul[] = "{\"id\":1,\"method\":\"status\"}\0x";
    tap_ok(protocol_request_parse(with_nul, sizeof with_nul - 1, MAX_BYTES, &req, &error) < 0 &&
               error.code == PROTOCOL_ERROR_BAD_REQUEST && strstr(error.message, "NUL"),
           "NUL byte refused: %s", error.message);

    /* Deep nesting never reaches the recursive JSON parser. */
    size_t deep = 200000;
    char *nested = malloc(deep * 2 + 64);
    size_t k = (size_t)sprintf(nested, "{\"id\":1,\"method\":\"status\",\"params\":{\"a\":");
    for (size_t i = 0; i < deep; i++)
        nested[k++] = '[';
    for (size_t i = 0; i < deep; i++)
        nested[k++] = ']';
    nested[k++] = '}';
    nested[k++] = '}';
    tap_ok(protocol_request_parse(nested, k, 0, &req, &error) < 0 &&
               strstr(error.message, "nested deeper"),
           "200000 nested arrays refused before parsing: %s", error.message);
    free(nested);
    tap_ok(parse("{\"id\":1,\"method\":\"generate\",\"params\":{\"prompt\":\"[[[[[[[[[[[[[[[["
                 "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[\"}}",
                 &req, &error) == 0,
           "brackets inside a string do not count as nesting");
    protocol_request_clear(&req);

    /* The id survives into the error when it could be read. */
    tap_ok(parse("{\"id\":\"q9\",\"method\":\"nope\"}", &req, &error) < 0 &&
               error.id.kind == PROTOCOL_ID_STRING && strcmp(error.id.string, "q9") == 0,
           "error keeps the request's id");
    tap_ok(parse("{\"method\":\"nope\"}", &req, &error) < 0 && error.id.kind == PROTOCOL_ID_NONE,
           "no id: error id is null");

    /* Size limit. */
    char big[MAX_BYTES + 100];
    int n = snprintf(big, sizeof big, "{\"id\":1,\"method\":\"generate\",\"params\":{\"prompt\":\"");
    memset(big + n, 'a', MAX_BYTES);
    strcpy(big + n + MAX_BYTES - 10, "\"}}");
    size_t big_len = strlen(big);
    tap_ok(protocol_request_parse(big, big_len, MAX_BYTES, &req, &error) == -EMSGSIZE &&
               error.code == PROTOCOL_ERROR_TOO_LARGE &&
               strstr(error.message, "max_request_bytes"),
           "line of %zu bytes over %d: too_large: %s", big_len, MAX_BYTES, error.message);
    tap_ok(protocol_request_parse(big, big_len, 0, &req, &error) == 0,
           "the same line parses without a limit");
    protocol_request_clear(&req);
}

/* Each builder's output is one line that protocol_reply_parse reads back. */
static void test_builders(void)
{
    protocol_id id;
    protocol_id_set_int(&id, 42);
    protocol_reply reply;
    protocol_error error;

    JsonObject *result = json_object_new();
    json_object_set_string_member(result, "value", "coder-draft-4bit");
    json_object_set_int_member(result, "n", 3);
    char *line = protocol_result_line(&id, result);
    size_t len = strlen(line);
    tap_ok(len > 0 && line[len - 1] == '\n' && memchr(line, '\n', len - 1) == NULL,
           "result line ends with its only newline: %.*s", (int)strlen(line) - 1, line);
    tap_ok(protocol_reply_parse(line, len - 1, &reply, &error) == 0 &&
               reply.kind == PROTOCOL_REPLY_RESULT && protocol_id_equal(&reply.id, &id) &&
               strcmp(json_object_get_string_member(reply.result, "value"),
                      "coder-draft-4bit") == 0,
           "result line reads back with its id and value");
    protocol_reply_clear(&reply);
    free(line);

    static const char token[] = "line 1\n\t\"quoted\" \\ \x01 caf\xc3\xa9";
    line = protocol_token_event_line(&id, token, sizeof token - 1);
    len = strlen(line);
    tap_ok(memchr(line, '\n', len - 1) == NULL, "token with a newline stays on one line: %.*s",
           (int)strlen(line) - 1, line);
    tap_ok(protocol_reply_parse(line, len - 1, &reply, &error) == 0 &&
               reply.kind == PROTOCOL_REPLY_EVENT && strcmp(reply.event, "token") == 0 &&
               strcmp(json_object_get_string_member(reply.object, "text"), token) == 0,
           "token text round-trips exactly (escapes, control bytes, UTF-8)");
    protocol_reply_clear(&reply);
    free(line);

    line = protocol_token_event_line(&id, "ab\xe2\x82", 4);   /* a cut UTF-8 sequence */
    tap_ok(protocol_reply_parse(line, strlen(line) - 1, &reply, &error) == 0 &&
               strncmp(json_object_get_string_member(reply.object, "text"), "ab", 2) == 0 &&
               strstr(json_object_get_string_member(reply.object, "text"), "\xef\xbf\xbd"),
           "invalid UTF-8 in a token becomes U+FFFD, the line stays JSON: %.*s", (int)strlen(line) - 1, line);
    protocol_reply_clear(&reply);
    free(line);

    JsonObject *fields = json_object_new();
    json_object_set_string_member(fields, "message", "loading coder-target-4bit");
    json_object_set_string_member(fields, "event", "must not override");
    protocol_id sid;
    protocol_id_set_string(&sid, "r1");
    line = protocol_event_line(&sid, "progress", fields);
    tap_ok(protocol_reply_parse(line, strlen(line) - 1, &reply, &error) == 0 &&
               reply.kind == PROTOCOL_REPLY_EVENT && strcmp(reply.event, "progress") == 0 &&
               strcmp(reply.id.string, "r1") == 0 &&
               json_object_has_member(reply.object, "message"),
           "progress event: %.*s", (int)strlen(line) - 1, line);
    protocol_reply_clear(&reply);
    free(line);
    json_object_unref(fields);

    line = protocol_done_event_line(&id, result);
    tap_ok(protocol_reply_parse(line, strlen(line) - 1, &reply, &error) == 0 &&
               reply.kind == PROTOCOL_REPLY_DONE && reply.result &&
               json_object_get_int_member(reply.result, "n") == 3,
           "done event carries the result: %.*s", (int)strlen(line) - 1, line);
    protocol_reply_clear(&reply);
    free(line);
    json_object_unref(result);

    line = protocol_error_line(&id, PROTOCOL_ERROR_FORBIDDEN,
                               "config.set needs root or group %s", "alm-admin");
    tap_ok(protocol_reply_parse(line, strlen(line) - 1, &reply, &error) == 0 &&
               reply.kind == PROTOCOL_REPLY_ERROR && reply.error_code == PROTOCOL_ERROR_FORBIDDEN &&
               strcmp(reply.error_message, "config.set needs root or group alm-admin") == 0,
           "error line: %.*s", (int)strlen(line) - 1, line);
    protocol_reply_clear(&reply);
    free(line);

    protocol_request req;
    tap_ok(parse("{\"method\":\"x\"}", &req, &error) < 0, "refused request");
    line = protocol_error_line_for(&error);
    tap_ok(strncmp(line, "{\"id\":null,\"error\":{\"code\":\"bad_request\"", 39) == 0,
           "error for an unreadable id has id null: %.*s", (int)strlen(line) - 1, line);
    free(line);

    /* A client's request goes through the daemon's parser. */
    JsonObject *params = json_object_new();
    json_object_set_string_member(params, "prompt", "import os");
    json_object_set_int_member(params, "max_tokens", 8);
    line = protocol_request_line(&sid, "generate", params);
    json_object_unref(params);
    tap_ok(protocol_request_parse(line, strlen(line) - 1, MAX_BYTES, &req, &error) == 0 &&
               req.method->id == PROTOCOL_METHOD_GENERATE && protocol_id_equal(&req.id, &sid) &&
               strstr(line, "\"version\":1"),
           "request line parses back, with version: %.*s", (int)strlen(line) - 1, line);
    protocol_request_clear(&req);
    free(line);

    static const char *const bad_replies[] = {
        "{\"id\":1}", "{\"result\":{}}", "{\"id\":1,\"result\":3}", "{\"id\":1,\"event\":5}",
        "{\"id\":1,\"event\":\"done\"}", "{\"id\":1,\"error\":\"x\"}",
        "{\"id\":1,\"error\":{\"code\":\"busy\"}}", "[]", "{", "",
    };
    int refused = 0;
    for (size_t i = 0; i < sizeof bad_replies / sizeof bad_replies[0]; i++) {
        int r = protocol_reply_parse(bad_replies[i], strlen(bad_replies[i]), &reply, &error);
        refused += r < 0 && reply.object == NULL && error.message[0];
        protocol_reply_clear(&reply);
    }
    tap_ok(refused == (int)(sizeof bad_replies / sizeof bad_replies[0]),
           "malformed replies refused with a message (%d)", refused);
}

static void test_line_reader(void)
{
    protocol_line_reader r;
    protocol_line_reader_init(&r, 16);
    char *line;
    size_t len;
    tap_ok(protocol_line_reader_next(&r, &line, &len) == 0, "empty reader has no line");
    protocol_line_reader_feed(&r, "ab", 2);
    tap_ok(protocol_line_reader_next(&r, &line, &len) == 0, "partial line waits");
    protocol_line_reader_feed(&r, "c\r\n\n\nde", 7);
    tap_ok(protocol_line_reader_next(&r, &line, &len) == 1 && len == 3 &&
               strcmp(line, "abc") == 0,
           "line split across feeds, CR dropped");
    tap_ok(protocol_line_reader_next(&r, &line, &len) == 0 &&
               protocol_line_reader_pending(&r) == 2,
           "empty lines skipped, tail pending");
    protocol_line_reader_feed(&r, "f\n0123456789abcdef\n", 19);
    int a = protocol_line_reader_next(&r, &line, &len);
    bool def = a == 1 && strcmp(line, "def") == 0;
    int b = protocol_line_reader_next(&r, &line, &len);
    tap_ok(def && b == 1 && len == 16, "line of exactly max_line bytes accepted");
    protocol_line_reader_feed(&r, "0123456789abcdefg\nok\n", 21);
    tap_ok(protocol_line_reader_next(&r, &line, &len) == -EMSGSIZE,
           "line of max_line + 1 bytes: -EMSGSIZE");
    tap_ok(protocol_line_reader_next(&r, &line, &len) == -EMSGSIZE,
           "the reader stays refused (the caller closes)");
    protocol_line_reader_clear(&r);

    /* An endless line without a newline is refused once it passes the limit,
     * before it is complete, and the buffer stays bounded. */
    protocol_line_reader_init(&r, 1000);
    int got = 0;
    size_t fed = 0;
    char chunk[100];
    memset(chunk, 'x', sizeof chunk);
    while (fed < 100000 && (got = protocol_line_reader_next(&r, &line, &len)) == 0) {
        protocol_line_reader_feed(&r, chunk, sizeof chunk);
        fed += sizeof chunk;
    }
    tap_ok(got == -EMSGSIZE && fed <= 1100, "unterminated line refused after %zu bytes", fed);
    protocol_line_reader_clear(&r);

    /* Through a real socket, with the bounded read. */
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0) {
        tap_ok(0, "socketpair: %s", strerror(errno));
        return;
    }
    const char *msgs = "{\"id\":1,\"method\":\"status\"}\n{\"id\":2,\"method\":\"stats\"}\n";
    tap_ok(write(sv[0], msgs, strlen(msgs)) == (ssize_t)strlen(msgs), "wrote two requests");
    close(sv[0]);
    protocol_line_reader_init(&r, MAX_BYTES);
    int lines = 0, parsed = 0;
    ssize_t n;
    while ((n = protocol_line_reader_read_fd(&r, sv[1])) > 0) {
        while (protocol_line_reader_next(&r, &line, &len) == 1) {
            protocol_request req;
            protocol_error error;
            lines++;
            if (protocol_request_parse(line, len, MAX_BYTES, &req, &error) == 0 &&
                req.id.number == lines)
                parsed++;
            protocol_request_clear(&req);
        }
    }
    tap_ok(n == 0 && lines == 2 && parsed == 2, "two requests read from a socket, then EOF");
    protocol_line_reader_clear(&r);
    close(sv[1]);
}

static uint64_t rng_state = 0x853c49e6748fea9bull;
static uint32_t rng(void)
{
    rng_state = rng_state * 6364136223846793005ull + 1442695040888963407ull;
    return (uint32_t)(rng_state >> 33);
}

/* Random and mutated lines: each gives a request or an error with a known
 * code and a message, never a crash (the sanitized build checks memory). */
static void test_fuzz(void)
{
    static const char *const seeds[] = {
        "{\"version\":1,\"id\":7,\"method\":\"generate\",\"params\":{\"prompt\":\"def f(x):\","
        "\"max_tokens\":16,\"temperature\":0.7,\"draft\":true}}",
        "{\"id\":\"a\",\"method\":\"config.set\",\"params\":{\"key\":\"num_draft_tokens\","
        "\"value\":3}}",
        "{\"id\":2,\"method\":\"config.get\",\"params\":{\"key\":\"model\"}}",
        "{\"id\":3,\"method\":\"restart\"}",
    };
    const char alphabet[] = "{}[]\":,\\0123456789.eE-+ truefalsnul\xc3\xa9\xff";
    int requests = 0, errors = 0, bad = 0;
    char buf[512];
    for (int iter = 0; iter < 20000; iter++) {
        size_t len;
        if (iter % 10 == 0) {
            len = rng() % 64;
            for (size_t i = 0; i < len; i++)
                buf[i] = rng() & 1 ? alphabet[rng() % (sizeof alphabet - 1)] : (char)rng();
        } else {
            const char *seed = seeds[rng() % 4];
            len = strlen(seed);
            memcpy(buf, seed, len);
            int edits = 1 + (int)(rng() % 3);
            for (int e = 0; e < edits && len > 1; e++) {
                size_t pos = rng() % len;
                char ch = rng() & 1 ? alphabet[rng() % (sizeof alphabet - 1)] : (char)rng();
                switch (rng() % 3) {
                case 0: buf[pos] = ch; break;
                case 1:
                    if (len + 1 < sizeof buf) {
                        memmove(buf + pos + 1, buf + pos, len - pos);
                        buf[pos] = ch;
                        len++;
                    }
                    break;
                default:
                    memmove(buf + pos, buf + pos + 1, len - pos - 1);
                    len--;
                }
            }
        }
        protocol_request req;
        protocol_error error;
        int r = protocol_request_parse(buf, len, 200, &req, &error);
        if (r == 0) {
            requests++;
            bad += req.method == NULL || req.params == NULL;
            char *out = protocol_result_line(&req.id, req.params);
            bad += out == NULL;
            free(out);
        } else {
            errors++;
            bad += (unsigned)error.code >= PROTOCOL_ERROR_COUNT_ || error.message[0] == '\0' ||
                   req.params != NULL;
            char *out = protocol_error_line_for(&error);
            protocol_reply reply = { 0 };
            protocol_error again;
            bad += out == NULL ||
                   protocol_reply_parse(out, strlen(out) - 1, &reply, &again) != 0 ||
                   reply.error_code != error.code;
            protocol_reply_clear(&reply);
            free(out);
        }
        protocol_request_clear(&req);
        /* The reply parser must survive the same bytes. */
        protocol_reply reply;
        protocol_reply_parse(buf, len, &reply, &error);
        protocol_reply_clear(&reply);
    }
    tap_diag("fuzz: %d requests, %d errors", requests, errors);
    tap_ok(bad == 0 && requests > 0 && errors > 0,
           "20000 random/mutated lines: each a valid request or a well-formed error reply");

    /* The line reader under random chunking gives the same lines. */
    protocol_line_reader r;
    protocol_line_reader_init(&r, 64);
    char stream[4096];
    size_t n = 0;
    int expected_lines = 0;
    while (n < sizeof stream - 80) {
        size_t l = 1 + rng() % 60;
        for (size_t i = 0; i < l; i++)
            stream[n++] = (char)('a' + rng() % 26);
        stream[n++] = '\n';
        expected_lines++;
    }
    int seen = 0;
    size_t pos = 0;
    bool ok = true;
    while (pos < n) {
        size_t step = 1 + rng() % 100;
        if (step > n - pos)
            step = n - pos;
        protocol_line_reader_feed(&r, stream + pos, step);
        pos += step;
        char *line;
        size_t len;
        int got;
        while ((got = protocol_line_reader_next(&r, &line, &len)) == 1)
            seen++, ok = ok && strlen(line) == len && len >= 1 && len <= 60;
        ok = ok && got == 0;
    }
    tap_ok(ok && seen == expected_lines, "random chunking: %d of %d lines intact", seen,
           expected_lines);
    protocol_line_reader_clear(&r);
}

int main(void)
{
    test_table();
    test_valid_requests();
    test_refused();
    test_builders();
    test_line_reader();
    test_fuzz();
    return tap_done();
}
