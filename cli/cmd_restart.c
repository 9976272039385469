/* alm restart: almd loads the models with the stored settings and switches
 * to them; the old ones serve until then, and keep serving if it fails. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "cli.h"
#include "connection.h"
#include "interrupt.h"
#include "output.h"

static void print_progress(JsonObject *event)
{
    JsonNode *message = json_object_get_member(event, "message");
    char *text = message ? cli_json_text(message) : NULL;
    if (text)
        fprintf(stderr, "%s\n", text);
    free(text);
}

/* "almd is ready: coder-target-4bit with draft coder-draft-4bit" when the
 * result says what is loaded. */
static void print_ready(JsonObject *result)
{
    char *model = NULL, *draft = NULL;
    if (result && json_object_has_member(result, "model"))
        model = cli_json_text(json_object_get_member(result, "model"));
    if (result && json_object_has_member(result, "draft_model"))
        draft = cli_json_text(json_object_get_member(result, "draft_model"));
    if (model && model[0] && draft && draft[0])
        printf("almd is ready: %s with draft %s\n", model, draft);
    else if (model && model[0])
        printf("almd is ready: %s\n", model);
    else
        printf("almd is ready\n");
    free(model);
    free(draft);
}

/* Whether almd is loading models (its start, or another client's
 * restart): 1, 0, or a negative errno after a message. */
static int almd_loading(const cli_context *ctx)
{
    cli_connection c;
    int r = cli_connect(&c, ctx->socket_path);
    if (r < 0)
        return r;
    protocol_reply reply;
    r = cli_call(&c, "status", NULL, &reply);
    cli_disconnect(&c);
    if (r < 0)
        return r;
    JsonNode *n = json_object_get_member(reply.result, "loading");
    r = n && JSON_NODE_HOLDS_VALUE(n) && json_node_get_value_type(n) == G_TYPE_BOOLEAN &&
        json_node_get_boolean(n);
    protocol_reply_clear(&reply);
    return r;
}

/* One restart request. *busy: almd refused it as busy (the error is then
 * not printed: the caller decides whether to wait and try again). */
static int restart_once(const cli_context *ctx, bool show_progress, bool *busy)
{
    *busy = false;
    cli_connection c;
    if (cli_connect(&c, ctx->socket_path) < 0)
        return CLI_EXIT_FAILURE;
    c.signal_fd = cli_interrupt_fd_open();
    int status = CLI_EXIT_FAILURE;
    if (cli_send(&c, "restart", NULL) == 0) {
        for (;;) {
            protocol_reply reply;
            int r = cli_next_reply(&c, &reply);
            if (r == -EINTR) {
                cli_error("interrupted while almd was restarting");
                status = CLI_EXIT_INTERRUPTED;
                break;
            }
            if (r < 0)
                break;
            bool last = reply.kind != PROTOCOL_REPLY_EVENT;
            if (reply.kind == PROTOCOL_REPLY_EVENT && show_progress) {
                print_progress(reply.object);
            } else if (reply.kind == PROTOCOL_REPLY_ERROR) {
                if (reply.error_code == PROTOCOL_ERROR_BUSY)
                    *busy = true;
                else
                    cli_error("restart failed: %s",
                              reply.error_message ? reply.error_message : "");
            } else if (reply.kind == PROTOCOL_REPLY_DONE || reply.kind == PROTOCOL_REPLY_RESULT) {
                print_ready(reply.result);
                status = CLI_EXIT_OK;
            }
            protocol_reply_clear(&reply);
            if (last)
                break;
        }
    }
    cli_interrupt_fd_close(c.signal_fd);
    cli_disconnect(&c);
    return status;
}

int cli_restart_run(const cli_context *ctx, int argc, char **argv)
{
    if (argc != 1) {
        cli_error("restart takes no arguments");
        return CLI_EXIT_USAGE;
    }
    (void)argv;
    /* Progress is for people watching; scripts get the result or the error. */
    bool show_progress = isatty(STDERR_FILENO);
    /* almd refuses a restart while it is loading (at its start, say, right
     * after `almd &`). That load may predate the settings just stored, so
     * alm waits for it to finish and asks again, rather than failing. */
    for (int attempt = 0;; attempt++) {
        bool busy;
        int status = restart_once(ctx, show_progress, &busy);
        if (!busy)
            return status;
        int loading = attempt < 100 ? almd_loading(ctx) : 0;
        if (loading < 0)
            return CLI_EXIT_FAILURE;
        if (!loading) {
            cli_error("restart failed: almd is busy with another restart");
            return CLI_EXIT_FAILURE;
        }
        if (show_progress && attempt == 0)
            fprintf(stderr, "waiting for the models almd is loading now\n");
        while ((loading = almd_loading(ctx)) == 1)
            nanosleep(&(struct timespec){ .tv_nsec = 200 * 1000 * 1000 }, NULL);
        if (loading < 0)
            return CLI_EXIT_FAILURE;
    }
}
