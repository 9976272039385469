/* alm-engine: the engine from the command line. JSON on stdout, errors on
 * stderr with a non-zero exit status. */
#include <stdio.h>
#include <string.h>

#include "tools/tool.h"

static const struct command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} commands[] = {
    { "tokenize", cmd_tokenize, "--model DIR (--text STR | --file PATH) [--add-special]" },
    { "detokenize", cmd_detokenize, "--model DIR --ids 1,2,3 [--skip-special]" },
    { "logits", cmd_logits, "--model DIR --ids 1,2,3 [--positions 0,5] [--threads N] [--device cpu|cuda]" },
    { "generate", cmd_generate,
      "--model DIR (--prompt STR | --prompt-ids 1,2,3) --max-tokens N [--temperature T] [--top-k K]\n"
      "                  [--top-p P] [--min-p M] [--seed S] [--stop STR]... [--ignore-eos] [--threads N]" },
    { "bench", cmd_bench, "(--model DIR | --random PRESET) [--prompt-tokens 512] [--gen-tokens 128] [--threads N]\n"
      "                  [--repeat R] [--draft-random PRESET] [--synthetic-acceptance A] [--bandwidth-gbs X]" },
    { "convert", cmd_convert, "--q-bits 2|4|8 [--q-group-size 64] SRC DST" },
};

static void usage(FILE *f)
{
    fprintf(f, "usage: alm-engine COMMAND [OPTIONS]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        fprintf(f, "  %-10s %s\n", commands[i].name, commands[i].summary);
    fprintf(f, "\nOutput is one JSON object on stdout. See alm-engine(1).\n");
}

int main(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return 0;
    }
    for (size_t i = 0; i < sizeof commands / sizeof commands[0]; i++)
        if (strcmp(argv[1], commands[i].name) == 0)
            return commands[i].run(argc - 1, argv + 1);
    tool_fail("unknown command \"%s\" (try alm-engine --help)", argv[1]);
    return 2;
}
