/* SPDX-License-Identifier: MIT */
/* The size field of the public structs: which sizes are accepted, and how
 * options and results cross between a program's struct and the library's
 * (see abi.h).  The table below names, for every growable struct, the last
 * field of its first version (2.0): fields added later go after it. */
#include <errno.h>

#include "abi.h"

const struct abi_struct qedi_abi_open_options = ABI_STRUCT(qed_open_options, locking);
const struct abi_struct qedi_abi_create_options =
    ABI_STRUCT(qed_create_options, locking);
const struct abi_struct qedi_abi_image_info =
    ABI_STRUCT(qed_image_info, backing_format);
const struct abi_struct qedi_abi_block_status = ABI_STRUCT(qed_block_status, offset);
const struct abi_struct qedi_abi_check_result =
    ABI_STRUCT(qed_check_result, image_end_offset);
const struct abi_struct qedi_abi_op_options =
    ABI_STRUCT(qed_op_options, progress_opaque);
const struct abi_struct qedi_abi_convert_options =
    ABI_STRUCT(qed_convert_options, warning_opaque);
const struct abi_struct qedi_abi_compare_result =
    ABI_STRUCT(qed_compare_result, size_b);
const struct abi_struct qedi_abi_commit_options =
    ABI_STRUCT(qed_commit_options, locking);
const struct abi_struct qedi_abi_compact_result =
    ABI_STRUCT(qed_compact_result, size_after);

/* A size this far past what the library knows is no struct's: size was
 * left unset.  Bounds how much of the program's memory is looked at. */
#define ABI_MAX_GROWTH 65536u

static size_t size_of(const void *given)
{
    size_t size;
    memcpy(&size, given, sizeof(size));
    return size;
}

static int check_size(const struct abi_struct *t, size_t size, qed_error *err)
{
    if (size < t->first)
        return qedi_fail(err, EINVAL, "struct %s: size %zu is less than the "
                        "%zu bytes of its first version: set size to "
                        "sizeof(struct %s) (%s_init)", t->name, size,
                        t->first, t->name, t->name);
    if (size > t->known && size - t->known > ABI_MAX_GROWTH)
        return qedi_fail(err, EINVAL, "struct %s: size %zu is far more than "
                        "the %zu bytes this libqed knows: size was not set "
                        "(%s_init)", t->name, size, t->known, t->name);
    return 0;
}

int qedi_abi_take(const struct abi_struct *t, void *full, const void *given,
             qed_error *err)
{
    size_t size, known = t->known;
    const unsigned char *tail;
    int ret;

    memcpy(full, &known, sizeof(known));
    if (!given)
        return 0;
    size = size_of(given);
    ret = check_size(t, size, err);
    if (ret < 0)
        return ret;
    tail = (const unsigned char *)given + known;
    for (size_t i = 0; size > known && i < size - known; i++)
        if (tail[i])
            return qedi_fail(err, EINVAL, "struct %s: size %zu is more than "
                            "the %zu bytes this libqed knows, and byte %zu "
                            "is set: an option of a later libqed",
                            t->name, size, known, known + i);
    memcpy(full, given, QED_MIN(size, known));
    memcpy(full, &known, sizeof(known));
    return 0;
}

int qedi_abi_check_out(const struct abi_struct *t, const void *given,
                  qed_error *err)
{
    if (!given)
        return qedi_fail(err, EINVAL, "no struct %s given (NULL)", t->name);
    return check_size(t, size_of(given), err);
}

void qedi_abi_give(const struct abi_struct *t, void *given, const void *full)
{
    size_t size = size_of(given), known = t->known;
    size_t head = sizeof(size);

    memcpy((char *)given + head, (const char *)full + head,
           QED_MIN(size, known) - head);
    if (size > known)
        memset((char *)given + known, 0, size - known);
}

void qedi_abi_clear(const struct abi_struct *t, void *given)
{
    size_t head = sizeof(size_t);

    memset((char *)given + head, 0, QED_MIN(size_of(given), t->known) - head);
}
