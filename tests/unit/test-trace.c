/* SPDX-License-Identifier: MIT */
/* qed_set_trace: with a callback, the engine hands it one line per event
 * (the request, its states, the table's group write) and keeps working the
 * same; with NULL it hands nothing more. */
#include <string.h>

#include "support-tap.h"

struct lines {
    unsigned count;
    char all[16384];
};

static void collect(void *opaque, const char *line)
{
    struct lines *l = opaque;
    size_t used = strlen(l->all);

    l->count++;
    /* Lines that do not fit whole are left out. */
    if (used + strlen(line) + 2 < sizeof(l->all))
        snprintf(l->all + used, sizeof(l->all) - used, "%s\n", line);
}

int main(void)
{
    struct lines l = { 0 };
    char dir[256];
    const char *path;
    qed_image *img = NULL;
    qed_error err = { 0 };
    uint8_t buf[4096];
    unsigned before;

    if (support_mkdtemp("trace", dir, sizeof(dir)) < 0)
        return 1;
    path = support_path(dir, "t.qed");
    if (!support_tap_create("trace", path, 1 << 20, 0, NULL, QED_FORMAT_PROBE,
                            "t.qed"))
        return tap_done();
    qed_set_trace(collect, &l);
    if (support_open(path, QED_OPEN_RDWR, QED_ENGINE_AUTO, &img, &err) < 0) {
        ok(0, "open t.qed: %s", err.message);
        return tap_done();
    }
    memset(buf, 0x5a, sizeof(buf));
    ok(qed_pwrite(img, buf, sizeof(buf), 8192, &err) == 0, "a traced write succeeds");
    has_substr(l.all, "open '", "the open is traced");
    has_substr(l.all, ": write 8192+4096 on '", "the write is traced with its range");
    has_substr(l.all, ": claim at 8192", "its claim is traced");
    has_substr(l.all, ": commit at 8192", "its commit is traced");
    has_substr(l.all, "group write: write-table", "the table's group write is traced");
    has_substr(l.all, " done: ok", "its completion is traced");
    qed_set_trace(NULL, NULL);
    before = l.count;
    memset(buf, 0, sizeof(buf));
    ok(qed_pread(img, buf, sizeof(buf), 8192, &err) == 0 && buf[0] == 0x5a && buf[4095] == 0x5a,
       "the data reads back");
    ok(qed_close(img, &err) == 0, "the image closes");
    is_u64(l.count, before, "with tracing off nothing more is handed over");
    support_rmtree(dir);
    return tap_done();
}
