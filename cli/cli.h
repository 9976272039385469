/* alm, the command-line client of almd: what the command files share. */
#ifndef ALM_CLI_H
#define ALM_CLI_H

#include <stdbool.h>

/* Exit statuses (alm(1)): 1 for anything that went wrong (almd not
 * reachable, an error reply), 2 for a command line alm cannot use, 130
 * when Ctrl-C stopped a command, as shells report a SIGINT death. */
enum {
    CLI_EXIT_OK = 0,
    CLI_EXIT_FAILURE = 1,
    CLI_EXIT_USAGE = 2,
    CLI_EXIT_INTERRUPTED = 130,
};

typedef struct cli_context {
    const char *socket_path;   /* --socket, $ALM_SOCKET or the default */
} cli_context;

typedef struct cli_command {
    const char *name;
    /* argv[0] is the command's name; returns an exit status. */
    int (*run)(const cli_context *ctx, int argc, char **argv);
    const char *usage;         /* after "alm ": "config set KEY VALUE" ... */
    const char *summary;       /* one line for alm --help */
    const char *help;          /* the rest of alm COMMAND --help */
} cli_command;

int cli_config_run(const cli_context *ctx, int argc, char **argv);
int cli_restart_run(const cli_context *ctx, int argc, char **argv);
int cli_generate_run(const cli_context *ctx, int argc, char **argv);
int cli_stats_run(const cli_context *ctx, int argc, char **argv);
int cli_status_run(const cli_context *ctx, int argc, char **argv);

/* The table of commands (main.c), for --help. */
const cli_command *cli_command_find(const char *name);
/* Prints `alm COMMAND --help` for cmd to stdout. */
void cli_print_command_help(const cli_command *cmd);
/* Whether argv holds --help or -h before any "--". */
bool cli_wants_help(int argc, char **argv);

#endif
