/* SPDX-License-Identifier: MIT */
/* qed_compare: do two images read the same?  Both are walked together;
 * ranges both report as zeros are skipped, the rest is read from both and
 * compared, many segments at once.  Once a difference turns up, no segment
 * past it starts, and the segments before it still in flight may only
 * lower it: the answer is the first differing byte.  qed_compare_strict
 * also wants the block status to agree, as qemu-img compare -s does. */
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
    qedi_ops_worker_done(k, 0, NULL);
}

static void start(struct ops_worker *k)
{
    struct compare *c = k->walk->opaque;

    qedi_ops_begin(k, compared);
    qedi_ops_fill(k, 0, c->img[0]);
    qedi_ops_fill(k, 1, c->img[1]);
    qedi_ops_end(k);
}

static int compare_ready(qed_image *a, qed_image *b, qed_error *err)
{
    int ret;

    if (qed_image_loop(a) != qed_image_loop(b))
        return qedi_fail(err, EINVAL, "compare: '%s' and '%s' are on different "
                        "loops; open the second with the first's loop",
                        a->filename, b->filename);
    ret = qedi_ops_require_idle(a, "compare", err);
    if (ret == 0)
        ret = qedi_ops_require_idle(b, "compare", err);
    return ret;
}

/* Compares the content of [0, end); result has the sizes already. */
static int compare_content(qed_image *a, qed_image *b,
                           const struct qed_op_options *o, uint64_t end,
                           struct qed_compare_result *result, qed_error *err)
{
    struct compare c = { .img = { a, b } };
    struct ops_walk w = { 0 };
    int ret;

    ret = qedi_ops_walk_configure(&w, o, err);
    if (ret < 0)
        return ret;
    w.loop = qed_image_loop(a);
    w.end = end;
    w.status[0] = a;
    w.status[1] = b;
    w.nstatus = 2;
    w.nbufs = 2;
    w.classify = classify;
    w.start = start;
    w.opaque = &c;
    ret = qedi_ops_walk_run(&w, err);
    if (ret < 0)
        return ret;
    result->identical = !c.found;
    result->mismatch_offset = c.found ? c.first : 0;
    return 0;
}

static int compare(qed_image *a, qed_image *b, const struct qed_op_options *o,
                   struct qed_compare_result *result, qed_error *err)
{
    int ret;

    ret = compare_ready(a, b, err);
    if (ret < 0)
        return ret;
    result->size_a = qed_size(a);
    result->size_b = qed_size(b);
    return compare_content(a, b, o, QED_MAX(result->size_a, result->size_b),
                           result, err);
}

/* ---- strict mode: block status ------------------------------------------------
 *
 * qemu-img compare -s compares, range by range, the flags QEMU's
 * bdrv_block_status_above returns for the two images; the same flags are
 * derived here from qed_block_status.  Two of them are not what `map`
 * shows: zeros past the end of a shorter backing file count as allocated
 * (QEMU lets the layer that ends answer for them), and EOF is set when the
 * range runs to the end of the image, or, for a range no layer allocates,
 * to the end of the deepest layer. */

enum {
    STATUS_DATA = 0x01,
    STATUS_ZERO = 0x02,
    STATUS_OFFSET_VALID = 0x04,
    STATUS_ALLOCATED = 0x10,
    STATUS_EOF = 0x20,
};

static qed_image *layer_at(qed_image *img, unsigned depth)
{
    while (depth-- > 0 && img)
        img = qed_backing(img);
    return img;
}

static unsigned status_flags(qed_image *img, uint64_t pos, uint64_t end,
                             const struct qed_block_status *st)
{
    qed_image *layer = layer_at(img, st->depth);
    unsigned flags = (st->data ? STATUS_DATA : 0) |
                     (st->zero ? STATUS_ZERO : 0) |
                     (st->has_offset ? STATUS_OFFSET_VALID : 0) |
                     (st->present ? STATUS_ALLOCATED : 0);

    /* Not present with a backing file below: past that file's end. */
    if (!st->present && layer && qed_backing(layer))
        flags |= STATUS_ALLOCATED;
    if (pos + st->length == end)
        flags |= STATUS_EOF;
    else if (!(flags & STATUS_ALLOCATED) && layer &&
             pos + st->length == qed_size(layer))
        flags |= STATUS_EOF;
    return flags;
}

static int query_flags(qed_image *img, uint64_t pos, uint64_t end,
                       unsigned *flags, uint64_t *len, qed_error *err)
{
    struct qed_block_status st;
    int ret;

    qed_block_status_init(&st);
    ret = qed_block_status(img, pos, end - pos, &st, err);

    if (ret < 0) {
        qedi_error_prefix(err, "block status of '%s' at offset %" PRIu64 ": ",
                         img->filename, pos);
        return ret;
    }
    if (st.length == 0 || st.length > end - pos)
        return qedi_fail(err, EIO, "block status of '%s' at offset %" PRIu64
                        " returned length %" PRIu64, img->filename, pos,
                        st.length);
    *flags = status_flags(img, pos, end, &st);
    *len = st.length;
    return 0;
}

/* The first offset where the status of a and b (same size) differs, as
 * qemu-img walks them: from range to range, each as long as the shorter of
 * the two answers.  Returns 1 with *at set, 0 when they agree. */
static int first_status_difference(qed_image *a, qed_image *b, uint64_t *at,
                                   qed_error *err)
{
    uint64_t end = qed_size(a);

    for (uint64_t pos = 0; pos < end;) {
        unsigned fa, fb;
        uint64_t la, lb;
        int ret = query_flags(a, pos, end, &fa, &la, err);

        if (ret == 0)
            ret = query_flags(b, pos, end, &fb, &lb, err);
        if (ret < 0)
            return ret;
        if (fa != fb) {
            *at = pos;
            return 1;
        }
        pos += QED_MIN(la, lb);
    }
    return 0;
}

static int compare_strict(qed_image *a, qed_image *b,
                          const struct qed_op_options *o,
                          struct qed_compare_result *result,
                          bool *status_mismatch, qed_error *err)
{
    uint64_t at = 0;
    int differs, ret;

    *status_mismatch = false;
    ret = compare_ready(a, b, err);
    if (ret < 0)
        return ret;
    result->size_a = qed_size(a);
    result->size_b = qed_size(b);
    if (result->size_a != result->size_b)
        return 0;
    differs = first_status_difference(a, b, &at, err);
    if (differs < 0)
        return differs;
    /* qemu-img goes front to back: a content difference before the status
     * difference is found first. */
    ret = compare_content(a, b, o, differs ? at : result->size_a, result,
                          err);
    if (ret < 0 || !result->identical || !differs)
        return ret;
    result->identical = false;
    result->mismatch_offset = at;
    *status_mismatch = true;
    return 0;
}

/* Both run on a result of the library's own, handed over up to the size
 * the program knows. */
int qed_compare(qed_image *a, qed_image *b, const struct qed_op_options *o,
                struct qed_compare_result *result, qed_error *err)
{
    struct qed_compare_result r = { 0 };
    int ret = qedi_abi_check_out(&qedi_abi_compare_result, result, err);

    if (ret < 0)
        return ret;
    ret = compare(a, b, o, &r, err);
    qedi_abi_give(&qedi_abi_compare_result, result, &r);
    return ret;
}

int qed_compare_strict(qed_image *a, qed_image *b,
                       const struct qed_op_options *o,
                       struct qed_compare_result *result,
                       bool *status_mismatch, qed_error *err)
{
    struct qed_compare_result r = { 0 };
    int ret = qedi_abi_check_out(&qedi_abi_compare_result, result, err);

    if (ret < 0)
        return ret;
    ret = compare_strict(a, b, o, &r, status_mismatch, err);
    qedi_abi_give(&qedi_abi_compare_result, result, &r);
    return ret;
}
