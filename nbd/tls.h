/* SPDX-License-Identifier: MIT */
/* TLS for the NBD server (GnuTLS): the credentials, loaded and checked once
 * at start-up, and one non-blocking session per connection that upgrades
 * with NBD_OPT_STARTTLS.  No GnuTLS type leaks out of this header. */
#ifndef QED_NBD_TLS_H
#define QED_NBD_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

#include "qed.h"

enum nbd_tls_mode {
    NBD_TLS_OFF,      /* STARTTLS answered NBD_REP_ERR_UNSUP */
    NBD_TLS_ON,       /* offered; plaintext clients are served too */
    NBD_TLS_REQUIRE,  /* nothing but STARTTLS and ABORT before TLS */
};

/* Refuses SSL 3, TLS 1.0 and TLS 1.1; allows the PSK key exchanges. */
#define NBD_TLS_DEFAULT_PRIORITY \
    "NORMAL:-VERS-ALL:+VERS-TLS1.3:+VERS-TLS1.2:+ECDHE-PSK:+DHE-PSK:+PSK"

struct nbd_tls_config {
    enum nbd_tls_mode mode;
    const char *certificates_dir;  /* ca-cert.pem, server-cert.pem, ... */
    const char *psk_file;          /* psktool's "username:hexkey" lines */
    bool verify_peer;              /* X.509 clients need a CA-signed cert */
    const char *const *authz;      /* allowed client identities ... */
    size_t nauthz;                 /* ... none: anyone who authenticates */
    const char *priority;          /* NULL: NBD_TLS_DEFAULT_PRIORITY */
};

struct nbd_tls;          /* credentials shared by every connection */
struct nbd_tls_session;  /* one connection's TLS state */

/* Loads and checks every credential; err names the file and the problem. */
int qedi_nbd_tls_new(const struct nbd_tls_config *cfg, struct nbd_tls **out,
                qed_error *err);
void qedi_nbd_tls_free(struct nbd_tls *tls);
enum nbd_tls_mode qedi_nbd_tls_get_mode(const struct nbd_tls *tls);
/* Why clients will refuse the server's certificate (expired, not yet
 * valid), written into buf; false when it is fine or there is none. */
bool qedi_nbd_tls_certificate_problem(const struct nbd_tls *tls, char *buf,
                                 size_t len);
/* The mode alone, no credentials: the fuzzer's way to reach the paths a
 * client takes before TLS. */
struct nbd_tls *qedi_nbd_tls_new_without_credentials(enum nbd_tls_mode mode);

/* Results of the session calls below besides byte counts. */
#define NBD_TLS_AGAIN (-1)   /* wait for the socket (qedi_nbd_tls_wants_write) */
#define NBD_TLS_FAILED (-2)  /* the session is unusable: close */

struct nbd_tls_session *qedi_nbd_tls_session_new(const struct nbd_tls *tls, int fd);
void qedi_nbd_tls_session_free(struct nbd_tls_session *s);
/* 1: handshake done and the client authorised; NBD_TLS_AGAIN;
 * NBD_TLS_FAILED (bad handshake, failed verification, not on the list). */
int qedi_nbd_tls_handshake(struct nbd_tls_session *s);
/* While NBD_TLS_AGAIN: whether the session waits to write (else to read). */
bool qedi_nbd_tls_wants_write(const struct nbd_tls_session *s);
/* Bytes read (0: the peer closed), NBD_TLS_AGAIN or NBD_TLS_FAILED. */
ssize_t qedi_nbd_tls_recv(struct nbd_tls_session *s, void *buf, size_t len);
/* Bytes of buf taken (encrypted, perhaps not all on the socket yet: see
 * qedi_nbd_tls_unsent), NBD_TLS_AGAIN or NBD_TLS_FAILED. */
ssize_t qedi_nbd_tls_send(struct nbd_tls_session *s, const void *buf, size_t len);
/* Writes the encrypted bytes qedi_nbd_tls_send left behind: 0 when none is
 * left, NBD_TLS_AGAIN (wait until writable) or NBD_TLS_FAILED. */
int qedi_nbd_tls_flush(struct nbd_tls_session *s);
bool qedi_nbd_tls_unsent(const struct nbd_tls_session *s);
/* Decrypted bytes waiting inside the session: the socket will not say. */
size_t qedi_nbd_tls_pending(struct nbd_tls_session *s);
/* Sends close_notify if the socket takes it at once. */
void qedi_nbd_tls_bye(struct nbd_tls_session *s);

#endif
