/* qed_compare: do two images read the same?  Both are walked together;
 * ranges both report as zeros are skipped, the rest is read from both and
 * compared, many segments at once.  Once a difference turns up, no segment
 * past it starts, and the segments before it still in flight may only
 * lower it: the answer is the first differing byte. */
#include <errno.h>
#include <inttypes.h>

#include "ops.h"

enum { ACT_COMPARE = 1 };

struct compare {
    qed_image *img[2];
    bool found;
    uint64_t first;
};

static int classify(struct ops_walk *w, uint64_t pos, uint64_t *len,
                    const struct qed_block_status *st)
{
    (void)w;
    (void)pos;
    (void)len;
    return st[0].zero && st[1].zero ? OPS_SKIP : ACT_COMPARE;
}

static uint64_t first_difference(const uint8_t *a, const uint8_t *b,
                                 uint64_t len)
{
    uint64_t pos = 0;

    /* memcmp finds whether; narrow down where in 4 KiB steps. */
    while (pos < len) {
        uint64_t n = QED_MIN((uint64_t)4096, len - pos);
        if (memcmp(a + pos, b + pos, n) != 0) {
            while (a[pos] == b[pos])
                pos++;
            return pos;
        }
        pos += n;
    }
    return len;
}

static void compared(struct ops_worker *k)
{
    struct ops_walk *w = k->walk;
    struct compare *c = w->opaque;
    uint64_t at = first_difference(k->buf[0], k->buf[1], k->length);

    if (at < k->length) {
        uint64_t off = k->offset + at;
        if (!c->found || off < c->first) {
            c->found = true;
            c->first = off;
        }
        if (w->limit > off)
            w->limit = off;
    }
    ops_worker_done(k, 0, NULL);
}

static void start(struct ops_worker *k)
{
    struct compare *c = k->walk->opaque;

    ops_begin(k, compared);
    ops_fill(k, 0, c->img[0]);
    ops_fill(k, 1, c->img[1]);
    ops_end(k);
}

int qed_compare(qed_image *a, qed_image *b, const struct qed_op_options *o,
                struct qed_compare_result *result, qed_error *err)
{
    struct compare c = { .img = { a, b } };
    struct ops_walk w = { 0 };
    int ret;

    memset(result, 0, sizeof(*result));
    if (qed_image_loop(a) != qed_image_loop(b))
        return qed_fail(err, EINVAL, "compare: '%s' and '%s' are on different "
                        "loops; open the second with the first's loop",
                        a->filename, b->filename);
    ret = ops_walk_configure(&w, o, err);
    if (ret == 0)
        ret = ops_require_idle(a, "compare", err);
    if (ret == 0)
        ret = ops_require_idle(b, "compare", err);
    if (ret < 0)
        return ret;
    result->size_a = qed_size(a);
    result->size_b = qed_size(b);
    w.loop = qed_image_loop(a);
    w.end = QED_MAX(result->size_a, result->size_b);
    w.status[0] = a;
    w.status[1] = b;
    w.nstatus = 2;
    w.nbufs = 2;
    w.classify = classify;
    w.start = start;
    w.opaque = &c;
    ret = ops_walk_run(&w, err);
    if (ret < 0)
        return ret;
    result->identical = !c.found;
    result->mismatch_offset = c.found ? c.first : 0;
    return 0;
}
