/* SPDX-License-Identifier: MIT */
/* qed_parse_size: accepted forms (those of qemu-img), suffixes, overflow and
 * garbage. */
#include <errno.h>

#include "qed.h"
#include "../tap.h"

static void check_value(const char *text, uint64_t want)
{
    qed_error err = { 0 };
    uint64_t got = 0xdeadbeef;
    int ret = qed_parse_size(text, &got, &err);

    is_u64(ret, 0, "'%s' parses", text);
    is_u64(got, want, "'%s' is %" PRIu64, text, want);
    is_u64(err.code, 0, "'%s' leaves the error empty", text);
}

/* Checks the code, that *out is untouched and that the text is quoted. */
static void check_error(const char *text, int code, const char *substr)
{
    qed_error err = { 0 };
    uint64_t got = 12345;
    int ret = qed_parse_size(text, &got, &err);

    is_u64(ret, (uint64_t)-code, "'%s' fails with -%s", text,
           code == EINVAL ? "EINVAL" : "ERANGE");
    is_u64(err.code, code, "'%s' sets err.code", text);
    has_substr(err.message, substr, "'%s' message: %s", text, err.message);
    is_u64(got, 12345, "'%s' leaves the output untouched", text);
}

static void test_plain_numbers(void)
{
    check_value("0", 0);
    check_value("1", 1);
    check_value("512", 512);
    check_value("007", 7);
    check_value("1073741824", UINT64_C(1) << 30);
    check_value("18446744073709551615", UINT64_MAX);
}

static void test_suffixes(void)
{
    check_value("64k", 64 * 1024);
    check_value("64K", 64 * 1024);
    check_value("1M", UINT64_C(1) << 20);
    check_value("1G", UINT64_C(1) << 30);
    check_value("10G", UINT64_C(10) << 30);
    check_value("1T", UINT64_C(1) << 40);
    check_value("1P", UINT64_C(1) << 50);
    check_value("1E", UINT64_C(1) << 60);
    check_value("15E", UINT64_C(15) << 60);
    check_value("0k", 0);
    check_value("0E", 0);
    check_value("16383P", UINT64_C(16383) << 50);
}

/* What qemu-img 7.2 accepts beyond plain numbers (its sizes are the
 * oracle: tests/interop/sizes-match-qemu.sh compares them directly). */
static void test_qemu_forms(void)
{
    check_value("10b", 10);
    check_value("10B", 10);
    check_value("1.5G", UINT64_C(3) << 29);
    check_value("1.5k", 1536);
    check_value("1.k", 1024);
    check_value("1.0", 1);
    check_value("1.", 1);
    check_value("1.0b", 1);
    check_value("0.3k", 307);            /* 307.2 rounds to the nearest */
    check_value("12.345M", 12944671);    /* 12944670.72 */
    check_value("0.00048828125k", 1);    /* exactly half a byte: up */
    check_value("0.00146484375k", 2);    /* 1.5 bytes */
    check_value("0.0000000001k", 0);
    check_value("1.5e", UINT64_C(3) << 59);  /* e is exa, not an exponent */
    check_value("0x1000", 4096);
    check_value("0X10", 16);
    check_value("0x1E", 30);             /* E is a hex digit after 0x */
    check_value("0x10b", 267);
    check_value("0x10k", 16384);
    check_value("0xffffffffffffffff", UINT64_MAX);
    check_value("08", 8);                /* decimal, not octal */
    check_value("+1", 1);
    check_value(" 1", 1);
    check_value("\t64k", 65536);
}

static void test_qemu_refusals(void)
{
    check_error("1.5", EINVAL, "invalid size '1.5'");
    check_error("0.5", EINVAL, "invalid size '0.5'");
    check_error("1.5b", EINVAL, "invalid size '1.5b'");
    check_error(".5k", EINVAL, "invalid size '.5k'");
    check_error("1.5.5", EINVAL, "invalid size '1.5.5'");
    check_error("1e3", EINVAL, "invalid size '1e3'");
    check_error("1.k5", EINVAL, "invalid size '1.k5'");
    check_error("0x", EINVAL, "invalid size '0x'");
    check_error("0xk", EINVAL, "invalid size '0xk'");
    check_error("0x1.8", EINVAL, "invalid size '0x1.8'");
    check_error("00x10", EINVAL, "invalid size '00x10'");
    check_error("0x0x1", EINVAL, "invalid size '0x0x1'");
    check_error("10kB", EINVAL, "invalid size '10kB'");
    check_error("+-1", EINVAL, "invalid size '+-1'");
    check_error("0x10000000000000000", ERANGE, "too large");
    check_error("0x1000000000000000k", ERANGE, "too large");
    check_error("15.99999999999999999999E", ERANGE, "too large");
}

static void test_overflow(void)
{
    check_error("16E", ERANGE, "'16E'");
    check_error("16384P", ERANGE, "too large");
    check_error("17179869184G", ERANGE, "too large");
    check_error("18446744073709551616", ERANGE, "'18446744073709551616'");
    check_error("99999999999999999999999999", ERANGE, "too large");
    check_error("18014398509481984k", ERANGE, "too large");
}

static void test_garbage(void)
{
    check_error("", EINVAL, "invalid size ''");
    check_error("k", EINVAL, "invalid size 'k'");
    check_error("abc", EINVAL, "invalid size 'abc'");
    check_error("12x", EINVAL, "invalid size '12x'");
    check_error("-1", EINVAL, "invalid size '-1'");
    check_error("-0", EINVAL, "invalid size '-0'");
    check_error("1 ", EINVAL, "invalid size '1 '");
    check_error("1 k", EINVAL, "invalid size '1 k'");
    check_error("1.5 k", EINVAL, "invalid size '1.5 k'");
    check_error("1kk", EINVAL, "invalid size '1kk'");
    check_error("1KiB", EINVAL, "invalid size '1KiB'");
    check_error("1Z", EINVAL, "invalid size '1Z'");
    /* Syntax is checked before overflow: garbage is never ERANGE. */
    check_error("99999999999999999999999x", EINVAL, "invalid size");
}

static void test_null_and_no_err(void)
{
    uint64_t got = 7;
    qed_error err = { 0 };

    is_u64(qed_parse_size(NULL, &got, &err), (uint64_t)-EINVAL,
           "NULL text fails with -EINVAL");
    is_u64(got, 7, "NULL text leaves the output untouched");
    is_u64(qed_parse_size("12x", &got, NULL), (uint64_t)-EINVAL,
           "garbage without an error object still fails");
    is_u64(qed_parse_size("4k", &got, NULL), 0,
           "success without an error object");
    is_u64(got, 4096, "'4k' without an error object is 4096");
}

int main(void)
{
    test_plain_numbers();
    test_suffixes();
    test_qemu_forms();
    test_qemu_refusals();
    test_overflow();
    test_garbage();
    test_null_and_no_err();
    return tap_done();
}
