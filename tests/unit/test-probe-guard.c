/* SPDX-License-Identifier: MIT */
/* The first sector of a raw image opened writable by probing: changes to it
 * run one at a time and each is checked against what the sector holds when
 * it starts, so writes in flight together cannot assemble a QED header
 * between them; after a failed write there only a whole-sector write is
 * accepted.  Runs on the simulated file system (io-sim.c). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "core.h"
#include "qed-image.h"
#include "support-tap.h"

#define DISK_SIZE (1024u * 1024)

struct result {
    bool done;
    int ret;
    char message[sizeof(((qed_error *)0)->message)];
};

static void completed(void *opaque, int ret, const qed_error *err)
{
    struct result *r = opaque;
    r->done = true;
    r->ret = ret;
    snprintf(r->message, sizeof(r->message), "%s", err ? err->message : "");
}

static void run_until_done(qed_image *img, struct result *r, unsigned n)
{
    for (unsigned spins = 0; spins < 100000; spins++) {
        unsigned pending = 0;
        for (unsigned i = 0; i < n; i++)
            pending += !r[i].done;
        if (!pending)
            return;
        qed_loop_run(qed_image_loop(img), 10);
    }
}

/* Opens "guest.raw" of fs read-write with the format probed. */
static qed_image *open_probed(struct memfs *fs, qed_loop *loop)
{
    struct qed_open_options o = { .size = sizeof(o),
                                  .flags = QED_OPEN_RDWR, .loop = loop };
    struct storage_driver opener = memfs_opener(fs);
    qed_error err = { 0 };
    qed_image *img = NULL;
    int ret = qedi_image_open("guest.raw", &o, &opener, &img, &err);

    if (!ok(ret == 0, "open guest.raw read-write, format probed"))
        tap_diag("ret %d: %s", ret, err.message);
    return img;
}

static void write_async(qed_image *img, uint64_t offset, const void *data,
                        size_t len, struct result *r)
{
    struct iovec iov = { .iov_base = (void *)data, .iov_len = len };
    memset(r, 0, sizeof(*r));
    if (qed_aio_writev(img, &iov, 1, offset, completed, r) < 0) {
        r->done = true;
        r->ret = -EIO;
    }
}

static int write_sync(qed_image *img, uint64_t offset, const void *data,
                      size_t len)
{
    struct result r;
    write_async(img, offset, data, len, &r);
    run_until_done(img, &r, 1);
    return r.ret;
}

static void first_bytes(struct memfs *fs, uint8_t *out, size_t n)
{
    memfs_pread(fs, "guest.raw", out, n, 0);
}

static struct memfs *fresh_disk(void)
{
    struct memfs *fs = memfs_new();
    uint8_t *zeros = calloc(1, DISK_SIZE);

    if (!fs || !zeros || memfs_add(fs, "guest.raw", zeros, DISK_SIZE) < 0)
        abort();
    free(zeros);
    return fs;
}

/* "QED\1" in the whole first sector, then a one-byte write of 0 at 3,
 * submitted together: checked one after the other, the second sees the
 * first's bytes and is refused. */
static void test_writes_in_flight_together(qed_loop *loop)
{
    struct memfs *fs = fresh_disk();
    uint8_t sector[512] = { 'Q', 'E', 'D', 1 };
    uint8_t zero = 0, got[4];
    struct result r[2];
    qed_image *img;

    memfs_set_delays(fs, 8, 42);
    img = open_probed(fs, loop);
    if (!img) {
        memfs_free(fs);
        return;
    }
    ok(qed_warnings(img) && strstr(qed_warnings(img), "-f raw"),
       "the open warns, naming -f raw");
    write_async(img, 0, sector, sizeof(sector), &r[0]);
    write_async(img, 3, &zero, 1, &r[1]);
    run_until_done(img, r, 2);
    is_u64(r[0].ret, 0, "the whole-sector write of QED\\1 succeeds");
    is_u64(r[1].ret, (uint64_t)-EPERM,
           "the byte completing QED\\0, in flight with it, is refused");
    has_substr(r[1].message, "would make it probe as qed",
               "the refusal says why: %s", r[1].message);
    first_bytes(fs, got, 4);
    ok(memcmp(got, "QED\1", 4) == 0, "the disk holds QED\\1");
    support_tap_close("probed raw", img, "guest.raw");
    memfs_free(fs);
}

/* Many small writes in flight at once that, in any order, build "vhdxfile"
 * one byte at a time: the last one to be checked is refused, whatever the
 * completion order. */
static void test_signature_from_many_pieces(qed_loop *loop)
{
    static const char vhdx[] = "vhdxfile";
    struct memfs *fs = fresh_disk();
    struct result r[8];
    unsigned refused = 0;
    uint8_t got[8];
    qed_image *img;

    memfs_set_delays(fs, 16, 7);
    img = open_probed(fs, loop);
    if (!img) {
        memfs_free(fs);
        return;
    }
    for (unsigned i = 0; i < 8; i++)
        write_async(img, i, &vhdx[i], 1, &r[i]);
    run_until_done(img, r, 8);
    for (unsigned i = 0; i < 8; i++)
        refused += r[i].ret == -EPERM;
    is_u64(refused, 1, "of 8 one-byte writes spelling vhdxfile, one is refused");
    first_bytes(fs, got, 8);
    ok(memcmp(got, vhdx, 8) != 0, "the disk does not spell vhdxfile");
    support_tap_close("probed raw", img, "guest.raw");
    memfs_free(fs);
}

/* A failed write leaves the sector's content unknown: partial writes are
 * refused until a whole-sector write has succeeded. */
static void test_failed_write_makes_sector_unknown(qed_loop *loop)
{
    struct memfs *fs = fresh_disk();
    uint8_t sector[512] = { 0xeb, 0x63, 0x90 }, byte = 0x42;
    qed_image *img = open_probed(fs, loop);
    struct result r;

    if (!img) {
        memfs_free(fs);
        return;
    }
    memfs_fail_nth(fs, 1, EIO);
    is_u64(write_sync(img, 0, sector, sizeof(sector)), (uint64_t)-EIO,
           "an injected EIO fails the whole-sector write");
    write_async(img, 10, &byte, 1, &r);
    run_until_done(img, &r, 1);
    is_u64(r.ret, (uint64_t)-EPERM, "then a one-byte write into it is refused");
    has_substr(r.message, "unknown state", "saying the sector is unknown: %s",
               r.message);
    is_u64(write_sync(img, 512, &byte, 1), 0,
           "a write to the second sector is not affected");
    is_u64(write_sync(img, 0, sector, sizeof(sector)), 0,
           "a whole-sector write is accepted");
    is_u64(write_sync(img, 10, &byte, 1), 0,
           "after it, a one-byte write is accepted again");
    support_tap_close("probed raw", img, "guest.raw");
    memfs_free(fs);
}

/* With the format given there is no guard and no warning. */
static void test_explicit_raw_is_not_guarded(qed_loop *loop)
{
    struct memfs *fs = fresh_disk();
    struct qed_open_options o = {
        .size = sizeof(struct qed_open_options),
        .flags = QED_OPEN_RDWR, .loop = loop, .format = QED_FORMAT_RAW,
    };
    struct storage_driver opener = memfs_opener(fs);
    uint8_t sector[512] = { 'Q', 'E', 'D', 0 };
    qed_error err = { 0 };
    qed_image *img = NULL;

    if (!ok(qedi_image_open("guest.raw", &o, &opener, &img, &err) == 0,
            "open guest.raw read-write as raw")) {
        memfs_free(fs);
        return;
    }
    ok(qed_warnings(img) == NULL, "no warning with the format given");
    is_u64(write_sync(img, 0, sector, sizeof(sector)), 0,
           "the QED magic is written when the format was given");
    support_tap_close("explicit raw", img, "guest.raw");
    memfs_free(fs);
}

int main(void)
{
    qed_loop *loop;
    qed_error err = { 0 };

    if (qed_loop_new(QED_ENGINE_THREADS, &loop, &err) < 0) {
        tap_diag("loop: %s", err.message);
        return 1;
    }
    test_writes_in_flight_together(loop);
    test_signature_from_many_pieces(loop);
    test_failed_write_makes_sector_unknown(loop);
    test_explicit_raw_is_not_guarded(loop);
    qed_loop_free(loop);
    return tap_done();
}
