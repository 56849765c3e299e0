/* SPDX-License-Identifier: MIT */
/* The HTTP storage driver: a read-only image behind an http:// or https://
 * URL, read with range requests through libcurl's multi interface on the
 * image's loop (curl's sockets are watched there and its timeouts are loop
 * timers), several connections to the server at once (HTTP/1.1 keep-alive;
 * HTTP/2 is not asked for: one request per connection keeps a slow range
 * from holding up the others).
 *
 * The object must not change while it is open: every range request is
 * conditional on the ETag (or Last-Modified) seen at open (If-Match /
 * If-Unmodified-Since) and its answer's ETag is compared too, so a replaced
 * object fails the read with ESTALE instead of mixing old and new bytes.
 * Transient failures (connection errors, timeouts, 5xx, 429) are retried
 * after 0.1, 0.2, 0.4 ... s (HTTP_ATTEMPTS in all, Retry-After honoured up
 * to HTTP_RETRY_AFTER_MAX_S); a request that still fails gets EIO, and
 * only its caller sees it.  A transfer slower than 1 byte/s for
 * HTTP_STALL_S fails with ETIMEDOUT, without a retry (a server that
 * stalled would stall again).  TLS certificates are verified, against the
 * system's CAs or the open's tls_ca_file, unless tls_no_verify says not
 * to. */
#include <curl/curl.h>
#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "storage.h"

#define HTTP_ATTEMPTS 6
#define HTTP_RETRY_FIRST_MS 100u
#define HTTP_RETRY_AFTER_MAX_S 10
#define HTTP_CONNECT_TIMEOUT_MS 10000L
#define HTTP_STALL_S 30L
#define HTTP_MAX_CONNECTIONS 4L
#define HTTP_MAX_VALIDATOR 256
#define S3_EMPTY_PAYLOAD_SHA256 \
    "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"

struct http_storage;

struct http_request {
    struct http_storage *st;
    struct http_request *prev, *next; /* the storage's requests */
    CURL *easy;
    struct curl_slist *headers;
    io_callback *cb;
    void *opaque;
    uint64_t offset, length, received;
    unsigned attempt;
    long retry_after_s;
    char etag[HTTP_MAX_VALIDATOR];
    uint64_t timer;
    /* The caller's buffers, filled in place with [offset, offset +
     * length); the answer's bytes go at iov[at].iov_base + at_byte next.
     * A copy of the vector: the caller's lives only during the call. */
    int iovcnt, at;
    size_t at_byte;
    struct iovec iov[];
};

struct http_storage {
    struct io_file base;
    char *url;
    char *ca_file;           /* NULL: the system's CAs */
    bool no_verify;
    /* S3: AWS Signature V4 ("aws:amz:REGION:s3"), the keys as
     * "ID:SECRET", the session token header; NULL when unsigned. */
    char *sigv4, *keys;
    struct curl_slist *extra_headers;
    CURLM *multi;
    CURLSH *share;           /* the connections, shared by the probe and
                                the requests */
    uint64_t size;
    char etag[HTTP_MAX_VALIDATOR];          /* strong, quotes included */
    char last_modified[HTTP_MAX_VALIDATOR];
    uint64_t curl_timer;
    bool changed;            /* the object was replaced: reads fail */
    struct http_request *requests; /* in flight or waiting to retry */
};

static struct http_storage *storage_of(struct io_file *file)
{
    return (struct http_storage *)file;
}

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;
static CURLcode curl_init_result;

static void init_curl(void)
{
    curl_init_result = curl_global_init(CURL_GLOBAL_DEFAULT);
}

/* ---- headers --------------------------------------------------------------------- */

/* "Name: value\r\n" -> value without the line end, when the name matches. */
static bool header_value(const char *line, size_t len, const char *name,
                         char *out, size_t outlen)
{
    size_t n = strlen(name), v;

    if (len <= n + 1 || strncasecmp(line, name, n) != 0 || line[n] != ':')
        return false;
    line += n + 1;
    len -= n + 1;
    while (len > 0 && (*line == ' ' || *line == '\t')) {
        line++;
        len--;
    }
    while (len > 0 && (line[len - 1] == '\r' || line[len - 1] == '\n' ||
                       line[len - 1] == ' '))
        len--;
    v = len < outlen - 1 ? len : outlen - 1;
    memcpy(out, line, v);
    out[v] = '\0';
    return true;
}

/* ---- the loop and curl ------------------------------------------------------------ */

static void check_done(struct http_storage *st);

static void on_socket(void *opaque, int fd, unsigned events)
{
    struct http_storage *st = opaque;
    int running, mask = 0;

    if (events & QED_LOOP_READ)
        mask |= CURL_CSELECT_IN;
    if (events & QED_LOOP_WRITE)
        mask |= CURL_CSELECT_OUT;
    if (events & QED_LOOP_HANGUP)
        mask |= CURL_CSELECT_ERR;
    curl_multi_socket_action(st->multi, fd, mask, &running);
    check_done(st);
}

static int curl_socket(CURL *easy, curl_socket_t s, int what, void *userp,
                       void *socketp)
{
    struct http_storage *st = userp;
    unsigned events = 0;
    (void)easy;
    (void)socketp;

    if (what == CURL_POLL_REMOVE) {
        qed_loop_unwatch_fd(st->base.loop, s);
        return 0;
    }
    if (what & CURL_POLL_IN)
        events |= QED_LOOP_READ;
    if (what & CURL_POLL_OUT)
        events |= QED_LOOP_WRITE;
    return qed_loop_watch_fd(st->base.loop, s, events, on_socket, st) < 0 ? -1 : 0;
}

static void on_curl_timer(void *opaque)
{
    struct http_storage *st = opaque;
    int running;

    st->curl_timer = 0;
    curl_multi_socket_action(st->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    check_done(st);
}

static int curl_timer(CURLM *multi, long timeout_ms, void *userp)
{
    struct http_storage *st = userp;
    (void)multi;

    if (st->curl_timer) {
        qed_loop_cancel_timer(st->base.loop, st->curl_timer);
        st->curl_timer = 0;
    }
    if (timeout_ms >= 0)
        st->curl_timer = qed_loop_add_timer(st->base.loop, (uint64_t)timeout_ms,
                                            on_curl_timer, st);
    return 0;
}

/* ---- one range request ------------------------------------------------------------- */

static size_t on_body(char *data, size_t size, size_t nmemb, void *userp)
{
    struct http_request *r = userp;
    size_t n = size * nmemb;

    /* More than asked for: the answer is not our range. */
    if (n > r->length - r->received)
        return 0;
    r->received += n;
    while (n > 0) {
        const struct iovec *v = &r->iov[r->at];
        size_t room = v->iov_len - r->at_byte;
        size_t part = n < room ? n : room;

        memcpy((char *)v->iov_base + r->at_byte, data, part);
        data += part;
        n -= part;
        r->at_byte += part;
        if (r->at_byte == v->iov_len) {
            r->at++;
            r->at_byte = 0;
        }
    }
    return size * nmemb;
}

static size_t on_header(char *line, size_t size, size_t nmemb, void *userp)
{
    struct http_request *r = userp;
    size_t n = size * nmemb;
    char value[64];

    if (header_value(line, n, "ETag", r->etag, sizeof(r->etag)))
        return n;
    if (header_value(line, n, "Retry-After", value, sizeof(value)))
        r->retry_after_s = strtol(value, NULL, 10);
    return n;
}

static int start_transfer(struct http_request *r);

static void request_link(struct http_request *r)
{
    struct http_storage *st = r->st;

    r->prev = NULL;
    r->next = st->requests;
    if (st->requests)
        st->requests->prev = r;
    st->requests = r;
}

static void request_free(struct http_request *r)
{
    struct http_storage *st = r->st;

    if (r->prev)
        r->prev->next = r->next;
    else if (st->requests == r)
        st->requests = r->next;
    if (r->next)
        r->next->prev = r->prev;
    if (r->timer)
        qed_loop_cancel_timer(st->base.loop, r->timer);
    curl_slist_free_all(r->headers);
    if (r->easy) {
        curl_multi_remove_handle(st->multi, r->easy);
        curl_easy_cleanup(r->easy);
    }
    free(r);
}

static void request_end(struct http_request *r, int ret)
{
    io_callback *cb = r->cb;
    void *opaque = r->opaque;

    request_free(r);
    cb(opaque, ret);
}

static void retry_now(void *opaque)
{
    struct http_request *r = opaque;
    int ret;

    r->timer = 0;
    ret = start_transfer(r);
    if (ret < 0)
        request_end(r, ret);
}

static bool transient(CURLcode code, long status)
{
    switch (code) {
    case CURLE_OK:
        return status >= 500 || status == 429;
    case CURLE_COULDNT_CONNECT:
    case CURLE_COULDNT_RESOLVE_HOST:
    case CURLE_RECV_ERROR:
    case CURLE_SEND_ERROR:
    case CURLE_GOT_NOTHING:
    case CURLE_PARTIAL_FILE:
    case CURLE_SSL_CONNECT_ERROR:
    case CURLE_HTTP2:
    case CURLE_HTTP2_STREAM:
        return true;
    default:
        return false;
    }
}

/* 100 ms, 200 ms, 400 ms ...; a server's Retry-After (seconds) when it
 * names one, up to HTTP_RETRY_AFTER_MAX_S. */
static uint64_t retry_delay_ms(const struct http_request *r)
{
    if (r->retry_after_s > 0)
        return (uint64_t)(r->retry_after_s < HTTP_RETRY_AFTER_MAX_S
                              ? r->retry_after_s : HTTP_RETRY_AFTER_MAX_S) * 1000;
    return (uint64_t)HTTP_RETRY_FIRST_MS << (r->attempt < 8 ? r->attempt : 8);
}

static void transfer_done(struct http_request *r, CURLcode code)
{
    struct http_storage *st = r->st;
    long status = 0;

    curl_easy_getinfo(r->easy, CURLINFO_RESPONSE_CODE, &status);
    curl_multi_remove_handle(st->multi, r->easy);
    if (code == CURLE_OK && status == 412)
        st->changed = true;
    if (code == CURLE_OK && status == 206 && st->etag[0] && r->etag[0] &&
        strcmp(r->etag, st->etag) != 0)
        st->changed = true;
    if (st->changed) {
        request_end(r, -ESTALE);
        return;
    }
    if (code == CURLE_OK && status == 206 && r->received == r->length) {
        request_end(r, 0);
        return;
    }
    /* A server that stalled would stall again: no retry. */
    if (code == CURLE_OPERATION_TIMEDOUT) {
        request_end(r, -ETIMEDOUT);
        return;
    }
    if (transient(code, status) && ++r->attempt < HTTP_ATTEMPTS) {
        r->timer = qed_loop_add_timer(st->base.loop, retry_delay_ms(r),
                                      retry_now, r);
        if (r->timer)
            return;
    }
    request_end(r, -EIO);
}

static void check_done(struct http_storage *st)
{
    CURLMsg *msg;
    int left;

    while ((msg = curl_multi_info_read(st->multi, &left)) != NULL) {
        struct http_request *r = NULL;
        if (msg->msg != CURLMSG_DONE)
            continue;
        curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&r);
        if (r)
            transfer_done(r, msg->data.result);
    }
}

static void common_options(CURL *easy, const struct http_storage *st)
{
    if (st->sigv4) {
        curl_easy_setopt(easy, CURLOPT_AWS_SIGV4, st->sigv4);
        curl_easy_setopt(easy, CURLOPT_USERPWD, st->keys);
    }
    /* GnuTLS parses every CA it is given for each new connection (about
     * 50 ms of CPU for the system's bundle and directory): only the file
     * given when there is one, none when nothing is verified. */
    if (st->ca_file) {
        curl_easy_setopt(easy, CURLOPT_CAINFO, st->ca_file);
        curl_easy_setopt(easy, CURLOPT_CAPATH, NULL);
    }
    if (st->no_verify) {
        curl_easy_setopt(easy, CURLOPT_CAINFO, NULL);
        curl_easy_setopt(easy, CURLOPT_CAPATH, NULL);
    }
    curl_easy_setopt(easy, CURLOPT_SHARE, st->share);
    curl_easy_setopt(easy, CURLOPT_SSL_VERIFYPEER, st->no_verify ? 0L : 1L);
    curl_easy_setopt(easy, CURLOPT_SSL_VERIFYHOST, st->no_verify ? 0L : 2L);
    curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
    curl_easy_setopt(easy, CURLOPT_CONNECTTIMEOUT_MS, HTTP_CONNECT_TIMEOUT_MS);
    curl_easy_setopt(easy, CURLOPT_LOW_SPEED_LIMIT, 1L);
    curl_easy_setopt(easy, CURLOPT_LOW_SPEED_TIME, HTTP_STALL_S);
    curl_easy_setopt(easy, CURLOPT_FOLLOWLOCATION, 1L);
    curl_easy_setopt(easy, CURLOPT_MAXREDIRS, 5L);
    curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, "http,https");
    curl_easy_setopt(easy, CURLOPT_REDIR_PROTOCOLS_STR, "http,https");
    /* HTTP/2 where an https server offers it: all requests as streams of
     * one connection (one handshake); else HTTP/1.1 connections. */
    curl_easy_setopt(easy, CURLOPT_HTTP_VERSION, (long)CURL_HTTP_VERSION_2TLS);
}

static int start_transfer(struct http_request *r)
{
    struct http_storage *st = r->st;
    char range[64], cond[HTTP_MAX_VALIDATOR + 32];
    int running;

    r->received = 0;
    r->at = 0;
    r->at_byte = 0;
    r->etag[0] = '\0';
    r->retry_after_s = 0;
    if (!r->easy && !(r->easy = curl_easy_init()))
        return -ENOMEM;
    if (!r->headers) {
        if (st->etag[0])
            snprintf(cond, sizeof(cond), "If-Match: %s", st->etag);
        else if (st->last_modified[0])
            snprintf(cond, sizeof(cond), "If-Unmodified-Since: %s",
                     st->last_modified);
        else
            cond[0] = '\0';
        if (cond[0] && !(r->headers = curl_slist_append(NULL, cond)))
            return -ENOMEM;
        for (struct curl_slist *h = st->extra_headers; h; h = h->next) {
            struct curl_slist *more = curl_slist_append(r->headers, h->data);
            if (!more)
                return -ENOMEM;
            r->headers = more;
        }
    }
    snprintf(range, sizeof(range), "%llu-%llu", (unsigned long long)r->offset,
             (unsigned long long)(r->offset + r->length - 1));
    common_options(r->easy, st);
    curl_easy_setopt(r->easy, CURLOPT_URL, st->url);
    curl_easy_setopt(r->easy, CURLOPT_RANGE, range);
    curl_easy_setopt(r->easy, CURLOPT_HTTPHEADER, r->headers);
    curl_easy_setopt(r->easy, CURLOPT_WRITEFUNCTION, on_body);
    curl_easy_setopt(r->easy, CURLOPT_WRITEDATA, r);
    curl_easy_setopt(r->easy, CURLOPT_HEADERFUNCTION, on_header);
    curl_easy_setopt(r->easy, CURLOPT_HEADERDATA, r);
    curl_easy_setopt(r->easy, CURLOPT_PRIVATE, r);
    if (curl_multi_add_handle(st->multi, r->easy) != CURLM_OK)
        return -ENOMEM;
    /* curl starts it from its timer; kick it now rather than a loop
     * iteration later. */
    curl_multi_socket_action(st->multi, CURL_SOCKET_TIMEOUT, 0, &running);
    return 0;
}

/* Bytes past the object's end read as zeros. */
static void http_readv(struct io_file *file, const struct iovec *iov,
                       int iovcnt, uint64_t offset, io_callback *cb,
                       void *opaque)
{
    struct http_storage *st = storage_of(file);
    uint64_t total = qedi_iov_size(iov, iovcnt);
    uint64_t inside = offset >= st->size ? 0 : st->size - offset;
    uint64_t length = inside < total ? inside : total;
    struct http_request *r;
    int ret;

    if (st->changed) {
        qedi_storage_complete_later(file, cb, opaque, -ESTALE);
        return;
    }
    if (length < total)
        qedi_iov_memset(iov, iovcnt, length, 0, total - length);
    if (length == 0) {
        qedi_storage_complete_later(file, cb, opaque, 0);
        return;
    }
    r = calloc(1, sizeof(*r) + (size_t)iovcnt * sizeof(*iov));
    if (!r) {
        qedi_storage_complete_later(file, cb, opaque, -ENOMEM);
        return;
    }
    r->st = st;
    r->cb = cb;
    r->opaque = opaque;
    r->offset = offset;
    r->length = length;
    r->iovcnt = iovcnt;
    memcpy(r->iov, iov, (size_t)iovcnt * sizeof(*iov));
    request_link(r);
    ret = start_transfer(r);
    if (ret < 0) {
        request_free(r);
        qedi_storage_complete_later(file, cb, opaque, ret);
    }
}

static void refuse_write(struct io_file *file, const struct iovec *iov,
                         int iovcnt, uint64_t offset, io_callback *cb,
                         void *opaque)
{
    (void)iov;
    (void)iovcnt;
    (void)offset;
    qedi_storage_complete_later(file, cb, opaque, -EBADF);
}

static void http_flush(struct io_file *file, io_callback *cb, void *opaque)
{
    qedi_storage_complete_later(file, cb, opaque, 0);
}

static void refuse_fallocate(struct io_file *file, int mode, uint64_t offset,
                             uint64_t length, io_callback *cb, void *opaque)
{
    (void)mode;
    (void)offset;
    (void)length;
    qedi_storage_complete_later(file, cb, opaque, -EBADF);
}

static int http_get_size(struct io_file *file, uint64_t *size)
{
    *size = storage_of(file)->size;
    return 0;
}

static int refuse_truncate(struct io_file *file, uint64_t size)
{
    (void)file;
    (void)size;
    return -EBADF;
}

static void storage_free(struct http_storage *st);

static void http_close(struct io_file *file)
{
    struct http_storage *st = storage_of(file);

    /* Requests a layer above sent for itself (read-ahead) may still be
     * on their way: dropped, unanswered. */
    while (st->requests)
        request_free(st->requests);
    if (st->curl_timer)
        qed_loop_cancel_timer(file->loop, st->curl_timer);
    storage_free(st);
}

static const struct storage_ops http_ops = {
    .name = "http",
    .readv = http_readv,
    .writev = refuse_write,
    .flush = http_flush,
    .fallocate = refuse_fallocate,
    .get_size = http_get_size,
    .truncate = refuse_truncate,
    .allocated_bytes = qedi_storage_unknown_allocation,
    .seek = qedi_storage_cannot_seek,
    .close = http_close,
};

/* ---- opening ----------------------------------------------------------------------- */

struct probe {
    struct http_storage *st;
    char content_range[128];
    size_t body;
};

/* Bodies the probe reads at most: an error page, not a whole object from
 * a server that ignores the range. */
#define PROBE_BODY_MAX 65536

static size_t probe_header(char *line, size_t size, size_t nmemb, void *userp)
{
    struct probe *p = userp;
    size_t n = size * nmemb;

    if (header_value(line, n, "ETag", p->st->etag, sizeof(p->st->etag)))
        return n;
    if (header_value(line, n, "Last-Modified", p->st->last_modified,
                     sizeof(p->st->last_modified)))
        return n;
    header_value(line, n, "Content-Range", p->content_range,
                 sizeof(p->content_range));
    return n;
}

static size_t probe_body(char *data, size_t size, size_t nmemb, void *userp)
{
    struct probe *p = userp;
    (void)data;

    p->body += size * nmemb;
    return p->body <= PROBE_BODY_MAX ? size * nmemb : 0;
}

/* One blocking request at open, bytes=0-0: the size (Content-Range), the
 * validators, and that ranges work (206, not 200 with the whole object). */
static int probe_object(struct http_storage *st, const char *url,
                        qed_error *err)
{
    struct probe p = { .st = st };
    CURL *easy = curl_easy_init();
    char errbuf[CURL_ERROR_SIZE] = "";
    const char *slash;
    long status = 0;
    CURLcode code;

    if (!easy)
        return qedi_fail(err, ENOMEM, "out of memory");
    common_options(easy, st);
    curl_easy_setopt(easy, CURLOPT_URL, url);
    curl_easy_setopt(easy, CURLOPT_RANGE, "0-0");
    curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, probe_header);
    curl_easy_setopt(easy, CURLOPT_HEADERDATA, &p);
    curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, probe_body);
    curl_easy_setopt(easy, CURLOPT_WRITEDATA, &p);
    curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, errbuf);
    curl_easy_setopt(easy, CURLOPT_HTTPHEADER, st->extra_headers);
    code = curl_easy_perform(easy);
    curl_easy_getinfo(easy, CURLINFO_RESPONSE_CODE, &status);
    curl_easy_cleanup(easy);
    /* A body cut short is an answer too: the status says what it was. */
    if (code == CURLE_WRITE_ERROR && status != 0)
        code = CURLE_OK;
    if (code != CURLE_OK)
        return qedi_fail(err, code == CURLE_OPERATION_TIMEDOUT ? ETIMEDOUT : EIO,
                         "%s", qedi_storage_scrub(url,
                         errbuf[0] ? errbuf : curl_easy_strerror(code)));
    if (status == 404)
        return qedi_fail(err, ENOENT, "%s", strerror(ENOENT));
    if (status == 401 || status == 403)
        return qedi_fail(err, EACCES, "HTTP %ld: %s", status, strerror(EACCES));
    if (status >= 400 && status != 416)
        return qedi_fail(err, EIO, "HTTP %ld", status);
    if (status == 416) {
        st->size = 0; /* an empty object */
        return 0;
    }
    if (status == 200)
        return qedi_fail(err, EOPNOTSUPP, "the server does not answer range "
                         "requests (HTTP 200 to bytes=0-0)");
    slash = strchr(p.content_range, '/');
    if (status != 206 || !slash || slash[1] < '0' || slash[1] > '9')
        return qedi_fail(err, EIO, "HTTP %ld%s%s", status,
                         p.content_range[0] ? ", Content-Range " : "",
                         p.content_range);
    st->size = strtoull(slash + 1, NULL, 10);
    /* A weak ETag cannot be used for If-Match. */
    if (strncmp(st->etag, "W/", 2) == 0)
        st->etag[0] = '\0';
    return 0;
}

static void storage_free(struct http_storage *st)
{
    if (st->multi)
        curl_multi_cleanup(st->multi);
    if (st->share)
        curl_share_cleanup(st->share);
    curl_slist_free_all(st->extra_headers);
    free(st->sigv4);
    free(st->keys);
    free(st->ca_file);
    free(st->url);
    free(st);
}

static int no_memory(struct http_storage *st, qed_error *err)
{
    storage_free(st);
    return qedi_fail(err, ENOMEM, "out of memory");
}

/* S3: the signature and the keys (never shown), the session token. */
static int set_s3_auth(struct http_storage *st,
                       const struct storage_settings *s)
{
    const char *region = s->s3_region && s->s3_region[0] ? s->s3_region
                                                         : "us-east-1";
    struct curl_slist *more;
    char *token;
    size_t len;

    if (!s->s3_access_key_id || !s->s3_access_key_id[0] ||
        !s->s3_secret_access_key)
        return 0;
    len = strlen(region) + 16;
    st->sigv4 = malloc(len);
    len = strlen(s->s3_access_key_id) + strlen(s->s3_secret_access_key) + 2;
    st->keys = malloc(len);
    if (!st->sigv4 || !st->keys)
        return -ENOMEM;
    snprintf(st->sigv4, strlen(region) + 16, "aws:amz:%s:s3", region);
    snprintf(st->keys, len, "%s:%s", s->s3_access_key_id,
             s->s3_secret_access_key);
    /* S3 wants the payload's hash signed along (this libcurl does not add
     * it): a GET has none, so the hash of nothing. */
    st->extra_headers = curl_slist_append(NULL, "x-amz-content-sha256: "
                                          S3_EMPTY_PAYLOAD_SHA256);
    if (!st->extra_headers)
        return -ENOMEM;
    if (s->s3_session_token && s->s3_session_token[0]) {
        len = strlen(s->s3_session_token) + 32;
        if (!(token = malloc(len)))
            return -ENOMEM;
        snprintf(token, len, "x-amz-security-token: %s", s->s3_session_token);
        more = curl_slist_append(st->extra_headers, token);
        free(token);
        if (!more)
            return -ENOMEM;
        st->extra_headers = more;
    }
    return 0;
}

/* Opens url (read-only) with the settings the front passed, signed for S3
 * when s3 is set. */
static int open_url(const struct storage_driver *driver, qed_loop *loop,
                    const char *url, unsigned flags, bool s3,
                    struct io_file **out, qed_error *err)
{
    const struct storage_settings *settings = driver->ctx;
    struct http_storage *st;
    int ret;

    *out = NULL;
    if (flags & (IO_OPEN_WRITE | IO_OPEN_CREATE))
        return qedi_fail(err, EROFS, "images behind %s are read-only: open "
                         "the image read-only", s3 ? "s3:// names" : "http(s) URLs");
    pthread_once(&curl_once, init_curl);
    if (curl_init_result != CURLE_OK)
        return qedi_fail(err, EIO, "libcurl: %s",
                         curl_easy_strerror(curl_init_result));
    st = calloc(1, sizeof(*st));
    if (!st)
        return qedi_fail(err, ENOMEM, "out of memory");
    st->base.ops = &http_ops;
    st->base.loop = loop;
    st->base.align = 1;
    if (!(st->url = strdup(url)) || !(st->multi = curl_multi_init()) ||
        !(st->share = curl_share_init()) ||
        curl_share_setopt(st->share, CURLSHOPT_SHARE,
                          CURL_LOCK_DATA_SSL_SESSION) != CURLSHE_OK)
        return no_memory(st, err);
    if (settings) {
        st->no_verify = settings->tls_no_verify;
        if (settings->tls_ca_file && !(st->ca_file = strdup(settings->tls_ca_file)))
            return no_memory(st, err);
        if (s3 && set_s3_auth(st, settings) < 0)
            return no_memory(st, err);
    }
    ret = probe_object(st, url, err);
    if (ret < 0) {
        storage_free(st);
        return ret;
    }
    curl_multi_setopt(st->multi, CURLMOPT_SOCKETFUNCTION, curl_socket);
    curl_multi_setopt(st->multi, CURLMOPT_SOCKETDATA, st);
    curl_multi_setopt(st->multi, CURLMOPT_TIMERFUNCTION, curl_timer);
    curl_multi_setopt(st->multi, CURLMOPT_TIMERDATA, st);
    curl_multi_setopt(st->multi, CURLMOPT_MAX_HOST_CONNECTIONS,
                      HTTP_MAX_CONNECTIONS);
    if (settings && settings->read_cache_bytes) {
        ret = qedi_storage_cache_open(&st->base, settings->read_cache_bytes,
                                      out, err);
        if (ret < 0)
            http_close(&st->base);
        return ret;
    }
    *out = &st->base;
    return 0;
}

static int http_open(const struct storage_driver *driver, qed_loop *loop,
                     const char *url, unsigned flags, struct io_file **out,
                     qed_error *err)
{
    return open_url(driver, loop, url, flags, false, out, err);
}

/* ---- s3://BUCKET/KEY ------------------------------------------------------------ */

/* A key as it goes into a URL path: '/' stays, what is not unreserved is
 * percent-encoded. */
static void append_encoded(char *out, size_t len, const char *key)
{
    static const char hex[] = "0123456789ABCDEF";
    size_t n = strlen(out);

    for (const unsigned char *k = (const unsigned char *)key; *k && n + 4 < len; k++) {
        if ((*k >= 'a' && *k <= 'z') || (*k >= 'A' && *k <= 'Z') ||
            (*k >= '0' && *k <= '9') || strchr("-._~/", *k)) {
            out[n++] = (char)*k;
        } else {
            out[n++] = '%';
            out[n++] = hex[*k >> 4];
            out[n++] = hex[*k & 15];
        }
    }
    out[n] = '\0';
}

static bool valid_bucket(const char *b, size_t len)
{
    if (len < 3 || len > 63)
        return false;
    for (size_t i = 0; i < len; i++)
        if (!((b[i] >= 'a' && b[i] <= 'z') || (b[i] >= '0' && b[i] <= '9') ||
              b[i] == '-' || b[i] == '.'))
            return false;
    return true;
}

/* A custom endpoint gets path-style requests (ENDPOINT/BUCKET/KEY); AWS
 * itself virtual-hosted ones (https://BUCKET.s3.REGION.amazonaws.com/KEY). */
static int s3_open(const struct storage_driver *driver, qed_loop *loop,
                   const char *name, unsigned flags, struct io_file **out,
                   qed_error *err)
{
    const struct storage_settings *s = driver->ctx;
    const char *bucket = name + 5, *slash = strchr(bucket, '/');
    const char *endpoint = s && s->s3_endpoint && s->s3_endpoint[0]
                               ? s->s3_endpoint : NULL;
    const char *region = s && s->s3_region && s->s3_region[0] ? s->s3_region
                                                              : "us-east-1";
    size_t blen, elen, len;
    char *url;
    int ret;

    *out = NULL;
    if (!slash || !slash[1] || !valid_bucket(bucket, (size_t)(slash - bucket)))
        return qedi_fail(err, EINVAL, "an S3 name is s3://BUCKET/KEY (a bucket "
                         "of 3 to 63 lowercase letters, digits, '.' and '-')");
    blen = (size_t)(slash - bucket);
    elen = endpoint ? strlen(endpoint) : 0;
    while (elen > 0 && endpoint[elen - 1] == '/')
        elen--;
    len = elen + blen + strlen(region) + 3 * strlen(slash) + 64;
    if (!(url = malloc(len)))
        return qedi_fail(err, ENOMEM, "out of memory");
    if (endpoint)
        snprintf(url, len, "%.*s/%.*s", (int)elen, endpoint, (int)blen, bucket);
    else
        snprintf(url, len, "https://%.*s.s3.%s.amazonaws.com", (int)blen,
                 bucket, region);
    append_encoded(url, len, slash);
    ret = open_url(driver, loop, url, flags, true, out, err);
    free(url);
    return ret;
}

const struct storage_driver qedi_storage_s3_driver = {
    .name = "s3",
    .open = s3_open,
};

const struct storage_driver qedi_storage_http_driver = {
    .name = "http",
    .open = http_open,
};
