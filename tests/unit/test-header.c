/* SPDX-License-Identifier: MIT */
/* The QED header: byte layout, every validation rule on both sides of its
 * boundary, the maximum image size, backing names and new-image layout. */
#include <errno.h>

#include "header.h"
#include "util.h"
#include "../tap.h"

#define KiB (UINT64_C(1) << 10)
#define MiB (UINT64_C(1) << 20)
#define GiB (UINT64_C(1) << 30)
#define TiB (UINT64_C(1) << 40)

/* ---- helpers --------------------------------------------------------------- */

/* A header that passes validation: one header cluster, the L1 table right
 * after it, 1 GiB virtual size (addressable with every geometry). */
static struct qed_header good_header(uint32_t cluster_size, uint32_t table_size)
{
    struct qed_header h = { 0 };

    h.magic = QED_MAGIC;
    h.cluster_size = cluster_size;
    h.table_size = table_size;
    h.header_size = 1;
    h.l1_table_offset = cluster_size;
    h.image_size = GiB;
    return h;
}

/* The smallest file that holds the header and the L1 table. */
static uint64_t file_end(const struct qed_header *h)
{
    return h->l1_table_offset + (uint64_t)h->table_size * h->cluster_size;
}

static void check_accepted(const struct qed_header *h, uint64_t file_size,
                           const char *what)
{
    qed_error err = { 0 };
    int ret = qedi_header_validate(h, file_size, &err);

    if (!ok(ret == 0 && err.code == 0, "accepted: %s", what))
        tap_diag("ret %d, message: %s", ret, err.message);
}

/* Returns nothing but checks the return value, err.code and a message part. */
static void check_rejected(const struct qed_header *h, uint64_t file_size,
                           int code, const char *substr, const char *what)
{
    qed_error err = { 0 };
    int ret = qedi_header_validate(h, file_size, &err);

    is_u64(ret, (uint64_t)-code, "rejected with -%d: %s", code, what);
    is_u64(err.code, code, "err.code is %d: %s", code, what);
    has_substr(err.message, substr, "message has '%s': %s", substr, what);
}

/* Checks the whole message, for the messages whose wording is specified. */
static void check_message(const struct qed_header *h, uint64_t file_size,
                          const char *want, const char *what)
{
    qed_error err = { 0 };

    qedi_header_validate(h, file_size, &err);
    is_str(err.message, want, "exact message: %s", what);
}

static const uint32_t valid_cluster_sizes[] = {
    4096,      8192,      16384,    32768,    65536,    131072,   262144,
    524288,    1048576,   2097152,  4194304,  8388608,  16777216, 33554432,
    67108864,
};
static const uint32_t valid_table_sizes[] = { 1, 2, 4, 8, 16 };

/* ---- byte layout ----------------------------------------------------------- */

static struct qed_header distinct_header(void)
{
    struct qed_header h = {
        .magic = QED_MAGIC,
        .cluster_size = 0x11223344,
        .table_size = 0x55667788,
        .header_size = 0x99aabbcc,
        .features = UINT64_C(0x0102030405060708),
        .compat_features = UINT64_C(0x1112131415161718),
        .autoclear_features = UINT64_C(0x2122232425262728),
        .l1_table_offset = UINT64_C(0x3132333435363738),
        .image_size = UINT64_C(0x4142434445464748),
        .backing_filename_offset = 0x51525354,
        .backing_filename_size = 0x61626364,
    };
    return h;
}

static void test_encode_layout(void)
{
    struct qed_header h = distinct_header();
    uint8_t buf[QED_HEADER_BYTES + 8];

    memset(buf, 0xee, sizeof(buf));
    qedi_header_encode(&h, buf);
    ok(memcmp(buf, "QED\0", 4) == 0, "magic is stored as the bytes 'QED\\0'");
    is_u64(load_le32(buf + 0), QED_MAGIC, "magic at byte 0");
    is_u64(load_le32(buf + 4), h.cluster_size, "cluster_size at byte 4");
    is_u64(load_le32(buf + 8), h.table_size, "table_size at byte 8");
    is_u64(load_le32(buf + 12), h.header_size, "header_size at byte 12");
    is_u64(load_le64(buf + 16), h.features, "features at byte 16");
    is_u64(load_le64(buf + 24), h.compat_features,
           "compat_features at byte 24");
    is_u64(load_le64(buf + 32), h.autoclear_features,
           "autoclear_features at byte 32");
    is_u64(load_le64(buf + 40), h.l1_table_offset,
           "l1_table_offset at byte 40");
    is_u64(load_le64(buf + 48), h.image_size, "image_size at byte 48");
    is_u64(load_le32(buf + 56), h.backing_filename_offset,
           "backing_filename_offset at byte 56");
    is_u64(load_le32(buf + 60), h.backing_filename_size,
           "backing_filename_size at byte 60");
    is_u64(buf[4], 0x44, "cluster_size is little-endian (low byte first)");
    is_u64(buf[23], 0x01, "features is little-endian (high byte last)");
    ok(buf[QED_HEADER_BYTES] == 0xee &&
           buf[QED_HEADER_BYTES + 7] == 0xee,
       "encode writes nothing past byte 64");
}

static void test_decode_layout(void)
{
    uint8_t buf[QED_HEADER_BYTES];
    struct qed_header h;

    for (unsigned i = 0; i < sizeof(buf); i++)
        buf[i] = (uint8_t)i;
    qedi_header_decode(buf, &h);
    is_u64(h.magic, 0x03020100, "decode magic from bytes 0-3");
    is_u64(h.cluster_size, 0x07060504, "decode cluster_size from bytes 4-7");
    is_u64(h.table_size, 0x0b0a0908, "decode table_size from bytes 8-11");
    is_u64(h.header_size, 0x0f0e0d0c, "decode header_size from bytes 12-15");
    is_u64(h.features, UINT64_C(0x1716151413121110),
           "decode features from bytes 16-23");
    is_u64(h.compat_features, UINT64_C(0x1f1e1d1c1b1a1918),
           "decode compat_features from bytes 24-31");
    is_u64(h.autoclear_features, UINT64_C(0x2726252423222120),
           "decode autoclear_features from bytes 32-39");
    is_u64(h.l1_table_offset, UINT64_C(0x2f2e2d2c2b2a2928),
           "decode l1_table_offset from bytes 40-47");
    is_u64(h.image_size, UINT64_C(0x3736353433323130),
           "decode image_size from bytes 48-55");
    is_u64(h.backing_filename_offset, 0x3b3a3938,
           "decode backing_filename_offset from bytes 56-59");
    is_u64(h.backing_filename_size, 0x3f3e3d3c,
           "decode backing_filename_size from bytes 60-63");
}

static void test_round_trip(void)
{
    struct qed_header in = distinct_header(), out;
    struct qed_header ones, ones_out;
    uint8_t buf[QED_HEADER_BYTES], buf2[QED_HEADER_BYTES];

    qedi_header_encode(&in, buf);
    memset(&out, 0, sizeof(out));
    qedi_header_decode(buf, &out);
    ok(memcmp(&in, &out, sizeof(in)) == 0,
       "decode(encode(h)) == h for distinct field values");
    qedi_header_encode(&out, buf2);
    ok(memcmp(buf, buf2, sizeof(buf)) == 0,
       "encode(decode(bytes)) == bytes");

    memset(&ones, 0xff, sizeof(ones));
    qedi_header_encode(&ones, buf);
    qedi_header_decode(buf, &ones_out);
    ok(memcmp(&ones, &ones_out, sizeof(ones)) == 0,
       "round trip with every field all ones");

    in = good_header(65536, 4);
    qedi_header_encode(&in, buf);
    qedi_header_decode(buf, &out);
    ok(memcmp(&in, &out, sizeof(in)) == 0, "round trip of a valid header");
    check_accepted(&out, file_end(&out), "decoded valid header");
}

/* ---- cluster and table sizes ---------------------------------------------- */

static void test_size_predicates(void)
{
    static const struct {
        uint64_t size;
        bool valid;
    } cluster[] = {
        { 0, false },          { 1, false },
        { 2048, false },       { 4095, false },
        { 4096, true },        { 4097, false },
        { 6144, false },       { 8192, true },
        { 12288, false },      { 65536, true },
        { 64 * MiB - 1, false }, { 64 * MiB, true },
        { 64 * MiB + 4096, false }, { 128 * MiB, false },
        { UINT64_C(1) << 32, false }, { (UINT64_C(1) << 32) + 4096, false },
        { UINT64_MAX, false },
    };
    static const struct {
        uint64_t size;
        bool valid;
    } table[] = {
        { 0, false }, { 1, true },   { 2, true },   { 3, false },
        { 4, true },  { 8, true },   { 12, false }, { 16, true },
        { 17, false }, { 24, false }, { 32, false }, { UINT64_C(1) << 33, false },
    };

    for (size_t i = 0; i < QED_ARRAY_SIZE(cluster); i++)
        ok(qedi_header_cluster_size_valid(cluster[i].size) == cluster[i].valid,
           "cluster size %" PRIu64 " is %s", cluster[i].size,
           cluster[i].valid ? "valid" : "invalid");
    for (size_t i = 0; i < QED_ARRAY_SIZE(table); i++)
        ok(qedi_header_table_size_valid(table[i].size) == table[i].valid,
           "table size %" PRIu64 " is %s", table[i].size,
           table[i].valid ? "valid" : "invalid");
}

/* ---- maximum image size ---------------------------------------------------- */

/* min(2^(2*log2(entries) + log2(cluster_size)), UINT64_MAX), computed by
 * counting bits rather than the way header.c does it. */
static uint64_t expected_max(uint32_t cluster_size, uint32_t table_size)
{
    unsigned cs_bits = 0, ts_bits = 0;

    while ((UINT64_C(1) << cs_bits) < cluster_size)
        cs_bits++;
    while ((UINT64_C(1) << ts_bits) < table_size)
        ts_bits++;
    unsigned bits = 2 * (ts_bits + cs_bits - 3) + cs_bits;
    return bits >= 64 ? UINT64_MAX : UINT64_C(1) << bits;
}

static void test_max_image_size(void)
{
    for (size_t c = 0; c < QED_ARRAY_SIZE(valid_cluster_sizes); c++) {
        for (size_t t = 0; t < QED_ARRAY_SIZE(valid_table_sizes); t++) {
            uint32_t cs = valid_cluster_sizes[c], ts = valid_table_sizes[t];
            uint64_t got = qedi_header_max_image_size(cs, ts);

            ok(got != 0, "max image size nonzero for cluster %u table %u",
               cs, ts);
            is_u64(got, expected_max(cs, ts),
                   "max image size for cluster %u table %u", cs, ts);
        }
    }
    is_u64(qedi_header_max_image_size(65536, 4), UINT64_C(1) << 46,
           "64 KiB clusters, 4-cluster tables: 64 TiB (2^46)");
    is_u64(qedi_header_max_image_size(65536, 4), 64 * TiB,
           "64 KiB / 4 is 64 TiB");
    is_u64(qedi_header_max_image_size(4096, 1), GiB,
           "4 KiB clusters, 1-cluster tables: 1 GiB (2^30), the smallest");
    is_u64(qedi_header_max_image_size(4096, 16), UINT64_C(1) << 38,
           "4 KiB / 16: 2^38");
    is_u64(qedi_header_max_image_size(65536, 1), UINT64_C(1) << 42,
           "64 KiB / 1: 2^42");
    is_u64(qedi_header_max_image_size(8 * MiB, 1), UINT64_C(1) << 63,
           "8 MiB / 1: 2^63, the largest that does not saturate");
    is_u64(qedi_header_max_image_size(8 * MiB, 2), UINT64_MAX,
           "8 MiB / 2 (2^65) saturates");
    is_u64(qedi_header_max_image_size(16 * MiB, 1), UINT64_MAX,
           "16 MiB / 1 (2^66) saturates, QEMU's 32-bit sum wraps to 0");
    is_u64(qedi_header_max_image_size(16 * MiB, 16), UINT64_MAX,
           "16 MiB / 16 saturates instead of wrapping");
    is_u64(qedi_header_max_image_size(64 * MiB, 16), UINT64_MAX,
           "64 MiB / 16 (2^80) saturates");
}

/* ---- qedi_header_validate: magic and features ---------------------------------- */

static void test_magic(void)
{
    struct qed_header h = good_header(65536, 4);

    check_accepted(&h, file_end(&h), "default geometry");
    h.magic = 0x12345678;
    check_rejected(&h, file_end(&h), EINVAL, "not a QED image", "bad magic");
    check_message(&h, file_end(&h), "not a QED image (magic 0x12345678)",
                  "bad magic names the value");
    h.magic = 0;
    check_message(&h, file_end(&h), "not a QED image (magic 0x00000000)",
                  "zero magic printed with 8 digits");
    h.magic = QED_MAGIC + 1;
    check_rejected(&h, file_end(&h), EINVAL, "magic 0x00444552",
                   "magic off by one");
    h.features = 0x100;
    h.cluster_size = 3;
    check_rejected(&h, file_end(&h), EINVAL, "not a QED image",
                   "magic is checked before features and cluster size");
}

static void test_features(void)
{
    struct qed_header h = good_header(65536, 4);

    h.features = QED_F_NEED_CHECK;
    check_accepted(&h, file_end(&h), "NEED_CHECK feature");
    h.features = QED_F_NEED_CHECK | QED_F_BACKING_FORMAT_NO_PROBE;
    check_accepted(&h, file_end(&h), "NO_PROBE without BACKING_FILE");

    h.features = 0x101;
    check_rejected(&h, file_end(&h), ENOTSUP, "Unsupported", "features 0x101");
    check_message(&h, file_end(&h), "Unsupported QED features: 0x100",
                  "features 0x101 reports only the unknown bit 0x100");
    h.features = 0x8;
    check_message(&h, file_end(&h), "Unsupported QED features: 0x8",
                  "features 0x8, the first unknown bit");
    h.features = 0xf;
    check_message(&h, file_end(&h), "Unsupported QED features: 0x8",
                  "features 0xf reports 0x8");
    h.features = UINT64_C(1) << 63;
    check_message(&h, file_end(&h),
                  "Unsupported QED features: 0x8000000000000000",
                  "features bit 63");
    h.features = UINT64_MAX;
    check_message(&h, file_end(&h),
                  "Unsupported QED features: 0xfffffffffffffff8",
                  "all feature bits: known ones left out");
    h.features = 0x100;
    h.cluster_size = 1000;
    check_rejected(&h, file_end(&h), ENOTSUP, "Unsupported",
                   "features are checked before the cluster size");

    h = good_header(65536, 4);
    h.compat_features = UINT64_MAX;
    check_accepted(&h, file_end(&h), "unknown compat features are ignored");
    h.compat_features = 0;
    h.autoclear_features = UINT64_MAX;
    check_accepted(&h, file_end(&h),
                   "unknown autoclear features are left to the opener");
}

/* ---- qedi_header_validate: geometry -------------------------------------------- */

static void test_cluster_size(void)
{
    static const uint32_t bad[] = { 0, 512, 2048, 4095, 4097, 12288,
                                    64 * MiB - 4096, 128 * MiB, 0x80000000u,
                                    UINT32_MAX };
    struct qed_header h;

    for (size_t i = 0; i < QED_ARRAY_SIZE(valid_cluster_sizes); i++) {
        char what[64];

        h = good_header(valid_cluster_sizes[i], 4);
        snprintf(what, sizeof(what), "cluster size %u",
                 valid_cluster_sizes[i]);
        check_accepted(&h, file_end(&h), what);
    }
    for (size_t i = 0; i < QED_ARRAY_SIZE(bad); i++) {
        char want[128];

        h = good_header(65536, 4);
        h.cluster_size = bad[i];
        snprintf(want, sizeof(want),
                 "cluster size %u is not a power of two in [4096, 67108864]",
                 bad[i]);
        check_rejected(&h, UINT64_MAX, EINVAL, "cluster size",
                       "invalid cluster size");
        check_message(&h, UINT64_MAX, want, want);
    }
}

static void test_table_size(void)
{
    static const uint32_t bad[] = { 0, 3, 5, 12, 17, 32, 64, UINT32_MAX };
    struct qed_header h;

    for (size_t i = 0; i < QED_ARRAY_SIZE(valid_table_sizes); i++) {
        char what[64];

        h = good_header(65536, valid_table_sizes[i]);
        snprintf(what, sizeof(what), "table size %u", valid_table_sizes[i]);
        check_accepted(&h, file_end(&h), what);
    }
    for (size_t i = 0; i < QED_ARRAY_SIZE(bad); i++) {
        char want[128];

        h = good_header(65536, 4);
        h.table_size = bad[i];
        snprintf(want, sizeof(want),
                 "table size %u is not a power of two in [1, 16]", bad[i]);
        check_rejected(&h, UINT64_MAX, EINVAL, "table size",
                       "invalid table size");
        check_message(&h, UINT64_MAX, want, want);
    }
    h = good_header(65536, 3);
    h.header_size = 0;
    check_rejected(&h, UINT64_MAX, EINVAL, "table size 3",
                   "table size is checked before header size");
}

static void test_header_size(void)
{
    struct qed_header h = good_header(65536, 4);

    h.header_size = 0;
    check_rejected(&h, file_end(&h), EINVAL, "header size 0",
                   "header size 0");

    h = good_header(65536, 4);
    h.header_size = 2;
    check_rejected(&h, UINT64_MAX, EINVAL, "header size 2",
                   "2 header clusters with the L1 table at cluster 1");
    check_message(&h, UINT64_MAX,
                  "header size 2 (131072 bytes) overlaps the L1 table at "
                  "offset 65536",
                  "header/L1 overlap names both");
    h.l1_table_offset = 2 * 65536;
    check_accepted(&h, file_end(&h),
                   "2 header clusters with the L1 table at cluster 2");

    h = good_header(64 * MiB, 16);
    h.header_size = UINT32_MAX;
    check_rejected(&h, UINT64_MAX, EINVAL, "header size 4294967295",
                   "huge header size computed in 64 bits");
    h.l1_table_offset = (uint64_t)UINT32_MAX * 64 * MiB;
    h.image_size = 0;
    check_accepted(&h, UINT64_MAX,
                   "2^32-1 header clusters of 64 MiB: no 32-bit wrap");

    h = good_header(65536, 4);
    h.header_size = 0x10001; /* 32-bit product 0x100010000 wraps to 65536 */
    check_rejected(&h, UINT64_MAX, EINVAL, "header size 65537",
                   "header size whose 32-bit byte count would wrap");

    h = good_header(65536, 4);
    h.l1_table_offset = 0;
    check_rejected(&h, UINT64_MAX, EINVAL, "L1 table at offset 0",
                   "L1 table at offset 0, inside the header");
    h.l1_table_offset = 65536;
    h.header_size = 4;
    check_rejected(&h, UINT64_MAX, EINVAL, "overlaps the L1 table",
                   "L1 table in the last of 4 header clusters");
    h.l1_table_offset = 4 * 65536;
    check_accepted(&h, file_end(&h), "L1 table right after 4 header clusters");
    h.header_size = 0;
    h.image_size = 511;
    check_rejected(&h, UINT64_MAX, EINVAL, "header size 0",
                   "header size is checked before image size");
}

static void test_image_size(void)
{
    struct qed_header h = good_header(65536, 4);

    h.image_size = 0;
    check_accepted(&h, file_end(&h), "image size 0");
    h.image_size = 511;
    check_rejected(&h, file_end(&h), EINVAL,
                   "image size 511 is not a multiple of 512", "image size 511");
    h.image_size = 512;
    check_accepted(&h, file_end(&h), "image size 512");
    h.image_size = 513;
    check_rejected(&h, file_end(&h), EINVAL, "image size 513",
                   "image size 513");
    h.image_size = GiB + 256;
    check_rejected(&h, file_end(&h), EINVAL, "not a multiple of 512",
                   "image size 1 GiB + 256");

    h.image_size = 64 * TiB;
    check_accepted(&h, file_end(&h), "image size at the 64 KiB / 4 maximum");
    h.image_size = 64 * TiB + 512;
    check_rejected(&h, file_end(&h), EINVAL, "exceeds the maximum",
                   "image size one sector over the 64 KiB / 4 maximum");
    check_message(&h, file_end(&h),
                  "image size 70368744178176 exceeds the maximum "
                  "70368744177664 for cluster size 65536 and table size 4",
                  "max image size message gives maximum and geometry");

    h = good_header(4096, 1);
    h.image_size = GiB;
    check_accepted(&h, file_end(&h), "image size at the 4 KiB / 1 maximum");
    h.image_size = GiB + 512;
    check_rejected(&h, file_end(&h), EINVAL, "maximum 1073741824",
                   "image size one sector over the 4 KiB / 1 maximum");
    check_rejected(&h, file_end(&h), EINVAL, "cluster size 4096",
                   "max image size message names the cluster size");
    check_rejected(&h, file_end(&h), EINVAL, "table size 1",
                   "max image size message names the table size");

    /* Saturated geometries are bounded by QED_MAX_VIRTUAL_SIZE instead. */
    h = good_header(16 * MiB, 16);
    h.image_size = QED_MAX_VIRTUAL_SIZE;
    check_accepted(&h, file_end(&h),
                   "16 MiB / 16: image size QED_MAX_VIRTUAL_SIZE");
    h.image_size = QED_MAX_VIRTUAL_SIZE + 512;
    check_rejected(&h, file_end(&h), EINVAL, "largest supported size",
                   "16 MiB / 16: QED_MAX_VIRTUAL_SIZE + 512");
    h.image_size = UINT64_MAX & ~UINT64_C(511);
    check_rejected(&h, file_end(&h), EINVAL, "largest supported size",
                   "16 MiB / 16: largest 512-multiple of 64 bits");
    h = good_header(8 * MiB, 1);
    h.image_size = UINT64_C(1) << 63;
    check_rejected(&h, file_end(&h), EINVAL, "9223372036854775808",
                   "8 MiB / 1: 2^63 fits the tables but not a signed offset");
    is_u64(QED_MAX_VIRTUAL_SIZE, (UINT64_C(1) << 63) - 512,
           "QED_MAX_VIRTUAL_SIZE is 2^63 - 512");

    h = good_header(4096, 1);
    h.image_size = GiB + 512;
    h.l1_table_offset = 4096 + 1;
    check_rejected(&h, UINT64_MAX, EINVAL, "image size",
                   "image size is checked before the L1 table");
}

static void test_l1_table(void)
{
    struct qed_header h = good_header(65536, 4);
    uint64_t table = 4 * 65536;

    h.l1_table_offset = 65536 + 512;
    check_rejected(&h, UINT64_MAX, EINVAL,
                   "L1 table offset 66048 is not a multiple of the cluster "
                   "size 65536",
                   "L1 offset misaligned by 512");
    h.l1_table_offset = 2 * 65536 - 1;
    check_rejected(&h, UINT64_MAX, EINVAL, "not a multiple",
                   "L1 offset one byte short of a cluster boundary");
    h.l1_table_offset = 2 * 65536;
    check_accepted(&h, 2 * 65536 + table, "L1 table at cluster 2");

    h = good_header(65536, 4);
    check_accepted(&h, 65536 + table, "file ends exactly at the L1 table end");
    check_accepted(&h, 65536 + table + 1, "file one byte longer");
    check_rejected(&h, 65536 + table - 1, EINVAL, "extends past the end",
                   "file one byte short of the L1 table end");
    check_message(&h, 65536 + table - 1,
                  "L1 table at offset 65536 (262144 bytes) extends past the "
                  "end of the file (327679 bytes)",
                  "L1 past EOF message gives offset, length and file size");
    check_rejected(&h, 65536, EINVAL, "extends past the end",
                   "file holds only the header");
    check_rejected(&h, 0, EINVAL, "(0 bytes)", "empty file");

    /* Offsets near 2^64: the end must not wrap around to a small number. */
    h.l1_table_offset = UINT64_MAX & ~UINT64_C(65535);
    check_rejected(&h, UINT64_MAX, EINVAL, "extends past the end",
                   "L1 at the last cluster below 2^64 wraps");
    h.l1_table_offset = 0 - table;
    check_rejected(&h, UINT64_MAX, EINVAL, "extends past the end",
                   "L1 ending exactly at 2^64 overflows");
    h.l1_table_offset = 0 - 2 * table;
    check_accepted(&h, UINT64_MAX, "L1 ending at 2^64 - table length");
    check_rejected(&h, UINT64_MAX - table, EINVAL, "extends past the end",
                   "L1 ending one byte past a file near 2^64");

    h = good_header(64 * MiB, 16);
    check_accepted(&h, 64 * MiB + 16 * 64 * MiB,
                   "64 MiB / 16: 1 GiB L1 table fits");
    check_rejected(&h, 64 * MiB + 16 * 64 * MiB - 1, EINVAL,
                   "(1073741824 bytes)",
                   "64 MiB / 16: L1 length computed in 64 bits");

    h = good_header(65536, 4);
    h.l1_table_offset = 65536 + 512;
    h.features = QED_F_BACKING_FILE;
    check_rejected(&h, UINT64_MAX, EINVAL, "L1 table",
                   "L1 offset is checked before the backing name");
}

/* ---- qedi_header_validate: backing name placement ------------------------------- */

static struct qed_header backing_header(uint32_t offset, uint32_t size)
{
    struct qed_header h = good_header(65536, 4);

    h.features = QED_F_BACKING_FILE;
    h.backing_filename_offset = offset;
    h.backing_filename_size = size;
    return h;
}

static void test_backing_placement(void)
{
    struct qed_header h;

    h = backing_header(64, 10);
    check_accepted(&h, file_end(&h), "backing name right after the fields");
    h = backing_header(63, 10);
    check_rejected(&h, file_end(&h), EINVAL, "backing file name offset 63",
                   "backing name overlapping the last fixed byte");
    h = backing_header(0, 10);
    check_rejected(&h, file_end(&h), EINVAL, "offset 0",
                   "backing name at offset 0");
    h = backing_header(64, 0);
    check_rejected(&h, file_end(&h), EINVAL, "size is 0",
                   "backing name of size 0");
    h = backing_header(64, 1);
    check_accepted(&h, file_end(&h), "backing name of 1 byte");
    h = backing_header(64, QED_MAX_BACKING_NAME);
    check_accepted(&h, file_end(&h), "backing name of 4095 bytes");
    h = backing_header(64, QED_MAX_BACKING_NAME + 1);
    check_rejected(&h, file_end(&h), EINVAL, "size 4096",
                   "backing name of 4096 bytes");
    h = backing_header(65536 - 10, 10);
    check_accepted(&h, file_end(&h),
                   "backing name ending at the end of the header");
    h = backing_header(65536 - 10, 11);
    check_rejected(&h, file_end(&h), EINVAL, "extends past the header",
                   "backing name one byte past the header");
    h = backing_header(65536, 1);
    check_rejected(&h, file_end(&h), EINVAL, "extends past the header",
                   "backing name starting after the header");
    h = backing_header(UINT32_MAX, 4000);
    check_rejected(&h, file_end(&h), EINVAL, "extends past the header",
                   "backing name offset near 2^32 (no 32-bit wrap)");
    h = backing_header(UINT32_MAX - 9, 10);
    check_rejected(&h, file_end(&h), EINVAL, "offset 4294967286",
                   "backing name whose 32-bit end would wrap to 0");

    h = backing_header(65536 + 100, 100);
    h.header_size = 2;
    h.l1_table_offset = 2 * 65536;
    check_accepted(&h, file_end(&h),
                   "backing name in the second of 2 header clusters");

    h = backing_header(0, 0);
    h.features = 0;
    check_accepted(&h, file_end(&h),
                   "backing fields ignored without BACKING_FILE");
    h.backing_filename_offset = UINT32_MAX;
    h.backing_filename_size = UINT32_MAX;
    check_accepted(&h, file_end(&h),
                   "garbage backing fields ignored without BACKING_FILE");

    h = backing_header(64, 10);
    h.features |= QED_F_BACKING_FORMAT_NO_PROBE | QED_F_NEED_CHECK;
    check_accepted(&h, file_end(&h), "all three known features");
}

static void test_null_error(void)
{
    struct qed_header h = good_header(65536, 4);

    is_u64(qedi_header_validate(&h, file_end(&h), NULL), 0,
           "valid header without an error object");
    h.features = 0x100;
    is_u64(qedi_header_validate(&h, file_end(&h), NULL), (uint64_t)-ENOTSUP,
           "unknown feature without an error object");
    h.features = 0;
    h.table_size = 3;
    is_u64(qedi_header_validate(&h, file_end(&h), NULL), (uint64_t)-EINVAL,
           "bad table size without an error object");
}

/* ---- qedi_header_backing_name --------------------------------------------------- */

static void test_backing_name(void)
{
    static uint8_t buf[65536];
    struct qed_header h = backing_header(64, 10);
    qed_error err = { 0 };
    char out[QED_MAX_BACKING_NAME + 1];
    int ret;

    memset(buf, 'x', sizeof(buf));
    memcpy(buf + 64, "base.qcow2", 10);

    ret = qedi_header_backing_name(&h, buf, sizeof(buf), out, sizeof(out), &err);
    is_u64(ret, 0, "backing name read");
    is_str(out, "base.qcow2", "backing name copied and NUL-terminated");

    memset(out, '?', sizeof(out));
    ret = qedi_header_backing_name(&h, buf, 74, out, 11, &err);
    is_u64(ret, 0, "buffer ending exactly at the name, output of size+1");
    is_str(out, "base.qcow2", "name read at both exact limits");

    err.code = 0;
    ret = qedi_header_backing_name(&h, buf, 73, out, sizeof(out), &err);
    is_u64(ret, (uint64_t)-EINVAL, "buffer one byte short of the name");
    is_u64(err.code, EINVAL, "short buffer sets EINVAL");
    has_substr(err.message, "73", "short buffer message gives its length");

    ret = qedi_header_backing_name(&h, buf, 10, out, sizeof(out), &err);
    is_u64(ret, (uint64_t)-EINVAL, "buffer ending before the name starts");

    err.code = 0;
    ret = qedi_header_backing_name(&h, buf, sizeof(buf), out, 10, &err);
    is_u64(ret, (uint64_t)-EINVAL, "output without room for the NUL");
    is_u64(err.code, EINVAL, "small output sets EINVAL");
    ret = qedi_header_backing_name(&h, buf, sizeof(buf), out, 0, &err);
    is_u64(ret, (uint64_t)-EINVAL, "output of size 0");

    buf[68] = '\0';
    err.code = 0;
    ret = qedi_header_backing_name(&h, buf, sizeof(buf), out, sizeof(out), &err);
    is_u64(ret, (uint64_t)-EINVAL, "NUL inside the name is rejected");
    is_u64(err.code, EINVAL, "NUL inside the name sets EINVAL");
    has_substr(err.message, "NUL", "message names the NUL byte");
    has_substr(err.message, "position 4", "message gives its position");
    buf[68] = '.';

    buf[73] = '\0';
    ret = qedi_header_backing_name(&h, buf, sizeof(buf), out, sizeof(out), &err);
    is_u64(ret, (uint64_t)-EINVAL, "NUL as the last name byte is rejected");
    buf[73] = '2';
    buf[74] = '\0';
    ret = qedi_header_backing_name(&h, buf, sizeof(buf), out, sizeof(out), &err);
    is_u64(ret, 0, "NUL right after the name is not part of it");
    buf[74] = 'x';

    buf[64] = 0xc3;
    buf[65] = 0xa9;
    ret = qedi_header_backing_name(&h, buf, sizeof(buf), out, sizeof(out), &err);
    ok(ret == 0 && (uint8_t)out[0] == 0xc3 && (uint8_t)out[1] == 0xa9,
       "non-ASCII name bytes copied verbatim");
    memcpy(buf + 64, "ba", 2);

    h = backing_header(64, QED_MAX_BACKING_NAME);
    memset(buf + 64, 'n', QED_MAX_BACKING_NAME);
    ret = qedi_header_backing_name(&h, buf, sizeof(buf), out, sizeof(out), &err);
    is_u64(ret, 0, "4095-byte name read");
    is_u64(strlen(out), QED_MAX_BACKING_NAME, "4095-byte name length");

    h = backing_header(64, 10);
    h.features = 0;
    out[0] = 'z';
    ret = qedi_header_backing_name(&h, buf, sizeof(buf), out, sizeof(out), &err);
    is_u64(ret, 0, "no BACKING_FILE feature: succeeds");
    is_str(out, "", "no BACKING_FILE feature: empty name");

    h = backing_header(64, 10);
    ret = qedi_header_backing_name(&h, buf, 10, out, sizeof(out), NULL);
    is_u64(ret, (uint64_t)-EINVAL, "short buffer without an error object");
}

/* ---- qedi_header_init_new ------------------------------------------------------- */

static void test_init_new_layout(void)
{
    struct qed_header h;
    qed_error err = { 0 };
    int ret;

    memset(&h, 0xaa, sizeof(h));
    ret = qedi_header_init_new(&h, 10 * GiB, 65536, 4, 0, false, &err);
    is_u64(ret, 0, "new 10 GiB image, default geometry");
    is_u64(h.magic, QED_MAGIC, "new: magic");
    is_u64(h.cluster_size, 65536, "new: cluster size");
    is_u64(h.table_size, 4, "new: table size");
    is_u64(h.header_size, 1, "new: one header cluster");
    is_u64(h.l1_table_offset, 65536, "new: L1 table right after the header");
    is_u64(h.image_size, 10 * GiB, "new: image size");
    is_u64(h.features, 0, "new without backing: no features");
    is_u64(h.compat_features, 0, "new: no compat features");
    is_u64(h.autoclear_features, 0, "new: no autoclear features");
    is_u64(h.backing_filename_offset, 0, "new without backing: offset 0");
    is_u64(h.backing_filename_size, 0, "new without backing: size 0");
    check_accepted(&h, file_end(&h), "new header validates");

    ret = qedi_header_init_new(&h, 0, 65536, 4, 0, true, &err);
    is_u64(ret, 0, "new image of size 0");
    is_u64(h.features, 0, "NO_PROBE without a backing name sets nothing");

    ret = qedi_header_init_new(&h, GiB, 65536, 4, 10, false, &err);
    is_u64(ret, 0, "new image with a backing name");
    is_u64(h.features, QED_F_BACKING_FILE, "backing name sets BACKING_FILE");
    is_u64(h.backing_filename_offset, 64, "backing name at byte 64");
    is_u64(h.backing_filename_size, 10, "backing name size stored");
    check_accepted(&h, file_end(&h), "new header with backing validates");

    ret = qedi_header_init_new(&h, GiB, 65536, 4, 10, true, &err);
    is_u64(ret, 0, "new image with a raw backing file");
    is_u64(h.features, QED_F_BACKING_FILE | QED_F_BACKING_FORMAT_NO_PROBE,
           "raw backing sets BACKING_FILE | NO_PROBE");
    check_accepted(&h, file_end(&h), "new header with NO_PROBE validates");
}

static void init_new_fails(uint64_t size, uint32_t cs, uint32_t ts,
                           size_t name_len, const char *want,
                           const char *what)
{
    struct qed_header h, before;
    qed_error err = { 0 };
    int ret;

    memset(&h, 0x5a, sizeof(h));
    before = h;
    ret = qedi_header_init_new(&h, size, cs, ts, name_len, false, &err);
    is_u64(ret, (uint64_t)-EINVAL, "new image refused: %s", what);
    is_u64(err.code, EINVAL, "err.code EINVAL: %s", what);
    is_str(err.message, want, "message: %s", what);
    ok(memcmp(&h, &before, sizeof(h)) == 0, "header untouched: %s", what);
}

static void init_new_succeeds(uint64_t size, uint32_t cs, uint32_t ts,
                              size_t name_len, const char *what)
{
    struct qed_header h;
    qed_error err = { 0 };
    int ret = qedi_header_init_new(&h, size, cs, ts, name_len, false, &err);

    if (!ok(ret == 0, "new image accepted: %s", what))
        tap_diag("message: %s", err.message);
}

static void test_init_new_limits(void)
{
    init_new_fails(GiB, 4095, 4, 0,
                   "cluster size 4095 is not a power of two in [4096, "
                   "67108864]",
                   "cluster size 4095");
    init_new_succeeds(GiB, 4096, 4, 0, "cluster size 4096");
    init_new_succeeds(GiB, 8192, 4, 0, "cluster size 8192");
    init_new_fails(GiB, 12288, 4, 0,
                   "cluster size 12288 is not a power of two in [4096, "
                   "67108864]",
                   "cluster size 12288");
    init_new_succeeds(GiB, 64 * MiB, 4, 0, "cluster size 64 MiB");
    init_new_fails(GiB, 128 * MiB, 4, 0,
                   "cluster size 134217728 is not a power of two in [4096, "
                   "67108864]",
                   "cluster size 128 MiB");
    init_new_fails(GiB, 0, 4, 0,
                   "cluster size 0 is not a power of two in [4096, 67108864]",
                   "cluster size 0 (defaults are the caller's job)");

    init_new_fails(GiB, 65536, 0, 0,
                   "table size 0 is not a power of two in [1, 16]",
                   "table size 0");
    init_new_succeeds(GiB, 65536, 1, 0, "table size 1");
    init_new_fails(GiB, 65536, 3, 0,
                   "table size 3 is not a power of two in [1, 16]",
                   "table size 3");
    init_new_succeeds(GiB, 65536, 16, 0, "table size 16");
    init_new_fails(GiB, 65536, 32, 0,
                   "table size 32 is not a power of two in [1, 16]",
                   "table size 32");

    init_new_fails(1000, 65536, 4, 0,
                   "image size 1000 is not a multiple of 512",
                   "image size 1000");
    init_new_succeeds(512, 65536, 4, 0, "image size 512");
    init_new_succeeds(64 * TiB, 65536, 4, 0, "image size at the maximum");
    init_new_fails(64 * TiB + 512, 65536, 4, 0,
                   "image size 70368744178176 exceeds the maximum "
                   "70368744177664 for cluster size 65536 and table size 4",
                   "image size one sector over the maximum");
    init_new_succeeds(QED_MAX_VIRTUAL_SIZE, 16 * MiB, 16, 0,
                      "16 MiB / 16: QED_MAX_VIRTUAL_SIZE");
    init_new_fails(UINT64_MAX & ~UINT64_C(511), 16 * MiB, 16, 0,
                   "image size 18446744073709551104 exceeds the largest "
                   "supported size 9223372036854775296",
                   "16 MiB / 16: beyond QED_MAX_VIRTUAL_SIZE");

    init_new_succeeds(GiB, 4096, 4, 4096 - 64, "4032-byte name, 4 KiB clusters");
    init_new_fails(GiB, 4096, 4, 4096 - 63,
                   "backing file name is 4033 bytes; at most 4032 fit in the "
                   "header (cluster size 4096)",
                   "4033-byte name, 4 KiB clusters");
    init_new_succeeds(GiB, 8192, 4, 4095, "4095-byte name, 8 KiB clusters");
    init_new_fails(GiB, 8192, 4, 4096,
                   "backing file name is 4096 bytes; at most 4095 are accepted",
                   "4096-byte name, 8 KiB clusters");
    init_new_fails(GiB, 65536, 4, 65536,
                   "backing file name is 65536 bytes; at most 65472 fit in "
                   "the header (cluster size 65536)",
                   "name as long as the cluster");
    init_new_fails(GiB, 65536, 3, 1 << 20,
                   "table size 3 is not a power of two in [1, 16]",
                   "geometry is checked before the name");
}

/* Every valid geometry: a new image with a backing name survives
 * encode -> decode -> validate -> read the name back. */
static void test_init_new_round_trip(void)
{
    static const char name[] = "../images/base image.raw";
    size_t len = sizeof(name) - 1;
    unsigned failures = 0, count = 0;

    for (size_t c = 0; c < QED_ARRAY_SIZE(valid_cluster_sizes); c++) {
        for (size_t t = 0; t < QED_ARRAY_SIZE(valid_table_sizes); t++) {
            uint32_t cs = valid_cluster_sizes[c], ts = valid_table_sizes[t];
            uint64_t max = QED_MIN(qedi_header_max_image_size(cs, ts),
                                   QED_MAX_VIRTUAL_SIZE);
            uint8_t buf[4096] = { 0 };
            struct qed_header h, back;
            char out[64];
            qed_error err = { 0 };
            int ret;

            count++;
            ret = qedi_header_init_new(&h, max & ~UINT64_C(511), cs, ts, len,
                                  true, &err);
            if (ret != 0) {
                failures++;
                tap_diag("cluster %u table %u: %s", cs, ts, err.message);
                continue;
            }
            qedi_header_encode(&h, buf);
            memcpy(buf + h.backing_filename_offset, name, len);
            qedi_header_decode(buf, &back);
            ret = qedi_header_validate(&back, file_end(&back), &err);
            if (ret == 0)
                ret = qedi_header_backing_name(&back, buf, sizeof(buf), out,
                                          sizeof(out), &err);
            if (ret != 0 || strcmp(out, name) != 0 ||
                memcmp(&h, &back, sizeof(h)) != 0) {
                failures++;
                tap_diag("cluster %u table %u: %s", cs, ts, err.message);
            }
        }
    }
    is_u64(count, 75, "round trip covers all 75 geometries");
    is_u64(failures, 0,
           "new image at its largest size round-trips for every geometry");
}

int main(void)
{
    test_encode_layout();
    test_decode_layout();
    test_round_trip();
    test_size_predicates();
    test_max_image_size();
    test_magic();
    test_features();
    test_cluster_size();
    test_table_size();
    test_header_size();
    test_image_size();
    test_l1_table();
    test_backing_placement();
    test_null_error();
    test_backing_name();
    test_init_new_layout();
    test_init_new_limits();
    test_init_new_round_trip();
    return tap_done();
}
