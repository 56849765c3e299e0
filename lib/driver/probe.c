/* SPDX-License-Identifier: MIT */
/* Format probing.  A file with no format given is QED when it starts with
 * the QED magic and raw otherwise.  The signatures of the other formats
 * QEMU probes are known too: a probed raw image must never be written into
 * one of them (a guest could otherwise make its disk a qcow2 or VMDK image
 * whose backing file or extent is a host file, read on the next probing
 * open), and a file that carries one is not silently read as raw. */
#include "driver.h"

/* A signature: bytes at an offset in the first sector. */
struct signature {
    const char *format;
    size_t offset;
    const char *bytes;
    size_t len;
};

#define SIG(fmt, off, lit) { fmt, off, lit, sizeof(lit) - 1 }

static const struct signature signatures[] = {
    SIG("vmdk", 0, "KDMV"),             /* sparse extent, version 4 */
    SIG("vmdk", 0, "COWD"),             /* sparse extent, version 3 */
    SIG("vpc", 0, "conectix"),
    SIG("vhdx", 0, "vhdxfile"),
    SIG("luks", 0, "LUKS\xba\xbe"),
    SIG("parallels", 0, "WithoutFreeSpace"),
    SIG("parallels", 0, "WithouFreSpacExt"),
    SIG("bochs", 0, "Bochs Virtual HD Image"),
    SIG("cloop", 0, "#!/bin/sh\n#V2.0 Format\nmodprobe cloop file=$0"),
    SIG("vdi", 0x40, "\x7f\x10\xda\xbe"),  /* le32 0xbeda107f */
};

/* The qcow family shares one magic; the version tells them apart. */
static const char qcow_magic[] = "QFI\xfb";
#define QCOW_VERSION_OFFSET 4
#define QCOW_VERSION_1 1u

bool qedi_probe_is_qed(const uint8_t *sector)
{
    return load_le32(sector) == QED_MAGIC;
}

static const char *skip_line(const char *p, const char *end)
{
    while (p < end && *p != '\n')
        p++;
    return p < end ? p + 1 : end;
}

static bool starts_with(const char *p, const char *end, const char *text)
{
    size_t n = strlen(text);
    return (size_t)(end - p) >= n && memcmp(p, text, n) == 0;
}

/* A VMDK descriptor is plain text: comment lines ('#') and blank lines,
 * then "version=1", "=2" or "=3" on a line of its own (LF or CRLF).  Such
 * a text names extent files by path, so it is the most dangerous of all. */
#define VERSION_KEY "version="

static bool is_vmdk_descriptor(const uint8_t *sector)
{
    const char *p = (const char *)sector, *end = p + PROBE_SECTOR_SIZE;

    while (p < end) {
        if (*p == '#') {
            p = skip_line(p, end);
            continue;
        }
        if (*p == ' ') {
            while (p < end && *p == ' ')
                p++;
            if (p < end && *p == '\r')
                p++;
            if (p == end || *p != '\n')
                return false;
            p++;
            continue;
        }
        if (!starts_with(p, end, VERSION_KEY))
            return false;
        p += strlen(VERSION_KEY);
        if (p == end || *p < '1' || *p > '3')
            return false;
        p++;
        return starts_with(p, end, "\n") || starts_with(p, end, "\r\n");
    }
    return false;
}

const char *qedi_probe_foreign_format(const uint8_t *sector)
{
    if (memcmp(sector, qcow_magic, 4) == 0) {
        uint32_t version;
        memcpy(&version, sector + QCOW_VERSION_OFFSET, sizeof(version));
        return be32toh(version) == QCOW_VERSION_1 ? "qcow" : "qcow2";
    }
    for (size_t i = 0; i < QED_ARRAY_SIZE(signatures); i++) {
        const struct signature *s = &signatures[i];
        if (memcmp(sector + s->offset, s->bytes, s->len) == 0)
            return s->format;
    }
    if (is_vmdk_descriptor(sector))
        return "vmdk";
    return NULL;
}
