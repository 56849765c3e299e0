/* SPDX-License-Identifier: MIT */
/* The fixed-newstyle handshake: greeting, client flags, and option haggling
 * (EXPORT_NAME, ABORT, LIST, INFO, GO, STRUCTURED_REPLY, LIST_META_CONTEXT,
 * SET_META_CONTEXT).  Unknown options are answered with an error and
 * negotiation goes on; malformed ones end the connection. */
#include <errno.h>
#include <stdlib.h>

#include "nbd.h"
#include "proto.h"

#define CONTEXT_BASE "base:allocation"
#define CONTEXT_DEPTH "qemu:allocation-depth"
#define CONTEXT_BASE_ID 1u
#define CONTEXT_DEPTH_ID 2u

/* ---- replies ------------------------------------------------------------------ */

static void reply(struct nbd_conn *c, uint32_t type, const void *data,
                  size_t len)
{
    uint8_t head[20];
    void *copy = NULL;

    nbd_put64(head, NBD_REP_MAGIC);
    nbd_put32(head + 8, c->option);
    nbd_put32(head + 12, type);
    nbd_put32(head + 16, (uint32_t)len);
    if (len) {
        copy = malloc(len);
        if (!copy) {
            qedi_conn_close(c, true);
            return;
        }
        memcpy(copy, data, len);
    }
    qedi_conn_send(c, head, sizeof(head), copy, len, copy, 0);
}

static void reply_error(struct nbd_conn *c, uint32_t type, const char *msg)
{
    reply(c, type, msg, msg ? strlen(msg) : 0);
}

/* ---- transmission flags and export info ------------------------------------- */

static uint16_t transmission_flags(const struct nbd_conn *c)
{
    uint16_t f = NBD_FLAG_HAS_FLAGS | NBD_FLAG_SEND_FLUSH | NBD_FLAG_SEND_FUA |
                 NBD_FLAG_SEND_TRIM | NBD_FLAG_SEND_WRITE_ZEROES |
                 NBD_FLAG_CAN_MULTI_CONN | NBD_FLAG_SEND_CACHE |
                 NBD_FLAG_SEND_FAST_ZERO;

    if (c->srv->opts.read_only)
        f |= NBD_FLAG_READ_ONLY;
    /* "Don't fragment" only means something with structured replies. */
    if (c->structured)
        f |= NBD_FLAG_SEND_DF;
    return f;
}

static void enter_transmission(struct nbd_conn *c)
{
    c->tx_flags = transmission_flags(c);
    c->phase = PHASE_TRANSMISSION;
    free(c->payload);
    c->payload = NULL;
    qedi_conn_expect_header(c, NBD_REQUEST_SIZE);
}

static void send_info_export(struct nbd_conn *c)
{
    uint8_t info[12];
    nbd_put16(info, NBD_INFO_EXPORT);
    nbd_put64(info + 2, qed_size(c->srv->img));
    nbd_put16(info + 10, transmission_flags(c));
    reply(c, NBD_REP_INFO, info, sizeof(info));
}

static void send_info_block_size(struct nbd_conn *c)
{
    uint8_t info[14];
    nbd_put16(info, NBD_INFO_BLOCK_SIZE);
    nbd_put32(info + 2, 1);
    nbd_put32(info + 6, c->srv->preferred_block);
    nbd_put32(info + 10, NBD_MAX_PAYLOAD);
    reply(c, NBD_REP_INFO, info, sizeof(info));
}

static void send_info_string(struct nbd_conn *c, uint16_t type,
                             const char *text)
{
    size_t len = strlen(text);
    uint8_t *info = malloc(2 + len);
    if (!info) {
        qedi_conn_close(c, true);
        return;
    }
    nbd_put16(info, type);
    memcpy(info + 2, text, len);
    reply(c, NBD_REP_INFO, info, 2 + len);
    free(info);
}

/* ---- option parsing helpers ---------------------------------------------------- */

struct cursor {
    const uint8_t *p;
    size_t left;
};

static bool take32(struct cursor *cur, uint32_t *v)
{
    if (cur->left < 4)
        return false;
    *v = nbd_get32(cur->p);
    cur->p += 4;
    cur->left -= 4;
    return true;
}

static bool take16(struct cursor *cur, uint16_t *v)
{
    if (cur->left < 2)
        return false;
    *v = nbd_get16(cur->p);
    cur->p += 2;
    cur->left -= 2;
    return true;
}

static bool take_string(struct cursor *cur, uint32_t len, const uint8_t **s)
{
    if (len > 4096 || cur->left < len)
        return false;
    *s = cur->p;
    cur->p += len;
    cur->left -= len;
    return true;
}

static bool name_is_export(const struct nbd_conn *c, const uint8_t *name,
                           uint32_t len)
{
    const char *ours = c->srv->export_name;
    /* An empty option has no buffer at all: compare lengths first. */
    return strlen(ours) == len && (len == 0 || memcmp(ours, name, len) == 0);
}

static bool text_equals(const uint8_t *s, uint32_t len, const char *want)
{
    return strlen(want) == len && (len == 0 || memcmp(s, want, len) == 0);
}

/* ---- options ------------------------------------------------------------------- */

static void option_export_name(struct nbd_conn *c)
{
    uint8_t head[10 + 124] = { 0 };

    if (!name_is_export(c, c->payload, (uint32_t)c->payload_len)) {
        /* No way to report an error here: the protocol says hang up. */
        qedi_conn_close(c, true);
        return;
    }
    if (!qedi_admission_claim_slot(c))
        return; /* answered once a client leaves */
    c->structured = false; /* EXPORT_NAME cannot carry structured replies */
    nbd_put64(head, qed_size(c->srv->img));
    nbd_put16(head + 8, transmission_flags(c));
    qedi_conn_send(c, head, c->no_zeroes ? 10 : sizeof(head), NULL, 0, NULL, 0);
    enter_transmission(c);
}

static void option_list(struct nbd_conn *c)
{
    size_t len = strlen(c->srv->export_name);
    uint8_t *data;

    if (c->payload_len != 0) {
        reply_error(c, NBD_REP_ERR_INVALID, "LIST takes no data");
        return;
    }
    data = malloc(4 + len);
    if (!data) {
        qedi_conn_close(c, true);
        return;
    }
    nbd_put32(data, (uint32_t)len);
    memcpy(data + 4, c->srv->export_name, len);
    reply(c, NBD_REP_SERVER, data, 4 + len);
    free(data);
    reply(c, NBD_REP_ACK, NULL, 0);
}

static void option_info_or_go(struct nbd_conn *c, bool go)
{
    struct cursor cur = { c->payload, c->payload_len };
    const uint8_t *name;
    uint32_t name_len;
    uint16_t count, type = 0;
    bool want_name = false, want_desc = false, want_block = false;

    if (!take32(&cur, &name_len) || !take_string(&cur, name_len, &name) ||
        !take16(&cur, &count) || cur.left != (size_t)count * 2) {
        reply_error(c, NBD_REP_ERR_INVALID, "malformed INFO/GO request");
        return;
    }
    for (uint16_t i = 0; i < count; i++) {
        take16(&cur, &type);
        want_name |= type == NBD_INFO_NAME;
        want_desc |= type == NBD_INFO_DESCRIPTION;
        want_block |= type == NBD_INFO_BLOCK_SIZE;
    }
    if (!name_is_export(c, name, name_len)) {
        reply_error(c, NBD_REP_ERR_UNKNOWN, "no such export");
        return;
    }
    if (go && !qedi_admission_claim_slot(c))
        return; /* answered once a client leaves */
    send_info_export(c);
    if (want_name)
        send_info_string(c, NBD_INFO_NAME, c->srv->export_name);
    if (want_desc && c->srv->opts.description)
        send_info_string(c, NBD_INFO_DESCRIPTION, c->srv->opts.description);
    if (want_block)
        send_info_block_size(c);
    reply(c, NBD_REP_ACK, NULL, 0);
    if (go)
        enter_transmission(c);
}

static void option_structured_reply(struct nbd_conn *c)
{
    if (c->payload_len != 0) {
        reply_error(c, NBD_REP_ERR_INVALID, "STRUCTURED_REPLY takes no data");
        return;
    }
    c->structured = true;
    reply(c, NBD_REP_ACK, NULL, 0);
}

static void send_context(struct nbd_conn *c, uint32_t id, const char *name)
{
    size_t len = strlen(name);
    uint8_t data[4 + 64];
    nbd_put32(data, id);
    memcpy(data + 4, name, len);
    reply(c, NBD_REP_META_CONTEXT, data, 4 + len);
}

/* Which of our contexts a query names: a full name, or (when listing) a
 * namespace like "base:" or "qemu:". */
static void match_query(const uint8_t *q, uint32_t len, bool listing,
                        bool *base, bool *depth)
{
    if (text_equals(q, len, CONTEXT_BASE) ||
        (listing && text_equals(q, len, "base:")))
        *base = true;
    if (text_equals(q, len, CONTEXT_DEPTH) ||
        (listing && text_equals(q, len, "qemu:")))
        *depth = true;
}

static void option_meta_context(struct nbd_conn *c, bool set)
{
    struct cursor cur = { c->payload, c->payload_len };
    const uint8_t *name, *query;
    uint32_t name_len, count, qlen;
    bool base = false, depth = false;

    if (set && !c->structured) {
        reply_error(c, NBD_REP_ERR_INVALID,
                    "SET_META_CONTEXT needs structured replies first");
        return;
    }
    if (!take32(&cur, &name_len) || !take_string(&cur, name_len, &name) ||
        !take32(&cur, &count)) {
        reply_error(c, NBD_REP_ERR_INVALID, "malformed meta context request");
        return;
    }
    for (uint32_t i = 0; i < count; i++) {
        if (!take32(&cur, &qlen) || !take_string(&cur, qlen, &query)) {
            reply_error(c, NBD_REP_ERR_INVALID, "malformed meta context query");
            return;
        }
        match_query(query, qlen, !set, &base, &depth);
    }
    if (cur.left != 0) {
        reply_error(c, NBD_REP_ERR_INVALID, "trailing bytes in meta context "
                                            "request");
        return;
    }
    if (!name_is_export(c, name, name_len)) {
        reply_error(c, NBD_REP_ERR_UNKNOWN, "no such export");
        return;
    }
    if (!set && count == 0)
        base = depth = true;
    if (set) {
        c->meta_base = base;
        c->meta_depth = depth;
    }
    if (base)
        send_context(c, set ? CONTEXT_BASE_ID : 0, CONTEXT_BASE);
    if (depth)
        send_context(c, set ? CONTEXT_DEPTH_ID : 0, CONTEXT_DEPTH);
    reply(c, NBD_REP_ACK, NULL, 0);
}

/* NBD_OPT_STARTTLS: the ACK goes out in plaintext, then connection.c runs
 * the TLS handshake.  Whatever was negotiated in plaintext could have been
 * injected by someone in the middle, so it is forgotten. */
static void option_starttls(struct nbd_conn *c)
{
    /* Set before the reply: the handshake may start (and, with a client
     * that sends ahead, even finish) inside it. */
    qedi_conn_expect_header(c, NBD_OPTION_HEADER_SIZE);
    if (qedi_nbd_tls_get_mode(c->srv->opts.tls) == NBD_TLS_OFF) {
        reply_error(c, NBD_REP_ERR_UNSUP, "TLS is not enabled on this server");
        return;
    }
    if (c->tls_state != TLS_NONE) {
        reply_error(c, NBD_REP_ERR_INVALID, "TLS is already negotiated");
        return;
    }
    if (c->payload_len != 0) {
        reply_error(c, NBD_REP_ERR_INVALID, "STARTTLS takes no data");
        return;
    }
    c->structured = false;
    c->meta_base = c->meta_depth = false;
    c->tls_state = TLS_STARTING;
    reply(c, NBD_REP_ACK, NULL, 0);
}

/* Before TLS, a server that requires it answers nothing but STARTTLS and
 * ABORT, and says nothing about its export.  Returns true when the option
 * was dealt with here. */
static bool refused_before_tls(struct nbd_conn *c)
{
    if (qedi_nbd_tls_get_mode(c->srv->opts.tls) != NBD_TLS_REQUIRE ||
        c->tls_state == TLS_ACTIVE || c->option == NBD_OPT_STARTTLS ||
        c->option == NBD_OPT_ABORT)
        return false;
    if (c->option == NBD_OPT_EXPORT_NAME) {
        /* No error reply exists for EXPORT_NAME: hang up. */
        qedi_conn_close(c, true);
        return true;
    }
    reply_error(c, NBD_REP_ERR_TLS_REQD, "TLS is required on this server");
    return true;
}

static void handle_option(struct nbd_conn *c)
{
    if (refused_before_tls(c)) {
        if (!c->closed)
            qedi_conn_expect_header(c, NBD_OPTION_HEADER_SIZE);
        return;
    }
    switch (c->option) {
    case NBD_OPT_EXPORT_NAME:
        option_export_name(c);
        return;
    case NBD_OPT_ABORT:
        reply(c, NBD_REP_ACK, NULL, 0);
        qedi_conn_close(c, false);
        return;
    case NBD_OPT_LIST:
        option_list(c);
        break;
    case NBD_OPT_INFO:
    case NBD_OPT_GO:
        option_info_or_go(c, c->option == NBD_OPT_GO);
        if (c->phase == PHASE_TRANSMISSION || c->queue == QUEUE_WAITING)
            return;
        break;
    case NBD_OPT_STRUCTURED_REPLY:
        option_structured_reply(c);
        break;
    case NBD_OPT_LIST_META_CONTEXT:
    case NBD_OPT_SET_META_CONTEXT:
        option_meta_context(c, c->option == NBD_OPT_SET_META_CONTEXT);
        break;
    case NBD_OPT_STARTTLS:
        option_starttls(c);
        return;
    default:
        reply_error(c, NBD_REP_ERR_UNSUP, "unknown option");
        break;
    }
    if (!c->closed && c->phase == PHASE_OPTIONS)
        qedi_conn_expect_header(c, NBD_OPTION_HEADER_SIZE);
}

/* ---- entry points from connection.c ------------------------------------------ */

void qedi_handshake_start(struct nbd_conn *c)
{
    uint8_t greeting[18];

    nbd_put64(greeting, NBD_MAGIC);
    nbd_put64(greeting + 8, NBD_IHAVEOPT);
    nbd_put16(greeting + 16, NBD_FLAG_FIXED_NEWSTYLE | NBD_FLAG_NO_ZEROES);
    c->phase = PHASE_CLIENT_FLAGS;
    qedi_conn_expect_header(c, 4);
    qedi_conn_send(c, greeting, sizeof(greeting), NULL, 0, NULL, 0);
}

void qedi_handshake_header(struct nbd_conn *c)
{
    if (c->phase == PHASE_CLIENT_FLAGS) {
        uint32_t flags = nbd_get32(c->header);
        /* A client that is not fixed-newstyle, or asks for what we do not
         * know, cannot be served. */
        if (!(flags & NBD_FLAG_C_FIXED_NEWSTYLE) ||
            (flags & ~(NBD_FLAG_C_FIXED_NEWSTYLE | NBD_FLAG_C_NO_ZEROES))) {
            qedi_conn_close(c, true);
            return;
        }
        c->no_zeroes = (flags & NBD_FLAG_C_NO_ZEROES) != 0;
        c->phase = PHASE_OPTIONS;
        qedi_conn_expect_header(c, NBD_OPTION_HEADER_SIZE);
        return;
    }
    if (nbd_get64(c->header) != NBD_IHAVEOPT) {
        qedi_conn_close(c, true);
        return;
    }
    c->option = nbd_get32(c->header + 8);
    uint32_t len = nbd_get32(c->header + 12);
    if (len > NBD_MAX_OPTION) {
        /* Too big to read, too big to skip politely: hang up. */
        qedi_conn_close(c, true);
        return;
    }
    c->payload_len = len;
    if (qedi_conn_expect_payload(c, len, false) < 0) {
        qedi_conn_close(c, true);
        return;
    }
    if (len == 0)
        qedi_handshake_payload(c);
}

void qedi_handshake_payload(struct nbd_conn *c)
{
    handle_option(c);
}

void qedi_handshake_resume(struct nbd_conn *c)
{
    /* The option and its data are still held: answering it now goes the
     * same way as answering it then, the slot being taken. */
    handle_option(c);
    if (!c->closed)
        qedi_conn_update_watch(c);
}
