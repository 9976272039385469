/* alm: the command-line client of almd. Global options, then a command
 * from the table below; each command lives in its own file. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli.h"
#include "output.h"
#include "protocol.h"
#include "socket_path.h"

static const cli_command commands[] = {
    { "config", cli_config_run,
      "config set KEY VALUE | get KEY | list [--json] | unset KEY",
      "read and change almd's settings",
      "  set KEY VALUE  validate and store a setting (config.set; root or admin_group)\n"
      "  get KEY        print a setting's value\n"
      "  list [--json]  every setting: key, value, and * where it is the default\n"
      "  unset KEY      return a setting to its default\n"
      "Settings that need a reload (models, device, threads, context_length) take\n"
      "effect after `alm restart`; the sampling defaults at once.\n" },
    { "restart", cli_restart_run, "restart",
      "reload the models with the stored settings",
      "Loads the configured models first and switches to them once loaded; if\n"
      "loading fails, the old models keep serving and alm exits non-zero with the\n"
      "reason. Shows progress on a terminal and returns when almd is ready.\n" },
    { "generate", cli_generate_run, "generate [OPTIONS] [PROMPT | -]",
      "generate text, streamed to stdout as it is produced",
      "The prompt is the arguments joined by spaces; `-`, or no prompt when\n"
      "standard input is not a terminal, reads it from standard input.\n"
      "Options (absent ones take almd's settings, see `alm config list`):\n"
      "  -n, --max-tokens N     most tokens to generate\n"
      "  -t, --temperature T    0 is greedy\n"
      "      --top-p P          nucleus sampling mass (1 = off)\n"
      "      --top-k K          keep the K most likely tokens (0 = off)\n"
      "      --min-p P          drop tokens below P times the top one (0 = off)\n"
      "  -s, --seed S           same seed, same output\n"
      "      --no-draft         do not speculate with the draft model\n"
      "      --ignore-eos       keep going past end-of-sequence tokens\n"
      "  -c, --chat             wrap the prompt in the model's chat template\n"
      "      --json             print one JSON object at the end: ids, text, stats\n"
      "      --stats            print a summary line to stderr after the text\n"
      "Ctrl-C cancels the request (exit status 130).\n" },
    { "stats", cli_stats_run, "stats [--json]",
      "request, token, speed and speculation counters",
      "  --json   print almd's figures as one JSON object\n" },
    { "status", cli_status_run, "status",
      "whether almd is up, what is loaded and since when",
      "Exits non-zero when almd cannot be reached.\n" },
};

#define N_COMMANDS (sizeof commands / sizeof commands[0])

const cli_command *cli_command_find(const char *name)
{
    for (size_t i = 0; i < N_COMMANDS; i++)
        if (strcmp(commands[i].name, name) == 0)
            return &commands[i];
    return NULL;
}

void cli_print_command_help(const cli_command *cmd)
{
    printf("Usage: alm [--socket PATH] %s\n\n%s.\n\n%s", cmd->usage, cmd->summary, cmd->help);
}

bool cli_wants_help(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0)
            return false;
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0)
            return true;
    }
    return false;
}

static void print_help(void)
{
    printf("Usage: alm [--socket PATH] COMMAND [ARGS]\n\n"
           "The client of almd, the daemon that keeps language models resident.\n\n"
           "Commands:\n");
    for (size_t i = 0; i < N_COMMANDS; i++)
        printf("  %-10s %s\n", commands[i].name, commands[i].summary);
    printf("\nOptions:\n"
           "  -S, --socket PATH  almd's socket (default: $ALM_SOCKET, else\n"
           "                     $XDG_RUNTIME_DIR/alm/almd.sock when it exists,\n"
           "                     else %s)\n"
           "  -h, --help         this help; `alm COMMAND --help` for a command's\n"
           "  -V, --version      alm's version and protocol version\n\n"
           "See alm(1).\n", CLI_SYSTEM_SOCKET);
}

int main(int argc, char **argv)
{
    static const struct option options[] = {
        { "socket", required_argument, NULL, 'S' },
        { "help", no_argument, NULL, 'h' },
        { "version", no_argument, NULL, 'V' },
        { 0 },
    };
    const char *socket_option = NULL;
    int c;
    /* "+": stop at the command; its own options are its business. */
    while ((c = getopt_long(argc, argv, "+S:hV", options, NULL)) != -1) {
        switch (c) {
        case 'S':
            socket_option = optarg;
            break;
        case 'h':
            print_help();
            return CLI_EXIT_OK;
        case 'V':
            printf("alm %s (protocol %d)\n", ALM_VERSION, PROTOCOL_VERSION);
            return CLI_EXIT_OK;
        default:
            fprintf(stderr, "Try `alm --help`.\n");
            return CLI_EXIT_USAGE;
        }
    }
    if (optind >= argc) {
        cli_error("no command given (commands: config, restart, generate, stats, status; "
                  "see alm --help)");
        return CLI_EXIT_USAGE;
    }
    const cli_command *cmd = cli_command_find(argv[optind]);
    if (!cmd) {
        cli_error("unknown command \"%s\" (commands: config, restart, generate, stats, "
                  "status; see alm --help)", argv[optind]);
        return CLI_EXIT_USAGE;
    }
    int cmd_argc = argc - optind;
    char **cmd_argv = argv + optind;
    if (cli_wants_help(cmd_argc, cmd_argv)) {
        cli_print_command_help(cmd);
        return CLI_EXIT_OK;
    }
    char *path = cli_socket_path(socket_option);
    if (!path) {
        cli_error("out of memory");
        return CLI_EXIT_FAILURE;
    }
    cli_context ctx = { .socket_path = path };
    /* getopt in the commands starts over on their own argv. */
    optind = 0;
    int status = cmd->run(&ctx, cmd_argc, cmd_argv);
    free(path);
    return status;
}
