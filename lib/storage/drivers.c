/* SPDX-License-Identifier: MIT */
/* Storage drivers by name: which driver a name (a path or a URI) asks for,
 * and URIs as messages may show them (passwords hidden). */
#include <stdio.h>
#include <string.h>

#include "storage.h"

static const char *const nbd_schemes[] = {
    "nbd://", "nbds://", "nbd+unix://", "nbds+unix://",
};

const struct storage_driver *qedi_storage_driver_for(const char *name)
{
    for (size_t i = 0; i < sizeof(nbd_schemes) / sizeof(nbd_schemes[0]); i++)
        if (strncmp(name, nbd_schemes[i], strlen(nbd_schemes[i])) == 0)
            return &qedi_storage_nbd_driver;
    if (strncmp(name, "http://", 7) == 0 || strncmp(name, "https://", 8) == 0)
        return &qedi_storage_http_driver;
    if (strncmp(name, "s3://", 5) == 0)
        return &qedi_storage_s3_driver;
    return &qedi_storage_file_driver;
}

bool qedi_storage_is_uri(const char *name)
{
    return qedi_storage_driver_for(name) != &qedi_storage_file_driver;
}

const char *qedi_storage_uri_for_messages(const char *name)
{
    static _Thread_local char buf[4096];
    const char *scheme_end = strstr(name, "://"), *auth, *at, *colon;

    if (!scheme_end || !qedi_storage_is_uri(name))
        return name;
    auth = scheme_end + 3;
    at = auth + strcspn(auth, "/?#");
    colon = memchr(auth, ':', (size_t)(at - auth));
    at = memchr(auth, '@', (size_t)(at - auth));
    if (!at || !colon || colon > at)
        return name;
    snprintf(buf, sizeof(buf), "%.*s:***%s", (int)(colon - name), name, at);
    return buf;
}

const char *qedi_storage_scrub(const char *name, const char *text)
{
    static _Thread_local char buf[1024];
    const char *auth = strstr(name, "://"), *end, *colon, *at;
    size_t plen, n = 0;

    if (!auth || !qedi_storage_is_uri(name))
        return text;
    auth += 3;
    end = auth + strcspn(auth, "/?#");
    colon = memchr(auth, ':', (size_t)(end - auth));
    at = memchr(auth, '@', (size_t)(end - auth));
    if (!colon || !at || colon > at || at == colon + 1)
        return text;
    plen = (size_t)(at - colon - 1);
    while (*text && n + 4 < sizeof(buf)) {
        if (strncmp(text, colon + 1, plen) == 0) {
            memcpy(buf + n, "***", 3);
            n += 3;
            text += plen;
            continue;
        }
        buf[n++] = *text++;
    }
    buf[n] = '\0';
    return buf;
}

