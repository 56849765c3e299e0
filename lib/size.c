/* Size arguments such as "512", "64k" or "10G". */
#include <errno.h>

#include "util.h"

/* Longest part of the text quoted back in an error message. */
#define QUOTE_MAX 64

/* Binary exponent for a unit suffix, or -1 when c is not one.  Lower case is
 * accepted too, as qemu-img does. */
static int suffix_shift(char c)
{
    static const char units[] = "KMGTPE";
    const char *p;

    if (c >= 'a' && c <= 'z')
        c = (char)(c - 'a' + 'A');
    p = c ? strchr(units, c) : NULL;
    return p ? 10 * (int)(p - units + 1) : -1;
}

static int invalid(const char *text, qed_error *err)
{
    return qed_fail(err, EINVAL, "invalid size '%.*s'", QUOTE_MAX, text);
}

static int too_large(const char *text, qed_error *err)
{
    return qed_fail(err, ERANGE,
                    "size '%.*s' is too large (the largest is %llu bytes)",
                    QUOTE_MAX, text, (unsigned long long)UINT64_MAX);
}

int qed_parse_size(const char *text, uint64_t *out, qed_error *err)
{
    const char *end = text;
    uint64_t value = 0;
    int shift = 0;

    if (!text)
        return qed_fail(err, EINVAL, "invalid size: none given");
    /* strtoull would accept signs, spaces and hex: parse by hand instead.
     * Check the whole syntax first so garbage is EINVAL even when the
     * digits alone would overflow. */
    while (*end >= '0' && *end <= '9')
        end++;
    if (end == text)
        return invalid(text, err);
    if (*end) {
        shift = suffix_shift(*end);
        if (shift < 0 || end[1] != '\0')
            return invalid(text, err);
    }
    for (const char *p = text; p < end; p++) {
        unsigned digit = (unsigned)(*p - '0');
        if (value > (UINT64_MAX - digit) / 10)
            return too_large(text, err);
        value = value * 10 + digit;
    }
    if (value > (UINT64_MAX >> shift))
        return too_large(text, err);
    *out = value << shift;
    return 0;
}
