/* SPDX-License-Identifier: MIT */
/* The engine's invariants are asserted in every build the Makefile makes
 * (no NDEBUG): breaking one stops the program at the fault instead of
 * corrupting an image later.  Each case breaks one in a child process,
 * which must die of SIGABRT; the same call made correctly must not. */
#include <signal.h>
#include <stdlib.h>
#include <sys/wait.h>
#include <unistd.h>

#include "../tap.h"
#include "qed-image.h"

/* Runs fn in a child; returns the signal that ended it, or 0. */
static int child_signal(void (*fn)(bool broken), bool broken)
{
    int status;
    pid_t pid = fork();

    if (pid == 0) {
        /* The assertion message is expected; keep the TAP stream clean. */
        if (!freopen("/dev/null", "w", stderr))
            _exit(3);
        fn(broken);
        _exit(0);
    }
    if (pid < 0 || waitpid(pid, &status, 0) != pid)
        return -1;
    return WIFSIGNALED(status) ? WTERMSIG(status) : 0;
}

/* A table reference given back twice. */
static void put_table(bool broken)
{
    struct l2cache *cache;
    struct table *t;

    if (qedi_l2cache_new(1u << 20, 65536, &cache) < 0)
        _exit(2);
    t = qedi_l2cache_insert(cache, 1u << 20, true);
    if (!t)
        _exit(2);
    qedi_l2cache_put(cache, t);
    if (broken)
        qedi_l2cache_put(cache, t);
    qedi_l2cache_free(cache);
}

int main(void)
{
    ok(child_signal(put_table, false) == 0,
       "a table reference given back once is fine");
    ok(child_signal(put_table, true) == SIGABRT,
       "a table reference given back twice stops the program (SIGABRT)");
    return tap_done();
}
