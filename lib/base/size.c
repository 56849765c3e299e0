/* SPDX-License-Identifier: MIT */
/* Size arguments as qemu-img and qemu-io parse them: "512", "64k", "1.5G",
 * "10b", "0x1000". */
#include <ctype.h>
#include <errno.h>

#include "util.h"

/* Longest part of the text quoted back in an error message. */
#define QUOTE_MAX 64
/* Fraction digits that take part in the value: 10^20 * 2^60 still fits in
 * 128 bits, and later digits move the result by under 2^60 / 10^20 (about
 * a hundredth of a byte). */
#define FRACTION_DIGITS_MAX 20

/* Binary exponent for a unit suffix ("b" for bytes, then KMGTPE), or -1
 * when c is not one.  Either case is accepted, as qemu-img does. */
static int suffix_shift(char c)
{
    static const char units[] = "BKMGTPE";
    const char *p;

    c = (char)toupper((unsigned char)c);
    p = c ? strchr(units, c) : NULL;
    return p ? 10 * (int)(p - units) : -1;
}

static int invalid(const char *text, qed_error *err)
{
    return qedi_fail(err, EINVAL, "invalid size '%.*s'", QUOTE_MAX, text);
}

static int too_large(const char *text, qed_error *err)
{
    return qedi_fail(err, ERANGE,
                    "size '%.*s' is too large (the largest is %llu bytes)",
                    QUOTE_MAX, text, (unsigned long long)UINT64_MAX);
}

/* The parts of a size, split before any arithmetic so that garbage is
 * always EINVAL, even when its digits alone would overflow. */
struct size_syntax {
    const char *digits;      /* integral digits */
    size_t ndigits;
    bool hex;                /* "0x" prefix: digits are hexadecimal */
    const char *fraction;    /* digits after '.', or NULL without a '.' */
    size_t nfraction;
    int shift;               /* suffix exponent, 0 without a suffix */
};

static size_t span_digits(const char *p, bool hex)
{
    size_t n = 0;

    while (hex ? isxdigit((unsigned char)p[n]) : isdigit((unsigned char)p[n]))
        n++;
    return n;
}

/* Leading white space and '+' are allowed (strtoull's syntax, which qemu
 * builds on); a sign '-' never is.  Hexadecimal has no fraction; a
 * fraction with any non-zero digit needs a multiplier suffix ("1.5" and
 * "1.5b" are refused, "1.0" and "1.k" are fine). */
static bool split_size(const char *text, struct size_syntax *s)
{
    const char *p = text;

    *s = (struct size_syntax){0};
    while (isspace((unsigned char)*p))
        p++;
    if (*p == '+')
        p++;
    if (p[0] == '0' && (p[1] == 'x' || p[1] == 'X') &&
        isxdigit((unsigned char)p[2])) {
        s->hex = true;
        p += 2;
    }
    s->digits = p;
    s->ndigits = span_digits(p, s->hex);
    if (s->ndigits == 0)
        return false;
    p += s->ndigits;
    if (*p == '.' && !s->hex) {
        s->fraction = ++p;
        s->nfraction = span_digits(p, false);
        p += s->nfraction;
    }
    if (*p) {
        s->shift = suffix_shift(*p);
        if (s->shift < 0 || p[1] != '\0')
            return false;
    }
    for (size_t i = 0; s->fraction && i < s->nfraction; i++)
        if (s->fraction[i] != '0' && s->shift == 0)
            return false;
    return true;
}

/* round(0.DIGITS * 2^shift), half up, from at most FRACTION_DIGITS_MAX
 * digits: exact in 128-bit arithmetic. */
static uint64_t fraction_bytes(const char *digits, size_t n, int shift)
{
    unsigned __int128 num = 0, den = 1;

    if (n > FRACTION_DIGITS_MAX)
        n = FRACTION_DIGITS_MAX;
    for (size_t i = 0; i < n; i++) {
        num = num * 10 + (unsigned)(digits[i] - '0');
        den *= 10;
    }
    return (uint64_t)(((num << shift) + den / 2) / den);
}

int qed_parse_size(const char *text, uint64_t *out, qed_error *err)
{
    struct size_syntax s;
    unsigned base;
    uint64_t value = 0, extra;

    if (!text)
        return qedi_fail(err, EINVAL, "invalid size: none given");
    if (!split_size(text, &s))
        return invalid(text, err);
    base = s.hex ? 16 : 10;
    for (size_t i = 0; i < s.ndigits; i++) {
        int c = tolower((unsigned char)s.digits[i]);
        unsigned digit = (unsigned)(isdigit(c) ? c - '0' : c - 'a' + 10);
        if (value > (UINT64_MAX - digit) / base)
            return too_large(text, err);
        value = value * base + digit;
    }
    if (value > (UINT64_MAX >> s.shift))
        return too_large(text, err);
    value <<= s.shift;
    extra = s.fraction ? fraction_bytes(s.fraction, s.nfraction, s.shift) : 0;
    if (extra > UINT64_MAX - value)
        return too_large(text, err);
    *out = value + extra;
    return 0;
}
