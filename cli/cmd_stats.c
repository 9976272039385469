/* alm stats [--json] and alm status: almd's figures and state. */
#include <stdio.h>
#include <string.h>

#include "cli.h"
#include "connection.h"
#include "output.h"

/* Calls a method without params and prints its result as a table (or
 * JSON). heading: a first line for the table, or NULL. */
static int show(const cli_context *ctx, const char *method, bool json, const char *heading)
{
    cli_connection c;
    if (cli_connect(&c, ctx->socket_path) < 0)
        return CLI_EXIT_FAILURE;
    protocol_reply reply;
    int r = cli_call(&c, method, NULL, &reply);
    cli_disconnect(&c);
    if (r < 0)
        return CLI_EXIT_FAILURE;
    int status = CLI_EXIT_OK;
    if (json) {
        cli_print_json(stdout, reply.result, true);
    } else {
        if (heading)
            printf("%s\n", heading);
        cli_table t = { 0 };
        cli_table_add_object(&t, NULL, reply.result);
        if (!cli_table_flush(&t, stdout))
            status = CLI_EXIT_FAILURE;
    }
    protocol_reply_clear(&reply);
    return status;
}

static int parse_json_flag(int argc, char **argv, const char *command, bool *json)
{
    *json = false;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0) {
            *json = true;
        } else {
            cli_error("%s: unknown argument \"%s\" (usage: alm %s [--json])", command,
                      argv[i], command);
            return -1;
        }
    }
    return 0;
}

int cli_stats_run(const cli_context *ctx, int argc, char **argv)
{
    bool json;
    if (parse_json_flag(argc, argv, "stats", &json) < 0)
        return CLI_EXIT_USAGE;
    return show(ctx, "stats", json, NULL);
}

int cli_status_run(const cli_context *ctx, int argc, char **argv)
{
    bool json;
    if (parse_json_flag(argc, argv, "status", &json) < 0)
        return CLI_EXIT_USAGE;
    char heading[4200];
    snprintf(heading, sizeof heading, "almd is up (%s)", ctx->socket_path);
    return show(ctx, "status", json, heading);
}
