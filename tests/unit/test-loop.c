/* SPDX-License-Identifier: MIT */
/* The event loop knows nothing of storage: a bare loop (qedi_loop_new) has no
 * I/O engine; the layers above keep their state in its slots, destroyed
 * with it (after its queued tasks ran, the last filled first), and hook in
 * before it waits; qed_loop_new puts the engine into a slot. */
#include <errno.h>
#include <unistd.h>

#include "loop.h"
#include "qed.h"
#include "../tap.h"

static char key_a, key_b;

/* What the callbacks saw, in order. */
static char trail[64];

static void note(char c)
{
    size_t n = strlen(trail);
    if (n + 1 < sizeof(trail))
        trail[n] = c;
}

static void destroy_note(void *data)
{
    note(*(char *)data);
}

static void deferred_note(void *arg)
{
    note(*(char *)arg);
}

static void hook_count(void *opaque)
{
    (*(unsigned *)opaque)++;
}

static void test_bare_loop(void)
{
    qed_loop *loop = NULL;
    qed_error err = { 0 };

    if (!ok(qedi_loop_new(&loop, &err) == 0 && loop, "qedi_loop_new makes a loop"))
        return;
    is_str(qed_loop_engine_name(loop), "none",
           "a bare loop has no I/O engine");
    is_u64(qed_loop_run(loop, 0), 0, "a bare loop runs with nothing to do");
    qed_loop_free(loop);
}

static void test_slots(void)
{
    static char a = 'a', b = 'b', t = 't';
    qed_loop *loop = NULL;
    qed_error err = { 0 };

    if (qedi_loop_new(&loop, &err) < 0)
        return;
    ok(qedi_loop_slot(loop, &key_a) == NULL, "an unfilled slot is NULL");
    ok(qedi_loop_slot_fill(loop, &key_a, &a, destroy_note) == 0 &&
       qedi_loop_slot_fill(loop, &key_b, &b, destroy_note) == 0,
       "two slots are filled");
    ok(qedi_loop_slot(loop, &key_a) == &a && qedi_loop_slot(loop, &key_b) == &b,
       "each slot is found by its key");
    memset(trail, 0, sizeof(trail));
    qedi_loop_defer_call(loop, deferred_note, &t);
    qed_loop_free(loop);
    is_str(trail, "tba", "freeing the loop runs its queued tasks, then "
           "destroys the slots, the last filled first");
}

static void test_before_wait(void)
{
    qed_loop *loop = NULL;
    qed_error err = { 0 };
    unsigned calls = 0;

    if (qedi_loop_new(&loop, &err) < 0)
        return;
    ok(qedi_loop_add_before_wait(loop, hook_count, &calls) == 0,
       "a before-wait hook is added");
    qed_loop_run(loop, 0);
    is_u64(calls, 2, "one round calls the hook before waiting and before "
           "returning");
    qed_loop_free(loop);
}

static void test_engine_in_a_slot(void)
{
    static const struct {
        enum qed_engine engine;
        const char *name;
    } cases[] = {
        { QED_ENGINE_THREADS, "threads" },
        { QED_ENGINE_URING, "io_uring" },
    };

    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        qed_loop *loop = NULL;
        qed_error err = { 0 };
        int ret = qed_loop_new(cases[i].engine, &loop, &err);

        if (ret < 0 && cases[i].engine == QED_ENGINE_URING) {
            printf("ok %d - # SKIP io_uring unavailable: %s\n", ++tap_count,
                   err.message);
            continue;
        }
        ok(ret == 0 && strcmp(qed_loop_engine_name(loop), cases[i].name) == 0,
           "qed_loop_new(%s) starts that engine in the loop", cases[i].name);
        qed_loop_free(loop);
    }
}

int main(void)
{
    test_bare_loop();
    test_slots();
    test_before_wait();
    test_engine_in_a_slot();
    return tap_done();
}
