/* SPDX-License-Identifier: MIT */
/* The size field of the public structs (qed.h, "growable structs"): each
 * struct a program fills or receives starts with size_t size, the sizeof
 * the program was compiled with, so that the struct grows at its end from
 * one release to the next without breaking programs built against an
 * older qed.h.  Public entry points take a program's options into a full
 * struct of their own (qedi_abi_take) and hand results back through one
 * (qedi_abi_give); nothing else of the library looks at size. */
#ifndef QED_LIB_ABI_H
#define QED_LIB_ABI_H

#include "util.h"

/* What the library knows of one public struct. */
struct abi_struct {
    const char *name;  /* "qed_open_options" */
    size_t first;      /* the end of its first version's last field: the
                          least size a program may pass */
    size_t known;      /* sizeof as this library was built */
};

/* The first version of struct type ends with field last: that line stays
 * as it is when fields are added after last. */
#define ABI_STRUCT(type, last)                                                \
    {                                                                         \
        #type, offsetof(struct type, last) + sizeof(((struct type *)0)->last), \
        sizeof(struct type)                                                   \
    }

/* Does the program's struct (its size) hold field?  Results added in a
 * later version are written only when it does. */
#define ABI_HAS(ptr, type, field)                                             \
    ((ptr)->size >= offsetof(struct type, field) + sizeof((ptr)->field))

extern const struct abi_struct qedi_abi_open_options;
extern const struct abi_struct qedi_abi_create_options;
extern const struct abi_struct qedi_abi_image_info;
extern const struct abi_struct qedi_abi_block_status;
extern const struct abi_struct qedi_abi_check_result;
extern const struct abi_struct qedi_abi_op_options;
extern const struct abi_struct qedi_abi_convert_options;
extern const struct abi_struct qedi_abi_compare_result;
extern const struct abi_struct qedi_abi_commit_options;
extern const struct abi_struct qedi_abi_compact_result;

/* Options: copies the program's struct given (NULL: none) over full, which
 * holds the defaults, so that the options past the program's size keep
 * them, and sets full's size to what the library knows.  EINVAL, err
 * naming the struct, size and its value: a size below the first version's,
 * or above what the library knows with a byte past that set (an option of
 * a later release this library cannot honour). */
int qedi_abi_take(const struct abi_struct *t, void *full, const void *given,
             qed_error *err);
/* Results: is the size the program set in given acceptable (EINVAL with
 * err, as qedi_abi_take, or for given NULL)? */
int qedi_abi_check_out(const struct abi_struct *t, const void *given,
                  qed_error *err);
/* Results: copies full (the library's struct) into given, up to given's
 * size and leaving its size field alone; bytes of given past what the
 * library knows (results of a later release) are zeroed.  given passed
 * qedi_abi_check_out. */
void qedi_abi_give(const struct abi_struct *t, void *given, const void *full);
/* Results: zeroes given (which passed qedi_abi_check_out) but its size field, as
 * far as the program's size and the library's knowledge reach. */
void qedi_abi_clear(const struct abi_struct *t, void *given);

#endif
