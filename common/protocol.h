/* The almd protocol (docs/PROTOCOL.md): newline-delimited JSON over a stream
 * socket. A client sends requests
 *     {"version": 1, "id": 7, "method": "generate", "params": {...}}
 * and gets back, each on its own line and carrying the same id, either one
 * {"id": 7, "result": {...}}, or streamed {"id": 7, "event": "token", ...}
 * lines ended by {"id": 7, "event": "done", "result": {...}}, or one
 * {"id": 7, "error": {"code": "...", "message": "..."}}.
 *
 * One table describes the methods (protocol_methods): the daemon dispatches,
 * checks access and prints --help from it; the parser validates params
 * against it before any handler runs. */
#ifndef ALM_COMMON_PROTOCOL_H
#define ALM_COMMON_PROTOCOL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <json-glib/json-glib.h>

#define PROTOCOL_VERSION 1
/* Longest string id; longer ones are refused (ids are for matching, not
 * for carrying data). */
#define PROTOCOL_MAX_ID_BYTES 128
/* Deepest nesting of arrays and objects accepted in a request: the JSON
 * parser recurses, so a line of a million '[' must not reach it. */
#define PROTOCOL_MAX_DEPTH 32

typedef enum protocol_error_code {
    PROTOCOL_ERROR_BAD_REQUEST,         /* malformed JSON or request shape */
    PROTOCOL_ERROR_UNSUPPORTED_VERSION, /* "version" other than PROTOCOL_VERSION */
    PROTOCOL_ERROR_UNKNOWN_METHOD,
    PROTOCOL_ERROR_TOO_LARGE,           /* line over max_request_bytes, prompt too long */
    PROTOCOL_ERROR_FORBIDDEN,           /* peer not allowed this method */
    PROTOCOL_ERROR_NOT_FOUND,           /* unknown setting key, model, ... */
    PROTOCOL_ERROR_INVALID_VALUE,       /* a param or setting value out of range */
    PROTOCOL_ERROR_BUSY,                /* too many clients or queued requests */
    PROTOCOL_ERROR_CANCELLED,           /* the request was cancelled (shutdown) */
    PROTOCOL_ERROR_INTERNAL,
    PROTOCOL_ERROR_COUNT_,
} protocol_error_code;

/* "bad_request", "unknown_method", ... (the wire names). */
const char *protocol_error_code_name(protocol_error_code code);
/* Returns 0 and sets *code, or -EINVAL for a name not in the list. */
int protocol_error_code_from_name(const char *name, protocol_error_code *code);

/* A request id as the client sent it: echoed back unchanged. */
typedef enum protocol_id_kind {
    PROTOCOL_ID_NONE,   /* not known (the request could not be read) */
    PROTOCOL_ID_INT,
    PROTOCOL_ID_STRING,
} protocol_id_kind;

typedef struct protocol_id {
    protocol_id_kind kind;
    int64_t number;
    char string[PROTOCOL_MAX_ID_BYTES + 1];
} protocol_id;

void protocol_id_set_int(protocol_id *id, int64_t number);
/* Returns -EINVAL when s is longer than PROTOCOL_MAX_ID_BYTES. */
int protocol_id_set_string(protocol_id *id, const char *s);
bool protocol_id_equal(const protocol_id *a, const protocol_id *b);

/* ------------------------------------------------------------ methods */

typedef enum protocol_method_id {
    PROTOCOL_METHOD_STATUS,
    PROTOCOL_METHOD_STATS,
    PROTOCOL_METHOD_GENERATE,
    PROTOCOL_METHOD_CONFIG_GET,
    PROTOCOL_METHOD_CONFIG_LIST,
    PROTOCOL_METHOD_CONFIG_SET,
    PROTOCOL_METHOD_CONFIG_UNSET,
    PROTOCOL_METHOD_RESTART,
    PROTOCOL_METHOD_COUNT_,
} protocol_method_id;

typedef enum protocol_param_type {
    PROTOCOL_PARAM_STRING,
    PROTOCOL_PARAM_INT,      /* a JSON integer (no fraction, fits int64) */
    PROTOCOL_PARAM_NUMBER,   /* any JSON number */
    PROTOCOL_PARAM_BOOL,
    PROTOCOL_PARAM_SCALAR,   /* string, number or bool: a setting's value */
} protocol_param_type;

typedef struct protocol_param {
    const char *name;
    protocol_param_type type;
    bool required;
    /* For INT and NUMBER: the inclusive range, checked when has_range. */
    bool has_range;
    double min, max;
    const char *help;
} protocol_param;

typedef struct protocol_method {
    protocol_method_id id;
    const char *name;          /* on the wire: "config.set" */
    bool needs_admin;          /* root or a member of admin_group only */
    bool streams;              /* replies with events, then "done" */
    const protocol_param *params;
    size_t n_params;
    const char *summary;       /* one line for --help */
} protocol_method;

/* The table, in a stable order (that of protocol_method_id). */
const protocol_method *protocol_methods(size_t *n);
const protocol_method *protocol_method_find(const char *name);
const protocol_method *protocol_method_get(protocol_method_id id);
const char *protocol_param_type_name(protocol_param_type type);

/* ------------------------------------------------------------ requests */

typedef struct protocol_request {
    protocol_id id;
    const protocol_method *method;
    JsonObject *params;        /* owned reference; an empty object when absent */
} protocol_request;

/* Why a line was refused: the code and message for the error reply, and the
 * id when it could be read (so that the reply can carry it). */
typedef struct protocol_error {
    protocol_error_code code;
    protocol_id id;
    char message[256];
} protocol_error;

/* Parses and validates one line (without its newline; need not be
 * NUL-terminated). max_bytes: max_request_bytes (0: no limit). Returns 0
 * with *req filled (protocol_request_clear it), or a negative errno with
 * *error filled and *req empty. Params are checked against the method's
 * table: unknown names, missing required ones, wrong types and values out of
 * range are all refused here. */
int protocol_request_parse(const char *line, size_t len, size_t max_bytes,
                           protocol_request *req, protocol_error *error);
void protocol_request_clear(protocol_request *req);

/* Typed access to validated params. They return false when the param is
 * absent (the parser has already checked the type of those present). The
 * string is borrowed from req. */
bool protocol_param_string(const protocol_request *req, const char *name, const char **out);
bool protocol_param_int(const protocol_request *req, const char *name, int64_t *out);
bool protocol_param_number(const protocol_request *req, const char *name, double *out);
bool protocol_param_bool(const protocol_request *req, const char *name, bool *out);
/* A SCALAR param as text, as `alm config set` would have typed it: strings
 * as they are, numbers in shortest round-trip form, true/false. malloc'ed. */
char *protocol_param_scalar_text(const protocol_request *req, const char *name);

/* ------------------------------------------------------------ builders */
/* Each returns one malloc'ed, newline-terminated line (free()), or NULL when
 * out of memory. Objects passed in are borrowed (not consumed). Text that is
 * not valid UTF-8 has the bad bytes replaced with U+FFFD, so the line is
 * always valid JSON. */

/* A client's request; params may be NULL. Carries "version". */
char *protocol_request_line(const protocol_id *id, const char *method, JsonObject *params);
char *protocol_result_line(const protocol_id *id, JsonObject *result);
/* {"id", "event": "token", "text"}: text need not be NUL-terminated. */
char *protocol_token_event_line(const protocol_id *id, const char *text, size_t len);
/* {"id", "event": name, ...fields}: progress and other events; fields may be
 * NULL and must not hold "id" or "event". */
char *protocol_event_line(const protocol_id *id, const char *event, JsonObject *fields);
/* {"id", "event": "done", "result"}: the last line of a stream. */
char *protocol_done_event_line(const protocol_id *id, JsonObject *result);
char *protocol_error_line(const protocol_id *id, protocol_error_code code,
                          const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* The error reply for a refused request: its id (if known), code, message. */
char *protocol_error_line_for(const protocol_error *error);

/* ------------------------------------------------------------ replies */

typedef enum protocol_reply_kind {
    PROTOCOL_REPLY_RESULT,
    PROTOCOL_REPLY_EVENT,      /* a streamed event other than done */
    PROTOCOL_REPLY_DONE,       /* event "done": result holds the final result */
    PROTOCOL_REPLY_ERROR,
} protocol_reply_kind;

typedef struct protocol_reply {
    protocol_reply_kind kind;
    protocol_id id;
    char event[32];            /* EVENT and DONE: the event's name */
    JsonObject *object;        /* owned: the whole reply */
    JsonObject *result;        /* borrowed from object: RESULT and DONE */
    protocol_error_code error_code;    /* ERROR: unknown names map to internal */
    const char *error_message;         /* ERROR: borrowed from object */
} protocol_reply;

/* The client's side: parses one line from the daemon. Returns 0 or a
 * negative errno with a message in error (code bad_request). */
int protocol_reply_parse(const char *line, size_t len, protocol_reply *reply,
                         protocol_error *error);
void protocol_reply_clear(protocol_reply *reply);

/* ------------------------------------------------------------ line reader */

/* Gathers bytes from a stream socket into lines of at most max_line bytes
 * (not counting the newline). A trailing '\r' is dropped and empty lines are
 * skipped, so that `socat` and `nc -C` sessions work. */
typedef struct protocol_line_reader {
    char *buf;
    size_t start;      /* first byte not yet returned */
    size_t len;        /* bytes in buf */
    size_t cap;
    size_t scanned;    /* bytes after start known to hold no newline */
    size_t max_line;
    bool too_large;    /* sticky: the connection must be closed */
} protocol_line_reader;

void protocol_line_reader_init(protocol_line_reader *r, size_t max_line);
void protocol_line_reader_clear(protocol_line_reader *r);

/* Appends bytes. Returns 0, or -ENOMEM. */
int protocol_line_reader_feed(protocol_line_reader *r, const void *data, size_t n);

/* One read() from fd into the buffer: returns the number of bytes read
 * (0 at end of file), -EAGAIN when a non-blocking fd has nothing, or
 * another negative errno. Reads at most max_line + 1 bytes beyond what is
 * buffered, so memory stays bounded by about twice max_line. */
ssize_t protocol_line_reader_read_fd(protocol_line_reader *r, int fd);

/* Takes the next complete line: returns 1 with *line (NUL-terminated,
 * valid until the next call on r) and *len, 0 when no complete line is
 * buffered yet, or -EMSGSIZE when a line is longer than max_line: answer
 * too_large and close the connection (the reader stays in that state). */
int protocol_line_reader_next(protocol_line_reader *r, char **line, size_t *len);

/* Bytes buffered after the last complete line (an unterminated tail: at
 * end of file the caller may treat it as a truncated request). */
size_t protocol_line_reader_pending(const protocol_line_reader *r);

#endif
