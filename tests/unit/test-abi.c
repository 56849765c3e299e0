/* SPDX-License-Identifier: MIT */
/* The public structs' size field: a program built against an older qed.h
 * (a smaller size) gets the defaults for the options it does not know and
 * has nothing written past its struct; a size that was not set, or a larger
 * one whose unknown part carries options, fails with EINVAL naming size and
 * its value; results past what the library knows are zeroed.  Checked on
 * the mechanism itself, with a struct of two versions, and on every public
 * call that takes such a struct.  Structs are allocated to the byte, so
 * that ASan catches a read or write past what the program has. */
#include <errno.h>
#include <stdlib.h>
#include <unistd.h>

#include "abi.h"
#include "qed.h"
#include "support-image.h"
#include "../tap.h"

/* ---- the mechanism, on a struct of two versions ----------------------------- */

/* Version 2 as this "library" knows it: added_later came after version 1. */
struct sample {
    size_t size;
    uint32_t first_field;
    uint32_t reserved;       /* version 2 starts past version 1's sizeof */
    uint64_t added_later;    /* default 42 */
};

/* What a program built against version 1 has. */
struct sample_v1 {
    size_t size;
    uint32_t first_field;
};

static const struct abi_struct sample_abi = ABI_STRUCT(sample, first_field);

static void *alloc_exact(size_t size, int fill)
{
    void *p = malloc(size);
    if (p)
        memset(p, fill, size);
    return p;
}

static void test_take_from_older_program(void)
{
    struct sample_v1 *old = alloc_exact(sizeof(*old), 0);
    struct sample full = { .added_later = 42 };
    qed_error err = { 0 };
    int ret;

    if (!old)
        return;
    old->size = sizeof(*old);
    old->first_field = 7;
    ret = qedi_abi_take(&sample_abi, &full, old, &err);
    ok(ret == 0, "options of an older program (size %zu) are accepted",
       sizeof(*old));
    is_u64(full.first_field, 7, "... the options it has are taken");
    is_u64(full.added_later, 42, "... the option it does not have keeps its "
           "default");
    is_u64(full.size, sizeof(full), "... the library's copy has its own size");
    free(old);
}

static void test_take_null_is_defaults(void)
{
    struct sample full = { .added_later = 42 };

    ok(qedi_abi_take(&sample_abi, &full, NULL, NULL) == 0 &&
           full.added_later == 42 && full.size == sizeof(full),
       "no options (NULL): the defaults, size set");
}

static void test_take_bad_sizes(void)
{
    unsigned char *newer = alloc_exact(sizeof(struct sample) + 16, 0);
    struct sample full = { .added_later = 42 };
    struct sample_v1 unset = { 0 };
    qed_error err = { 0 };
    char want[64];
    size_t size;
    int ret;

    unset.first_field = 9;
    ret = qedi_abi_take(&sample_abi, &full, &unset, &err);
    is_u64(ret, (uint64_t)-EINVAL, "size 0 (not set) fails with EINVAL");
    has_substr(err.message, "struct sample: size 0 ",
               "... the message names the struct, size and its value");
    is_u64(full.first_field, 0, "... and nothing is taken");

    unset.size = 2;
    ret = qedi_abi_take(&sample_abi, &full, &unset, &err);
    is_u64(ret, (uint64_t)-EINVAL, "a size below the first version's fails");
    has_substr(err.message, "size 2 ", "... naming it");

    if (!newer)
        return;
    size = sizeof(struct sample) + 16;
    memcpy(newer, &size, sizeof(size));
    newer[sizeof(size_t)] = 5; /* first_field, little or big: non-zero */
    ret = qedi_abi_take(&sample_abi, &full, newer, &err);
    ok(ret == 0 && full.first_field != 0 && full.size == sizeof(full),
       "a newer program's options, the unknown part all zeros: accepted");
    newer[sizeof(struct sample) + 3] = 1;
    ret = qedi_abi_take(&sample_abi, &full, newer, &err);
    is_u64(ret, (uint64_t)-EINVAL, "... with an unknown option set: EINVAL");
    snprintf(want, sizeof(want), "size %zu ", size);
    has_substr(err.message, want, "... naming size and its value");
    snprintf(want, sizeof(want), "byte %zu ", sizeof(struct sample) + 3);
    has_substr(err.message, want, "... and the first byte set");

    size = (size_t)1 << 40;
    memcpy(newer, &size, sizeof(size));
    ret = qedi_abi_take(&sample_abi, &full, newer, &err);
    is_u64(ret, (uint64_t)-EINVAL, "a size far past any struct's (garbage) "
           "fails without looking at that memory");
    free(newer);
}

static void test_give_to_older_program(void)
{
    struct sample_v1 *old = alloc_exact(sizeof(*old), 0xee);
    struct sample full = { .size = sizeof(full), .first_field = 3,
                           .added_later = 42 };

    if (!old)
        return;
    old->size = sizeof(*old);
    ok(qedi_abi_check_out(&sample_abi, old, NULL) == 0,
       "an older program's result struct is accepted");
    qedi_abi_give(&sample_abi, old, &full);
    ok(old->first_field == 3 && old->size == sizeof(*old),
       "... it gets the results it has room for, its size untouched "
       "(nothing is written past it: ASan would tell)");
    free(old);
}

static void test_give_to_newer_program(void)
{
    size_t big = sizeof(struct sample) + 24;
    unsigned char *newer = alloc_exact(big, 0xee);
    struct sample full = { .size = sizeof(full), .first_field = 3,
                           .added_later = 42 };
    bool tail_zero = true;

    if (!newer)
        return;
    memcpy(newer, &big, sizeof(big));
    qedi_abi_give(&sample_abi, newer, &full);
    for (size_t i = sizeof(struct sample); i < big; i++)
        tail_zero = tail_zero && newer[i] == 0;
    ok(tail_zero, "a newer program's results past what the library knows "
       "are zeroed");
    ok(((struct sample *)newer)->added_later == 42,
       "... and the known ones are filled");
    free(newer);
}

static void test_check_out(void)
{
    struct sample_v1 unset = { 0 };
    qed_error err = { 0 };

    is_u64(qedi_abi_check_out(&sample_abi, &unset, &err), (uint64_t)-EINVAL,
           "a result struct with size 0 is refused");
    has_substr(err.message, "size 0 ", "... naming size and its value");
    is_u64(qedi_abi_check_out(&sample_abi, NULL, &err), (uint64_t)-EINVAL,
           "no result struct (NULL) is refused");
}

/* ---- the public calls ---------------------------------------------------------- */

static char dir[256];

static void test_init_functions(void)
{
    struct qed_open_options o;
    struct qed_image_info *info = malloc(sizeof(*info));
    struct qed_convert_options cv;

    memset(&o, 0xff, sizeof(o));
    qed_open_options_init(&o);
    ok(o.size == sizeof(o) && o.flags == 0 && o.loop == NULL &&
           o.l2_cache_bytes == 0 && o.locking == QED_LOCK_AUTO,
       "qed_open_options_init: size set, every option at its default");
    memset(&cv, 0xff, sizeof(cv));
    qed_convert_options_init(&cv);
    ok(cv.size == sizeof(cv) && cv.create == NULL && cv.op == NULL &&
           cv.format == QED_FORMAT_PROBE,
       "qed_convert_options_init: size set, no create or op options");
    if (info) {
        memset(info, 0xff, sizeof(*info));
        qed_image_info_init(info);
        ok(info->size == sizeof(*info) && info->virtual_size == 0 &&
               info->filename[0] == '\0',
           "qed_image_info_init: size set, the rest zero");
    }
    free(info);
}

/* An image opened as an older program would: options exactly the first
 * version's bytes long. */
static void test_open(const char *path)
{
    size_t first = qedi_abi_open_options.first;
    struct qed_open_options *o = alloc_exact(first, 0);
    unsigned char *big = alloc_exact(sizeof(struct qed_open_options) + 8, 0);
    size_t big_size = sizeof(struct qed_open_options) + 8;
    qed_image *img = NULL;
    qed_error err = { 0 };
    int ret;

    if (!o || !big)
        goto out;
    o->size = first;
    o->flags = QED_OPEN_RDWR;
    ret = qed_open(path, o, &img, &err);
    ok(ret == 0, "qed_open: options of the first version's size (%zu) work",
       first);
    if (img)
        ok(qed_pwrite(img, "x", 1, 0, &err) == 0,
           "... the flags in them are used (opened read-write)");
    qed_close(img, NULL);
    img = NULL;

    o->size = 0;
    ret = qed_open(path, o, &img, &err);
    is_u64(ret, (uint64_t)-EINVAL, "qed_open: options with size 0 fail with "
           "EINVAL");
    ok(img == NULL && err.code == EINVAL, "... no image, err.code EINVAL");
    has_substr(err.message, "struct qed_open_options: size 0 ",
               "... the message names the struct, size and its value");

    memcpy(big, &big_size, sizeof(big_size));
    ret = qed_open(path, (struct qed_open_options *)big, &img, &err);
    ok(ret == 0, "qed_open: a newer program's options, unknown part zero");
    qed_close(img, NULL);
    img = NULL;
    big[big_size - 1] = 1;
    ret = qed_open(path, (struct qed_open_options *)big, &img, &err);
    is_u64(ret, (uint64_t)-EINVAL, "... an unknown option set: EINVAL");
    has_substr(err.message, "size ", "... naming size");
out:
    free(o);
    free(big);
}

static void test_create(const char *path)
{
    struct qed_create_options co = { .virtual_size = MiB };
    qed_error err = { 0 };

    is_u64(qed_create(path, &co, &err), (uint64_t)-EINVAL,
           "qed_create: options with size 0 fail with EINVAL");
    has_substr(err.message, "struct qed_create_options: size 0 ",
               "... naming the struct, size and its value");
    ok(access(path, F_OK) != 0, "... and no file is made");
    co.size = sizeof(co);
    ok(qed_create(path, &co, &err) == 0, "qed_create: size set, it works");
}

static void test_results(const char *path)
{
    size_t first = qedi_abi_image_info.first;
    struct qed_image_info *info = alloc_exact(first, 0xee);
    struct qed_check_result cr = { 0 };
    struct qed_compare_result cmp = { 0 };
    struct qed_compact_result cp = { 0 };
    struct qed_block_status st = { 0 };
    struct qed_open_options o = { .size = sizeof(o), .flags = QED_OPEN_RDWR };
    qed_image *img = NULL;
    qed_error err = { 0 };

    if (!info || qed_open(path, &o, &img, &err) < 0) {
        ok(0, "open %s: %s", path, err.message);
        free(info);
        return;
    }
    info->size = 0;
    is_u64(qed_get_info(img, info, &err), (uint64_t)-EINVAL,
           "qed_get_info: size 0 fails with EINVAL");
    has_substr(err.message, "struct qed_image_info: size 0 ",
               "... naming the struct, size and its value");
    info->size = first;
    ok(qed_get_info(img, info, &err) == 0 && info->virtual_size == MiB &&
           info->size == first,
       "qed_get_info into a struct of the first version's size (%zu): "
       "filled, nothing written past it", first);

    is_u64(qed_check(img, 0, &cr, &err), (uint64_t)-EINVAL,
           "qed_check: a result with size 0 fails with EINVAL");
    has_substr(err.message, "struct qed_check_result: size 0 ", "... naming it");
    cr.size = sizeof(cr);
    ok(qed_check(img, 0, &cr, &err) == 0 && cr.total_clusters == 16,
       "qed_check: size set, it works");

    is_u64(qed_compare(img, img, NULL, &cmp, &err), (uint64_t)-EINVAL,
           "qed_compare: a result with size 0 fails with EINVAL");
    has_substr(err.message, "struct qed_compare_result: size 0 ",
               "... naming it");
    is_u64(qed_compact(img, &cp, &err), (uint64_t)-EINVAL,
           "qed_compact: a result with size 0 fails with EINVAL");
    has_substr(err.message, "struct qed_compact_result: size 0 ",
               "... naming it");

    is_u64(qed_block_status(img, 0, 4096, &st, &err), (uint64_t)-EINVAL,
           "qed_block_status: size 0 fails with EINVAL");
    has_substr(err.message, "struct qed_block_status: size 0 ",
               "... naming it");
    is_u64(qed_aio_block_status(img, 0, 4096, &st, NULL, NULL),
           (uint64_t)-EINVAL, "qed_aio_block_status: size 0: -EINVAL, "
           "nothing submitted");
    st.size = sizeof(st);
    ok(qed_block_status(img, 0, 4096, &st, &err) == 0 && st.length == 4096 &&
           st.size == sizeof(st),
       "qed_block_status: size set, it works and keeps it");
    qed_close(img, NULL);
    free(info);
}

static void test_operations(const char *path)
{
    struct qed_create_options co = { 0 };
    struct qed_op_options op = { 0 };
    struct qed_convert_options cv = { .size = sizeof(cv),
                                      .format = QED_FORMAT_QED };
    struct qed_commit_options cm = { 0 };
    qed_image *img = NULL;
    qed_error err = { 0 };

    if (qed_open(path, NULL, &img, &err) < 0) {
        ok(0, "open %s: %s", path, err.message);
        return;
    }
    cv.create = &co;
    is_u64(qed_convert(img, support_path(dir, "out.qed"), &cv, &err),
           (uint64_t)-EINVAL, "qed_convert: create options with size 0 fail");
    has_substr(err.message, "struct qed_create_options: size 0 ",
               "... naming them");
    co.size = sizeof(co);
    cv.op = &op;
    is_u64(qed_convert(img, support_path(dir, "out.qed"), &cv, &err),
           (uint64_t)-EINVAL, "qed_convert: op options with size 0 fail");
    has_substr(err.message, "struct qed_op_options: size 0 ",
               "... naming them");
    op.size = sizeof(op);
    ok(qed_convert(img, support_path(dir, "out.qed"), &cv, &err) == 0,
       "qed_convert: every size set, it works");
    cv.size = 3;
    is_u64(qed_convert(img, support_path(dir, "out2.qed"), &cv, &err),
           (uint64_t)-EINVAL, "qed_convert: its own options with size 3 fail");
    has_substr(err.message, "struct qed_convert_options: size 3 ",
               "... naming them");
    qed_close(img, NULL);
    is_u64(qed_commit(path, &cm, &err), (uint64_t)-EINVAL,
           "qed_commit: options with size 0 fail");
    has_substr(err.message, "struct qed_commit_options: size 0 ",
               "... naming them");
}

int main(void)
{
    test_take_from_older_program();
    test_take_null_is_defaults();
    test_take_bad_sizes();
    test_give_to_older_program();
    test_give_to_newer_program();
    test_check_out();
    test_init_functions();
    if (support_mkdtemp("abi", dir, sizeof(dir)) < 0) {
        ok(0, "make a temporary directory");
        return tap_done();
    }
    test_create(support_path(dir, "a.qed"));
    test_open(support_path(dir, "a.qed"));
    test_results(support_path(dir, "a.qed"));
    test_operations(support_path(dir, "a.qed"));
    support_rmtree(dir);
    return tap_done();
}
