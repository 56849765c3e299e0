/* SPDX-License-Identifier: MIT */
/* `qed SUBCOMMAND ...`: finds the subcommand and runs it. */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "common.h"

static const struct tool_command *const commands[] = {
    &create_command, &info_command,    &map_command,
    &io_command,     &convert_command, &dd_command,    &bench_command,
    &serve_command,  &mount_command,
    &check_command,
    &compare_command, &commit_command, &rebase_command, &resize_command,
    &compact_command,
};

#define COMMAND_COUNT (sizeof(commands) / sizeof(commands[0]))

static const struct tool_command *find_command(const char *name)
{
    for (size_t i = 0; i < COMMAND_COUNT; i++)
        if (strcmp(commands[i]->name, name) == 0)
            return commands[i];
    return NULL;
}

static void print_main_help(FILE *out)
{
    fprintf(out,
            "usage: qed SUBCOMMAND [OPTIONS] ARGS\n"
            "       qed --help | --version | help [SUBCOMMAND]\n"
            "\n"
            "Work with QED disk images without QEMU.\n"
            "\n"
            "Subcommands:\n");
    for (size_t i = 0; i < COMMAND_COUNT; i++)
        fprintf(out, "  %-10s %s\n", commands[i]->name, commands[i]->summary);
    fprintf(out,
            "\n"
            "Sizes take a byte count or a k, M, G, T, P, E suffix (powers of "
            "1024).\n"
            "Input formats are probed (QED magic -> qed, else raw) unless "
            "-f qed|raw is given.\n"
            "Run 'qed SUBCOMMAND --help' for the options of a subcommand.\n");
}

static int run_help(int argc, char **argv)
{
    const struct tool_command *cmd;

    if (argc < 2) {
        print_main_help(stdout);
        return 0;
    }
    cmd = find_command(argv[1]);
    if (!cmd) {
        tool_error(NULL, "unknown subcommand '%s' (see 'qed --help')",
                   argv[1]);
        return 1;
    }
    tool_print_help(stdout, cmd);
    return 0;
}

/* A command that printed everything but could not get it out (full disk,
 * closed pipe) has failed too. */
static int finish_output(int status)
{
    if (fflush(stdout) != 0 || ferror(stdout)) {
        tool_error(NULL, "error writing output: %s", strerror(errno));
        return 1;
    }
    return status;
}

/* QED_TRACE=1: the engine's trace lines on stderr, one per event. */
static void print_trace(void *opaque, const char *line)
{
    (void)opaque;
    fprintf(stderr, "qed: trace: %s\n", line);
}

static void trace_from_environment(void)
{
    const char *v = getenv("QED_TRACE");

    if (v && *v && strcmp(v, "0") != 0)
        qed_set_trace(print_trace, NULL);
}

/* The arguments the commands work on when some held a password. */
static char **argv_copy;

/* Passwords in URIs on the command line: the commands get copies of those
 * arguments, and the strings ps and /proc/PID/cmdline show get them
 * starred out (same length).  False when out of memory. */
static bool hide_url_passwords(int argc, char ***argv)
{
    char **args = *argv;

    for (int i = 1; i < argc; i++) {
        const char *from = args[i], *start, *end;
        if (!tool_find_url_password(from, &start, &end))
            continue;
        if (!argv_copy) {
            argv_copy = calloc((size_t)argc + 1, sizeof(*argv_copy));
            if (!argv_copy)
                return false;
            memcpy(argv_copy, args, (size_t)argc * sizeof(*args));
        }
        if (!(argv_copy[i] = strdup(args[i])))
            return false;
        while (tool_find_url_password(from, &start, &end)) {
            memset(args[i] + (start - args[i]), '*', (size_t)(end - start));
            from = end;
        }
    }
    if (argv_copy)
        *argv = argv_copy;
    return true;
}

int main(int argc, char **argv)
{
    const struct tool_command *cmd;
    const char *name;

    /* Subcommands report bad options themselves, in the one-line format. */
    opterr = 0;

    if (argc < 2) {
        print_main_help(stderr);
        return 1;
    }
    if (!hide_url_passwords(argc, &argv)) {
        tool_error(NULL, "out of memory");
        return 1;
    }
    name = argv[1];
    if (strcmp(name, "--help") == 0 || strcmp(name, "-h") == 0)
        return finish_output(run_help(1, argv + 1));
    if (strcmp(name, "help") == 0)
        return finish_output(run_help(argc - 1, argv + 1));
    if (strcmp(name, "--version") == 0 || strcmp(name, "-V") == 0) {
        printf("qed (libqed) %s\n", qed_version());
        return finish_output(0);
    }
    trace_from_environment();
    cmd = find_command(name);
    if (!cmd) {
        tool_error(NULL, "unknown subcommand '%s' (see 'qed --help')", name);
        return 1;
    }
    return finish_output(cmd->run(cmd, argc - 1, argv + 1));
}
