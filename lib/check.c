/* The consistency check: walk L1 and every L2 table, account each cluster of
 * the file once, and report (or repair) what breaks the rules of the
 * specification.  A bitmap with one bit per cluster of the file finds
 * clusters referenced twice and clusters nothing references (leaks). */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>

#include "check.h"

struct checker {
    qed_image *img;
    struct qed_state *s;
    bool repair;
    struct check_result *res;
    uint8_t *used;          /* bit per cluster of the file */
    uint64_t nclusters;     /* clusters in the file */
    uint64_t last_data;     /* previous data cluster, for fragmentation */
    uint8_t *table;         /* current L2 table */
    uint64_t used_end;      /* end of the last cluster referenced */
    qed_error *err;
};

static bool test_and_mark(struct checker *c, uint64_t offset, uint64_t count)
{
    uint64_t first = offset >> c->s->cluster_bits;
    bool clash = false;

    for (uint64_t i = first; i < first + count && i < c->nclusters; i++) {
        if (c->used[i / 8] & (1u << (i % 8)))
            clash = true;
    }
    if (clash)
        return false;
    for (uint64_t i = first; i < first + count && i < c->nclusters; i++)
        c->used[i / 8] |= (uint8_t)(1u << (i % 8));
    c->used_end = QED_MAX(c->used_end, offset + (count << c->s->cluster_bits));
    return true;
}

static bool offset_ok(struct checker *c, uint64_t offset, uint64_t len)
{
    return qed_offset_valid(c->s, offset, len);
}

static int write_table(struct checker *c, uint8_t *table, uint64_t offset)
{
    int ret = io_pwrite_sync(c->img->file, table, c->s->table_bytes, offset);
    if (ret < 0)
        return qed_fail(c->err, -ret, "writing repaired table at 0x%" PRIx64
                        ": %s", offset, strerror(-ret));
    return 0;
}

/* Returns whether the entry stays; counts and clears bad ones. */
static bool keep_entry(struct checker *c, uint64_t offset, uint64_t len)
{
    if (offset_ok(c, offset, len) &&
        test_and_mark(c, offset, len >> c->s->cluster_bits))
        return true;
    c->res->corruptions++;
    return false;
}

static int check_l2(struct checker *c, uint64_t l2_offset, bool *changed)
{
    struct qed_state *s = c->s;
    int ret = io_pread_sync(c->img->file, c->table, s->table_bytes, l2_offset);

    *changed = false;
    if (ret < 0)
        return qed_fail(c->err, -ret, "reading L2 table at 0x%" PRIx64 ": %s",
                        l2_offset, strerror(-ret));
    for (uint64_t i = 0; i < s->table_entries; i++) {
        uint64_t e = table_entry(c->table, i);
        if (e == 0 || e == 1)
            continue;
        if (!keep_entry(c, e, s->cluster_size)) {
            if (c->repair) {
                table_set_entry(c->table, i, 0);
                *changed = true;
                c->res->corruptions_fixed++;
            }
            continue;
        }
        c->res->allocated_clusters++;
        if (c->last_data && e != c->last_data + s->cluster_size)
            c->res->fragmented_clusters++;
        c->last_data = e;
    }
    if (*changed)
        return write_table(c, c->table, l2_offset);
    return 0;
}

static int check_tables(struct checker *c)
{
    struct qed_state *s = c->s;
    bool l1_changed = false;

    for (uint64_t i = 0; i < s->table_entries; i++) {
        uint64_t l2 = table_entry(s->l1, i);
        bool changed;
        int ret;

        if (l2 == 0)
            continue;
        if (!keep_entry(c, l2, s->table_bytes)) {
            if (c->repair) {
                table_set_entry(s->l1, i, 0);
                l1_changed = true;
                c->res->corruptions_fixed++;
            }
            continue;
        }
        ret = check_l2(c, l2, &changed);
        if (ret < 0)
            return ret;
    }
    if (l1_changed)
        return write_table(c, s->l1, s->header.l1_table_offset);
    return 0;
}

static void count_leaks(struct checker *c)
{
    uint64_t first = c->s->header_bytes >> c->s->cluster_bits;
    for (uint64_t i = first; i < c->nclusters; i++)
        if (!(c->used[i / 8] & (1u << (i % 8))))
            c->res->leaks++;
}

int check_image(qed_image *img, bool repair, struct check_result *res,
                qed_error *err)
{
    struct qed_state *s = img->qed;
    struct checker c = { .img = img, .s = s, .repair = repair, .res = res,
                         .err = err };
    int ret;

    memset(res, 0, sizeof(*res));
    c.nclusters = s->file_end >> s->cluster_bits;
    c.used = calloc(1, c.nclusters / 8 + 1);
    c.table = qed_aligned_alloc(s->table_bytes);
    if (!c.used || !c.table) {
        free(c.used);
        free(c.table);
        return qed_fail(err, ENOMEM, "out of memory for the check");
    }
    test_and_mark(&c, 0, s->header_bytes >> s->cluster_bits);
    test_and_mark(&c, s->header.l1_table_offset,
                  s->table_bytes >> s->cluster_bits);
    ret = check_tables(&c);
    if (ret == 0)
        count_leaks(&c);
    res->total_clusters = (img->size + s->cluster_size - 1) >> s->cluster_bits;
    res->image_end_offset = c.used_end;
    free(c.used);
    free(c.table);
    return ret;
}

int check_on_open(qed_image *img, qed_error *err)
{
    struct qed_state *s = img->qed;
    struct check_result res;
    uint64_t file_size;
    int ret;

    if (!(s->header.features & QED_F_NEED_CHECK))
        return 0;
    ret = check_image(img, true, &res, err);
    if (ret < 0) {
        qed_error_prefix(err, "checking the dirty image: ");
        return ret;
    }
    /* The file ends with the last referenced cluster: space a crashed
     * writer extended ahead (or allocated and never linked) goes, and a
     * referenced cluster sticking out past the end is made whole. */
    ret = img->file->ops->get_size(img->file, &file_size);
    if (ret == 0 && file_size != res.image_end_offset) {
        ret = img->file->ops->truncate(img->file, res.image_end_offset);
        s->file_end = res.image_end_offset;
        s->size_ensured = res.image_end_offset;
    }
    if (ret == 0)
        ret = io_sync_sync(img->file);
    if (ret == 0)
        ret = image_write_header(img, s->header.features & ~QED_F_NEED_CHECK);
    if (ret < 0)
        return qed_fail(err, -ret, "repairing the dirty image: %s",
                        strerror(-ret));
    return 0;
}
