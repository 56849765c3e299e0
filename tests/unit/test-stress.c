/* SPDX-License-Identifier: MIT */
/* Stress: random concurrent reads, writes, write-zeroes and discards (sizes
 * 512 B to 1 MiB, unaligned included, 64 in flight) checked against an
 * in-memory model, with and without a backing file, on both I/O engines;
 * then the image must pass `qemu-img check` and compare equal to the model.
 *
 * Requests in flight never overlap a write of another (their order would be
 * undefined); reads verify their bytes when they complete.  Discarded bytes
 * become indeterminate: they may read as their old content or as zeros. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "qed.h"
#include "../tap.h"

#define IMAGE_SIZE (64ull << 20)
#define BACKING_SIZE (48ull << 20)
#define DEPTH 64
#define MAX_LEN (1u << 20)

enum op_kind { OP_READ, OP_WRITE, OP_ZEROES, OP_DISCARD, OP_FLUSH };

struct op {
    struct stress *st;
    enum op_kind kind;
    uint64_t offset, length;
    uint8_t *buf;
    bool busy;
};

struct stress {
    qed_image *img;
    uint8_t *model;     /* expected content */
    uint8_t *indet;     /* 1 where a discard made the content indeterminate */
    struct op ops[DEPTH];
    unsigned in_flight;
    uint64_t done, failures, mismatches;
    uint64_t first_bad;
    char first_error[600];
    uint64_t rng;
};

static uint64_t next_rand(struct stress *st)
{
    /* xorshift64*: deterministic across runs */
    st->rng ^= st->rng >> 12;
    st->rng ^= st->rng << 25;
    st->rng ^= st->rng >> 27;
    return st->rng * 2685821657736338717ull;
}

static uint64_t pick_length(struct stress *st)
{
    uint64_t r = next_rand(st) % 100;
    if (r < 70)
        return 512 + next_rand(st) % (8192 - 512);
    if (r < 95)
        return 8192 + next_rand(st) % (128 * 1024 - 8192);
    return 128 * 1024 + next_rand(st) % (MAX_LEN - 128 * 1024 + 1);
}

static uint64_t pick_offset(struct stress *st, uint64_t len)
{
    uint64_t off = next_rand(st) % (IMAGE_SIZE - len + 1);
    if (next_rand(st) % 4 == 0)
        off &= ~4095ull; /* some cluster-aligned ones too */
    return off;
}

static bool overlaps_busy(struct stress *st, enum op_kind kind, uint64_t off,
                          uint64_t len)
{
    for (int i = 0; i < DEPTH; i++) {
        struct op *o = &st->ops[i];
        if (!o->busy || o->kind == OP_FLUSH)
            continue;
        if (kind == OP_READ && o->kind == OP_READ)
            continue;
        if (off < o->offset + o->length && o->offset < off + len)
            return true;
    }
    return false;
}

static void record_error(struct stress *st, const char *what,
                         const qed_error *err)
{
    if (st->failures++ == 0)
        snprintf(st->first_error, sizeof(st->first_error), "%s: %s", what,
                 err ? err->message : "?");
}

static void verify(struct stress *st, const uint8_t *got, uint64_t off,
                   uint64_t len)
{
    for (uint64_t i = 0; i < len; i++) {
        uint8_t want = st->model[off + i];
        if (got[i] == want || (st->indet[off + i] && got[i] == 0))
            continue;
        if (st->mismatches++ == 0)
            st->first_bad = off + i;
        return;
    }
}

static void op_done(void *opaque, int ret, const qed_error *err)
{
    struct op *o = opaque;
    struct stress *st = o->st;

    if (ret < 0)
        record_error(st, o->kind == OP_READ ? "read" : "write", err);
    else if (o->kind == OP_READ)
        verify(st, o->buf, o->offset, o->length);
    o->busy = false;
    st->in_flight--;
    st->done++;
}

static void apply_to_model(struct stress *st, struct op *o)
{
    switch (o->kind) {
    case OP_WRITE:
        memcpy(st->model + o->offset, o->buf, o->length);
        memset(st->indet + o->offset, 0, o->length);
        break;
    case OP_ZEROES:
        memset(st->model + o->offset, 0, o->length);
        memset(st->indet + o->offset, 0, o->length);
        break;
    case OP_DISCARD:
        memset(st->indet + o->offset, 1, o->length);
        break;
    default:
        break;
    }
}

static int submit(struct stress *st, struct op *o)
{
    struct iovec v = { o->buf, o->length };

    switch (o->kind) {
    case OP_READ:
        return qed_aio_readv(st->img, &v, 1, o->offset, op_done, o);
    case OP_WRITE:
        return qed_aio_writev(st->img, &v, 1, o->offset, op_done, o);
    case OP_ZEROES:
        return qed_aio_write_zeroes(st->img, o->offset, o->length,
                                    QED_ZERO_MAY_UNMAP, op_done, o);
    case OP_DISCARD:
        return qed_aio_discard(st->img, o->offset, o->length, op_done, o);
    case OP_FLUSH:
        return qed_aio_flush(st->img, op_done, o);
    }
    return -EINVAL;
}

static enum op_kind pick_kind(struct stress *st)
{
    uint64_t r = next_rand(st) % 1000;
    if (r < 300)
        return OP_READ;
    if (r < 800)
        return OP_WRITE;
    if (r < 895)
        return OP_ZEROES;
    if (r < 995)
        return OP_DISCARD;
    return OP_FLUSH;
}

/* Starts one more request in a free slot, if a non-overlapping range turns
 * up within a few tries. */
static void start_one(struct stress *st, struct op *o)
{
    enum op_kind kind = pick_kind(st);
    uint64_t len = 0, off = 0;
    int tries;

    for (tries = 0; tries < 8 && kind != OP_FLUSH; tries++) {
        len = pick_length(st);
        off = pick_offset(st, len);
        if (!overlaps_busy(st, kind, off, len))
            break;
    }
    if (tries == 8)
        return;
    o->kind = kind;
    o->offset = off;
    o->length = kind == OP_FLUSH ? 0 : len;
    if (kind == OP_WRITE) {
        uint8_t seed = (uint8_t)next_rand(st);
        for (uint64_t i = 0; i < len; i++)
            o->buf[i] = (uint8_t)(seed + i * 31 + (i >> 9));
    }
    /* The model changes at submission: no read overlaps a write in flight,
     * so no read can observe the difference. */
    apply_to_model(st, o);
    o->busy = true;
    st->in_flight++;
    if (submit(st, o) < 0) {
        o->busy = false;
        st->in_flight--;
        record_error(st, "submit", NULL);
    }
}

static void run_ops(struct stress *st, uint64_t count)
{
    qed_loop *loop = qed_image_loop(st->img);
    uint64_t started = 0;

    while (st->done < count || st->in_flight > 0) {
        for (int i = 0; i < DEPTH && started < count && !st->failures; i++) {
            if (!st->ops[i].busy) {
                uint64_t before = st->in_flight;
                start_one(st, &st->ops[i]);
                started += st->in_flight > before;
            }
        }
        if (st->failures && st->in_flight == 0)
            break;
        if (started >= count && st->in_flight == 0)
            break;
        qed_loop_run(loop, -1);
    }
}

static bool verify_whole(struct stress *st, qed_image *img)
{
    uint8_t *buf = malloc(MAX_LEN);
    qed_error err;
    bool okay = buf != NULL;

    for (uint64_t off = 0; okay && off < IMAGE_SIZE; off += MAX_LEN) {
        if (qed_pread(img, buf, MAX_LEN, off, &err) < 0) {
            record_error(st, "final read", &err);
            okay = false;
            break;
        }
        verify(st, buf, off, MAX_LEN);
    }
    free(buf);
    return okay && st->mismatches == 0;
}

static int write_file(const char *path, const uint8_t *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    if (!f)
        return -1;
    size_t n = fwrite(data, 1, len, f);
    return fclose(f) == 0 && n == len ? 0 : -1;
}

/* Where the test scripts live: $TESTS_DIR, or ./tests from the top. */
static const char *tests_dir(void)
{
    const char *dir = getenv("TESTS_DIR");
    return dir ? dir : "tests";
}

__attribute__((format(printf, 1, 0))) static int run_command(const char *fmt, const char *a, const char *b)
{
    char cmd[2048];
    int n = snprintf(cmd, sizeof(cmd), fmt, a, b);
    if (n < 0 || (size_t)n >= sizeof(cmd))
        return -1;
    int status = system(cmd);
    return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void stress(const char *dir, enum qed_engine engine, bool backing,
                   uint64_t count)
{
    const char *ename = engine == QED_ENGINE_URING ? "io_uring" : "threads";
    const char *bname = backing ? "with a backing file" : "without a backing file";
    char path[512], base[512], ref[512];
    struct qed_create_options co = { .size = sizeof(co),
                                     .virtual_size = IMAGE_SIZE,
                                     .cluster_size = 4096, .table_size = 4 };
    struct qed_open_options oo = { .size = sizeof(oo),
                                   .flags = QED_OPEN_RDWR, .engine = engine };
    struct stress st = { .rng = 0x9e3779b97f4a7c15ull ^ (uint64_t)backing ^
                                ((uint64_t)engine << 8) };
    qed_error err;

    snprintf(path, sizeof(path), "%s/stress-%s-%d.qed", dir, ename, backing);
    snprintf(base, sizeof(base), "%s/stress-base-%s.raw", dir, ename);
    snprintf(ref, sizeof(ref), "%s/stress-ref-%s-%d.raw", dir, ename, backing);
    st.model = calloc(1, IMAGE_SIZE);
    st.indet = calloc(1, IMAGE_SIZE);
    for (int i = 0; i < DEPTH; i++) {
        st.ops[i].st = &st;
        st.ops[i].buf = malloc(MAX_LEN);
    }
    if (backing) {
        for (uint64_t i = 0; i < BACKING_SIZE; i++)
            st.model[i] = (uint8_t)(i * 7 + (i >> 12));
        ok(write_file(base, st.model, BACKING_SIZE) == 0,
           "%s %s: backing file written", ename, bname);
        co.backing_file = base;
        co.backing_format = QED_FORMAT_RAW;
    }
    if (!ok(qed_create(path, &co, &err) == 0, "%s %s: create", ename, bname) ||
        !ok(qed_open(path, &oo, &st.img, &err) == 0, "%s %s: open", ename,
            bname)) {
        tap_diag("%s", err.message);
        return;
    }
    run_ops(&st, count);
    ok(st.done >= count, "%s %s: %" PRIu64 " operations completed", ename,
       bname, st.done);
    if (!ok(st.failures == 0, "%s %s: no request failed", ename, bname))
        tap_diag("%" PRIu64 " failures, first: %s", st.failures,
                 st.first_error);
    if (!ok(st.mismatches == 0, "%s %s: every read matched the model", ename,
            bname))
        tap_diag("%" PRIu64 " mismatching reads, first at offset %" PRIu64,
                 st.mismatches, st.first_bad);
    ok(qed_close(st.img, &err) == 0, "%s %s: clean close", ename, bname);

    /* Reopen: everything must have reached the file. */
    st.mismatches = 0;
    oo.flags = 0;
    if (ok(qed_open(path, &oo, &st.img, &err) == 0, "%s %s: reopen", ename,
           bname)) {
        ok(verify_whole(&st, st.img), "%s %s: reopened image matches the model",
           ename, bname);
        qed_close(st.img, &err);
    }
    ok(run_command("%s/qemu-check-clean %s", tests_dir(), path) == 0,
       "%s %s: qemu-img check is clean", ename, bname);
    /* Indeterminate bytes read back as whatever the image holds now. */
    if (qed_open(path, &oo, &st.img, &err) == 0) {
        uint8_t *buf = malloc(MAX_LEN);
        for (uint64_t off = 0; off < IMAGE_SIZE; off += MAX_LEN) {
            if (qed_pread(st.img, buf, MAX_LEN, off, &err) < 0)
                break;
            memcpy(st.model + off, buf, MAX_LEN);
        }
        free(buf);
        qed_close(st.img, &err);
    }
    write_file(ref, st.model, IMAGE_SIZE);
    ok(run_command("qemu-img compare -q -f qed -F raw %s %s", path, ref) == 0,
       "%s %s: qemu-img reads the same content", ename, bname);
    unlink(path);
    unlink(ref);
    if (backing)
        unlink(base);
    for (int i = 0; i < DEPTH; i++)
        free(st.ops[i].buf);
    free(st.model);
    free(st.indet);
}

int main(int argc, char **argv)
{
    char dir[] = "/tmp/qed-stress-XXXXXX";
    const char *env = getenv("QED_STRESS_OPS");
    uint64_t count = argc > 1 ? strtoull(argv[1], NULL, 10)
                     : env    ? strtoull(env, NULL, 10)
                              : 100000;

    if (!mkdtemp(dir)) {
        perror("mkdtemp");
        return 1;
    }
    stress(dir, QED_ENGINE_URING, false, count);
    stress(dir, QED_ENGINE_URING, true, count);
    stress(dir, QED_ENGINE_THREADS, false, count);
    stress(dir, QED_ENGINE_THREADS, true, count);
    rmdir(dir);
    return tap_done();
}
