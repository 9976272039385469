/* alm restart: almd loads the models with the stored settings and switches
 * to them; the old ones serve until then, and keep serving if it fails. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
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

int cli_restart_run(const cli_context *ctx, int argc, char **argv)
{
    if (argc != 1) {
        cli_error("restart takes no arguments");
        return CLI_EXIT_USAGE;
    }
    (void)argv;
    cli_connection c;
    if (cli_connect(&c, ctx->socket_path) < 0)
        return CLI_EXIT_FAILURE;
    c.signal_fd = cli_interrupt_fd_open();
    /* Progress is for people watching; scripts get the result or the error. */
    bool show_progress = isatty(STDERR_FILENO);
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
            if (reply.kind == PROTOCOL_REPLY_EVENT && show_progress)
                print_progress(reply.object);
            else if (reply.kind == PROTOCOL_REPLY_ERROR)
                cli_error("restart failed: %s", reply.error_message ? reply.error_message : "");
            else if (reply.kind == PROTOCOL_REPLY_DONE || reply.kind == PROTOCOL_REPLY_RESULT) {
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
