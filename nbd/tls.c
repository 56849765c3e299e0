/* SPDX-License-Identifier: MIT */
/* TLS for the NBD server with GnuTLS.  Every credential is read and checked
 * when the server starts, so a bad file fails there with one line and never
 * at the first client.  Sessions are non-blocking: the connection code
 * drives them from its readiness events, and GnuTLS encrypts replies
 * straight from the buffers they were read into. */
#include <errno.h>
#include <fcntl.h>
#include <gnutls/gnutls.h>
#include <gnutls/x509.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "tls.h"

#define MAX_PSK_FILE (1u << 20)
#define MAX_PSK_USERNAME 256u
#define MAX_PSK_KEY 512u /* bytes */

struct psk_entry {
    char *username;
    uint8_t *key;
    size_t key_len;
};

struct nbd_tls {
    enum nbd_tls_mode mode;
    gnutls_certificate_credentials_t x509;
    gnutls_psk_server_credentials_t psk;
    gnutls_priority_t priority;
    bool check_x509_peer;   /* --tls-verify-peer, or an allow-list */
    struct psk_entry *keys;
    size_t nkeys;
    char **authz;
    size_t nauthz;
};

/* GnuTLS writes every record with its own system call: 16 KiB per sendmsg,
 * and as many wake-ups of the reader.  Records made by qedi_nbd_tls_send are
 * gathered here instead and go out two at a time: half the calls, while
 * the reader still gets its first bytes after two records are encrypted
 * (with sixteen it waited, idle, for 256 KiB: slower overall). */
#define STAGE_RECORDS 2
#define RECORD_PLAINTEXT 16384
#define RECORD_ROOM (RECORD_PLAINTEXT + 512) /* header, tag, padding */
#define STAGE_SIZE (STAGE_RECORDS * RECORD_ROOM)

struct nbd_tls_session {
    gnutls_session_t session;
    const struct nbd_tls *tls;
    int fd;
    bool staging;             /* inside qedi_nbd_tls_send: gather the records */
    uint8_t *stage;           /* encrypted bytes not yet on the socket */
    size_t stage_off, stage_len;
};

static int fail(qed_error *err, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static int fail(qed_error *err, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err->message, sizeof(err->message), fmt, ap);
    va_end(ap);
    err->code = code;
    return -code;
}

/* ---- credentials ------------------------------------------------------------ */

static void join_path(char *out, size_t size, const char *dir, const char *name)
{
    snprintf(out, size, "%s/%s", dir, name);
}

/* A readable regular file; err names it and says why not. */
static int check_readable(const char *path, qed_error *err)
{
    struct stat st;

    if (stat(path, &st) < 0)
        return fail(err, errno, "%s: %s", path, strerror(errno));
    if (!S_ISREG(st.st_mode))
        return fail(err, EINVAL, "%s: not a regular file", path);
    if (access(path, R_OK) < 0)
        return fail(err, errno, "%s: %s", path, strerror(errno));
    return 0;
}

/* Secrets (the server's private key, the PSK file) must not be open to
 * other users: anyone who can read them can impersonate the server or a
 * client.  Group access is allowed, as for an ssl-cert style group. */
static int check_secret(const char *path, const char *what, qed_error *err)
{
    struct stat st;
    int r = check_readable(path, err);

    if (r < 0)
        return r;
    if (stat(path, &st) == 0 && (st.st_mode & (S_IROTH | S_IWOTH)))
        return fail(err, EPERM, "%s: %s is accessible to other users "
                    "(mode %04o; chmod o-rwx it)", path, what,
                    (unsigned)(st.st_mode & 07777));
    return 0;
}

static bool file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

static int load_x509(struct nbd_tls *tls, const char *dir, qed_error *err)
{
    char ca[4096], cert[4096], key[4096], crl[4096];
    int r;

    join_path(ca, sizeof(ca), dir, "ca-cert.pem");
    join_path(cert, sizeof(cert), dir, "server-cert.pem");
    join_path(key, sizeof(key), dir, "server-key.pem");
    join_path(crl, sizeof(crl), dir, "ca-crl.pem");
    if ((r = check_readable(cert, err)) < 0 ||
        (r = check_secret(key, "private key", err)) < 0)
        return r;
    if (gnutls_certificate_allocate_credentials(&tls->x509) < 0)
        return fail(err, ENOMEM, "out of memory");
    r = gnutls_certificate_set_x509_key_file(tls->x509, cert, key,
                                             GNUTLS_X509_FMT_PEM);
    if (r < 0)
        return fail(err, EINVAL, "%s: cannot load the certificate with %s: %s",
                    cert, key, gnutls_strerror(r));
    /* The CA is needed to check clients; without that it is optional. */
    if (tls->check_x509_peer || file_exists(ca)) {
        if ((r = check_readable(ca, err)) < 0)
            return r;
        r = gnutls_certificate_set_x509_trust_file(tls->x509, ca,
                                                   GNUTLS_X509_FMT_PEM);
        if (r <= 0)
            return fail(err, EINVAL, "%s: no usable CA certificate%s%s", ca,
                        r < 0 ? ": " : "", r < 0 ? gnutls_strerror(r) : "");
    }
    if (file_exists(crl)) {
        if ((r = check_readable(crl, err)) < 0)
            return r;
        r = gnutls_certificate_set_x509_crl_file(tls->x509, crl,
                                                 GNUTLS_X509_FMT_PEM);
        if (r < 0)
            return fail(err, EINVAL, "%s: cannot load the revocation list: %s",
                        crl, gnutls_strerror(r));
    }
    gnutls_certificate_set_known_dh_params(tls->x509, GNUTLS_SEC_PARAM_MEDIUM);
    return 0;
}

static int hex_value(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

/* One "username:hexkey" line (without its newline) into e. */
static const char *parse_psk_line(const char *line, size_t len,
                                  struct psk_entry *e)
{
    const char *colon = memchr(line, ':', len);
    size_t ulen, hlen;

    if (!colon)
        return "expected username:hexkey";
    ulen = (size_t)(colon - line);
    hlen = len - ulen - 1;
    if (ulen == 0 || ulen > MAX_PSK_USERNAME)
        return "the username must have 1 to 256 bytes";
    if (memchr(line, '\0', ulen))
        return "the username contains a NUL byte";
    if (hlen == 0 || hlen % 2 || hlen / 2 > MAX_PSK_KEY)
        return "the key must be an even number of hex digits (2 to 1024)";
    e->username = strndup(line, ulen);
    e->key = malloc(hlen / 2);
    if (!e->username || !e->key)
        return "out of memory";
    for (size_t i = 0; i < hlen / 2; i++) {
        int hi = hex_value(colon[1 + 2 * i]), lo = hex_value(colon[2 + 2 * i]);
        if (hi < 0 || lo < 0)
            return "the key is not hexadecimal";
        e->key[i] = (uint8_t)(hi << 4 | lo);
    }
    e->key_len = hlen / 2;
    return NULL;
}

static int read_small_file(const char *path, char **out, size_t *len,
                           qed_error *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    char *buf;
    ssize_t n;

    if (fd < 0)
        return fail(err, errno, "%s: %s", path, strerror(errno));
    buf = malloc(MAX_PSK_FILE + 1);
    if (!buf) {
        close(fd);
        return fail(err, ENOMEM, "out of memory");
    }
    *len = 0;
    while ((n = read(fd, buf + *len, MAX_PSK_FILE + 1 - *len)) > 0)
        *len += (size_t)n;
    close(fd);
    if (n < 0) {
        free(buf);
        return fail(err, EIO, "%s: %s", path, strerror(errno));
    }
    if (*len > MAX_PSK_FILE) {
        free(buf);
        return fail(err, EFBIG, "%s: larger than 1 MiB", path);
    }
    *out = buf;
    return 0;
}

static void free_keys(struct nbd_tls *tls)
{
    for (size_t i = 0; i < tls->nkeys; i++) {
        free(tls->keys[i].username);
        if (tls->keys[i].key)
            gnutls_memset(tls->keys[i].key, 0, tls->keys[i].key_len);
        free(tls->keys[i].key);
    }
    free(tls->keys);
    tls->keys = NULL;
    tls->nkeys = 0;
}

static const struct psk_entry *find_key(const struct nbd_tls *tls,
                                        const char *username)
{
    for (size_t i = 0; i < tls->nkeys; i++)
        if (strcmp(tls->keys[i].username, username) == 0)
            return &tls->keys[i];
    return NULL;
}

static int parse_psk_file(struct nbd_tls *tls, const char *path,
                          const char *text, size_t len, qed_error *err)
{
    size_t lineno = 0, pos = 0;

    while (pos < len) {
        const char *line = text + pos, *nl = memchr(line, '\n', len - pos);
        size_t llen = nl ? (size_t)(nl - line) : len - pos;
        const char *why;
        struct psk_entry e = { 0 }, *grown;

        pos += llen + (nl ? 1 : 0);
        lineno++;
        if (llen && line[llen - 1] == '\r')
            llen--;
        grown = realloc(tls->keys, (tls->nkeys + 1) * sizeof(*grown));
        if (!grown)
            return fail(err, ENOMEM, "out of memory");
        tls->keys = grown;
        why = parse_psk_line(line, llen, &e);
        tls->keys[tls->nkeys++] = e; /* freed with the others */
        if (why)
            return fail(err, EINVAL, "%s: line %zu: %s", path, lineno, why);
        if (find_key(tls, e.username) != &tls->keys[tls->nkeys - 1])
            return fail(err, EINVAL, "%s: line %zu: username '%s' appears "
                        "twice", path, lineno, e.username);
    }
    if (tls->nkeys == 0)
        return fail(err, EINVAL, "%s: no keys (expected username:hexkey "
                    "lines, as psktool writes)", path);
    return 0;
}

static int psk_lookup(gnutls_session_t session, const char *username,
                      gnutls_datum_t *key)
{
    const struct nbd_tls_session *s = gnutls_session_get_ptr(session);
    const struct psk_entry *e = find_key(s->tls, username);

    if (!e)
        return -1; /* the handshake fails: unknown user */
    key->data = gnutls_malloc(e->key_len);
    if (!key->data)
        return -1;
    memcpy(key->data, e->key, e->key_len);
    key->size = (unsigned)e->key_len;
    return 0;
}

static int load_psk(struct nbd_tls *tls, const char *path, qed_error *err)
{
    char *text = NULL;
    size_t len = 0;
    int r;

    if ((r = check_secret(path, "PSK file", err)) < 0 ||
        (r = read_small_file(path, &text, &len, err)) < 0)
        return r;
    r = parse_psk_file(tls, path, text, len, err);
    gnutls_memset(text, 0, len);
    free(text);
    if (r < 0)
        return r;
    if (gnutls_psk_allocate_server_credentials(&tls->psk) < 0)
        return fail(err, ENOMEM, "out of memory");
    gnutls_psk_set_server_credentials_function(tls->psk, psk_lookup);
    gnutls_psk_set_server_known_dh_params(tls->psk, GNUTLS_SEC_PARAM_MEDIUM);
    return 0;
}

static int copy_authz(struct nbd_tls *tls, const struct nbd_tls_config *cfg,
                      qed_error *err)
{
    if (!cfg->nauthz)
        return 0;
    tls->authz = calloc(cfg->nauthz, sizeof(*tls->authz));
    if (!tls->authz)
        return fail(err, ENOMEM, "out of memory");
    for (size_t i = 0; i < cfg->nauthz; i++) {
        tls->authz[i] = strdup(cfg->authz[i]);
        if (!tls->authz[i])
            return fail(err, ENOMEM, "out of memory");
        tls->nauthz = i + 1;
    }
    return 0;
}

static int set_priority(struct nbd_tls *tls, const char *text, qed_error *err)
{
    const char *where = NULL;
    int r = gnutls_priority_init2(&tls->priority, text, &where, 0);

    if (r < 0)
        return fail(err, EINVAL, "invalid TLS priority '%s'%s%s: %s", text,
                    where ? " at " : "", where ? where : "",
                    gnutls_strerror(r));
    return 0;
}

int qedi_nbd_tls_new(const struct nbd_tls_config *cfg, struct nbd_tls **out,
                qed_error *err)
{
    struct nbd_tls *tls = calloc(1, sizeof(*tls));
    int r;

    *out = NULL;
    if (!tls)
        return fail(err, ENOMEM, "out of memory");
    tls->mode = cfg->mode;
    tls->check_x509_peer = cfg->verify_peer || cfg->nauthz > 0;
    if (!cfg->certificates_dir && !cfg->psk_file)
        r = fail(err, EINVAL, "TLS needs --tls-certificates=DIR or "
                 "--tls-psk=FILE");
    else if ((r = copy_authz(tls, cfg, err)) < 0)
        ;
    else if ((r = set_priority(tls, cfg->priority ? cfg->priority
                                   : NBD_TLS_DEFAULT_PRIORITY, err)) < 0)
        ;
    else if (cfg->certificates_dir &&
             (r = load_x509(tls, cfg->certificates_dir, err)) < 0)
        ;
    else if (cfg->psk_file)
        r = load_psk(tls, cfg->psk_file, err);
    if (r < 0) {
        qedi_nbd_tls_free(tls);
        return r;
    }
    *out = tls;
    return 0;
}

struct nbd_tls *qedi_nbd_tls_new_without_credentials(enum nbd_tls_mode mode)
{
    struct nbd_tls *tls = calloc(1, sizeof(*tls));
    if (tls)
        tls->mode = mode;
    return tls;
}

void qedi_nbd_tls_free(struct nbd_tls *tls)
{
    if (!tls)
        return;
    if (tls->x509)
        gnutls_certificate_free_credentials(tls->x509);
    if (tls->psk)
        gnutls_psk_free_server_credentials(tls->psk);
    if (tls->priority)
        gnutls_priority_deinit(tls->priority);
    free_keys(tls);
    for (size_t i = 0; i < tls->nauthz; i++)
        free(tls->authz[i]);
    free(tls->authz);
    free(tls);
}

bool qedi_nbd_tls_certificate_problem(const struct nbd_tls *tls, char *buf,
                                 size_t len)
{
    gnutls_x509_crt_t *crts = NULL;
    unsigned n = 0;
    bool problem = false;
    time_t now = time(NULL);

    if (!tls || !tls->x509 ||
        gnutls_certificate_get_x509_crt(tls->x509, 0, &crts, &n) < 0)
        return false;
    if (n > 0) {
        time_t expires = gnutls_x509_crt_get_expiration_time(crts[0]);
        time_t starts = gnutls_x509_crt_get_activation_time(crts[0]);
        struct tm tm;
        char when[32] = "";

        if (expires != (time_t)-1 && expires < now) {
            strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S UTC",
                     gmtime_r(&expires, &tm));
            snprintf(buf, len, "the server certificate expired on %s", when);
            problem = true;
        } else if (starts != (time_t)-1 && starts > now) {
            strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S UTC",
                     gmtime_r(&starts, &tm));
            snprintf(buf, len, "the server certificate is not valid before %s",
                     when);
            problem = true;
        }
    }
    for (unsigned i = 0; i < n; i++)
        gnutls_x509_crt_deinit(crts[i]);
    gnutls_free(crts);
    return problem;
}

enum nbd_tls_mode qedi_nbd_tls_get_mode(const struct nbd_tls *tls)
{
    return tls ? tls->mode : NBD_TLS_OFF;
}

/* ---- sessions --------------------------------------------------------------- */

static size_t stage_unsent(const struct nbd_tls_session *s)
{
    return s->stage_len - s->stage_off;
}

/* Writes what the stage holds: 0 when it is all out, NBD_TLS_AGAIN when
 * the socket is full, NBD_TLS_FAILED when the connection is broken. */
static int flush_stage(struct nbd_tls_session *s)
{
    while (stage_unsent(s) > 0) {
        ssize_t n = send(s->fd, s->stage + s->stage_off, stage_unsent(s),
                         MSG_NOSIGNAL | MSG_DONTWAIT);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return errno == EAGAIN || errno == EWOULDBLOCK ? NBD_TLS_AGAIN
                                                           : NBD_TLS_FAILED;
        }
        s->stage_off += (size_t)n;
    }
    s->stage_off = s->stage_len = 0;
    return 0;
}

static bool stage_append(struct nbd_tls_session *s, const giovec_t *iov,
                         int iovcnt, size_t total)
{
    if (!s->stage) {
        s->stage = malloc(STAGE_SIZE);
        if (!s->stage)
            return false;
    }
    if (STAGE_SIZE - s->stage_len < total)
        return false;
    for (int i = 0; i < iovcnt; i++) {
        memcpy(s->stage + s->stage_len, iov[i].iov_base, iov[i].iov_len);
        s->stage_len += iov[i].iov_len;
    }
    return true;
}

/* GnuTLS's writer.  Bytes keep their order: while the stage holds some,
 * everything goes behind them (a TLS 1.3 key update, close_notify). */
static ssize_t push_records(gnutls_transport_ptr_t ptr, const giovec_t *iov,
                            int iovcnt)
{
    struct nbd_tls_session *s = ptr;
    size_t total = 0;

    for (int i = 0; i < iovcnt; i++)
        total += iov[i].iov_len;
    if (s->staging || stage_unsent(s) > 0) {
        if (stage_append(s, iov, iovcnt, total))
            return (ssize_t)total;
        int r = flush_stage(s);
        if (r == 0 && stage_append(s, iov, iovcnt, total))
            return (ssize_t)total;
        if (r == 0 && !s->staging)
            goto direct; /* larger than the stage, which is now empty */
        errno = r == NBD_TLS_FAILED ? EPIPE : EAGAIN;
        gnutls_transport_set_errno(s->session, errno);
        return -1;
    }
direct:;
    struct msghdr msg = { .msg_iov = (struct iovec *)iov,
                          .msg_iovlen = (size_t)iovcnt };
    ssize_t n = sendmsg(s->fd, &msg, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n < 0)
        gnutls_transport_set_errno(s->session, errno);
    return n;
}

struct nbd_tls_session *qedi_nbd_tls_session_new(const struct nbd_tls *tls, int fd)
{
    struct nbd_tls_session *s;

    if (!tls->priority || (!tls->x509 && !tls->psk))
        return NULL; /* no credentials: nothing to negotiate with */
    s = calloc(1, sizeof(*s));
    if (!s)
        return NULL;
    s->tls = tls;
    if (gnutls_init(&s->session, GNUTLS_SERVER | GNUTLS_NONBLOCK |
                                 GNUTLS_NO_SIGNAL) < 0) {
        free(s);
        return NULL;
    }
    if (gnutls_priority_set(s->session, tls->priority) < 0 ||
        (tls->x509 && gnutls_credentials_set(s->session, GNUTLS_CRD_CERTIFICATE,
                                             tls->x509) < 0) ||
        (tls->psk && gnutls_credentials_set(s->session, GNUTLS_CRD_PSK,
                                            tls->psk) < 0)) {
        qedi_nbd_tls_session_free(s);
        return NULL;
    }
    if (tls->x509 && tls->check_x509_peer) {
        gnutls_certificate_server_set_request(s->session, GNUTLS_CERT_REQUIRE);
        gnutls_session_set_verify_cert(s->session, NULL, 0);
    }
    /* The server's own handshake timer bounds the handshake. */
    gnutls_handshake_set_timeout(s->session, 0);
    gnutls_session_set_ptr(s->session, s);
    s->fd = fd;
    /* GnuTLS reads the socket itself; what it writes goes through
     * push_records, which may gather it in the stage. */
    gnutls_transport_set_ptr2(s->session,
                              (gnutls_transport_ptr_t)(intptr_t)fd, s);
    gnutls_transport_set_vec_push_function(s->session, push_records);
    return s;
}

void qedi_nbd_tls_session_free(struct nbd_tls_session *s)
{
    if (!s)
        return;
    gnutls_deinit(s->session);
    free(s->stage);
    free(s);
}

static bool on_list(const struct nbd_tls *tls, const char *identity)
{
    if (tls->nauthz == 0)
        return true;
    for (size_t i = 0; identity && i < tls->nauthz; i++)
        if (strcmp(tls->authz[i], identity) == 0)
            return true;
    return false;
}

/* The verified client certificate's subject DN, as `certtool -i` prints it
 * (RFC 4514), or NULL; free with gnutls_free. */
static char *peer_dn(gnutls_session_t session)
{
    unsigned count = 0, status = 1;
    const gnutls_datum_t *certs = gnutls_certificate_get_peers(session, &count);
    gnutls_x509_crt_t crt;
    gnutls_datum_t dn = { 0 };

    if (!certs || count == 0 ||
        gnutls_certificate_verify_peers2(session, &status) < 0 || status != 0)
        return NULL;
    if (gnutls_x509_crt_init(&crt) < 0)
        return NULL;
    if (gnutls_x509_crt_import(crt, &certs[0], GNUTLS_X509_FMT_DER) < 0 ||
        gnutls_x509_crt_get_dn3(crt, &dn, 0) < 0)
        dn.data = NULL;
    gnutls_x509_crt_deinit(crt);
    return (char *)dn.data;
}

/* Who the client proved to be, checked against the allow-list. */
static bool authorised(const struct nbd_tls_session *s)
{
    const struct nbd_tls *tls = s->tls;
    gnutls_session_t session = s->session;

    if (gnutls_auth_get_type(session) == GNUTLS_CRD_PSK)
        return on_list(tls, gnutls_psk_server_get_username(session));
    if (!tls->check_x509_peer)
        return true;
    char *dn = peer_dn(session);
    bool ok = dn && on_list(tls, dn);
    gnutls_free(dn);
    return ok;
}

static bool try_again(int r)
{
    return r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED;
}

int qedi_nbd_tls_handshake(struct nbd_tls_session *s)
{
    int r;

    /* Warnings (non-fatal alerts) mean: call again. */
    for (int i = 0; i < 16; i++) {
        r = gnutls_handshake(s->session);
        if (r == 0)
            return authorised(s) ? 1 : NBD_TLS_FAILED;
        if (try_again(r))
            return NBD_TLS_AGAIN;
        if (gnutls_error_is_fatal(r))
            return NBD_TLS_FAILED;
    }
    return NBD_TLS_FAILED;
}

bool qedi_nbd_tls_wants_write(const struct nbd_tls_session *s)
{
    return gnutls_record_get_direction(s->session) == 1;
}

ssize_t qedi_nbd_tls_recv(struct nbd_tls_session *s, void *buf, size_t len)
{
    ssize_t r = gnutls_record_recv(s->session, buf, len);

    if (r >= 0)
        return r;
    if (try_again((int)r))
        return NBD_TLS_AGAIN;
    /* A peer that just closed the socket: an end of input like any other. */
    if (r == GNUTLS_E_PREMATURE_TERMINATION)
        return 0;
    /* Renegotiation is not supported; other warnings are skipped. */
    if (r == GNUTLS_E_REHANDSHAKE || gnutls_error_is_fatal((int)r))
        return NBD_TLS_FAILED;
    return NBD_TLS_AGAIN;
}

ssize_t qedi_nbd_tls_send(struct nbd_tls_session *s, const void *buf, size_t len)
{
    size_t done = 0;

    if (STAGE_SIZE - s->stage_len < RECORD_ROOM) {
        int f = flush_stage(s);
        if (f < 0)
            return f;
    }
    /* Full records, encrypted straight from buf into the stage. */
    s->staging = true;
    while (done < len && STAGE_SIZE - s->stage_len >= RECORD_ROOM) {
        size_t take = len - done < RECORD_PLAINTEXT ? len - done
                                                    : RECORD_PLAINTEXT;
        ssize_t r = gnutls_record_send(s->session, (const char *)buf + done,
                                       take);
        if (r <= 0) {
            s->staging = false;
            if (done > 0)
                return (ssize_t)done;
            return try_again((int)r) ? NBD_TLS_AGAIN : NBD_TLS_FAILED;
        }
        done += (size_t)r;
    }
    s->staging = false;
    if (STAGE_SIZE - s->stage_len < RECORD_ROOM && flush_stage(s) ==
                                                       NBD_TLS_FAILED)
        return NBD_TLS_FAILED;
    return (ssize_t)done;
}

int qedi_nbd_tls_flush(struct nbd_tls_session *s)
{
    return flush_stage(s);
}

bool qedi_nbd_tls_unsent(const struct nbd_tls_session *s)
{
    return stage_unsent(s) > 0;
}

size_t qedi_nbd_tls_pending(struct nbd_tls_session *s)
{
    return gnutls_record_check_pending(s->session);
}

void qedi_nbd_tls_bye(struct nbd_tls_session *s)
{
    if (flush_stage(s) < 0)
        return;
    gnutls_bye(s->session, GNUTLS_SHUT_WR);
}
