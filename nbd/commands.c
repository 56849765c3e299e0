/* SPDX-License-Identifier: MIT */
/* The transmission phase: requests (READ, WRITE, FLUSH, TRIM, CACHE,
 * WRITE_ZEROES, BLOCK_STATUS, DISC) turned into asynchronous image requests,
 * and their simple or structured replies.  Reads with structured replies
 * send hole chunks where the image reads as zeros without data (unallocated
 * or zero clusters), taken from the block status of the range. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>

#include "nbd.h"
#include "proto.h"

#define CONTEXT_BASE_ID 1u
#define CONTEXT_DEPTH_ID 2u
#define MAX_EXTENTS 1024u
#define ZERO_CHUNK (1u << 20)
#define MIN_U64(a, b) ((uint64_t)(a) < (uint64_t)(b) ? (uint64_t)(a) : (uint64_t)(b))

struct extent {
    uint64_t offset, length;
    bool zero, data, present;
    unsigned depth;
};

struct nbd_command {
    struct nbd_conn *conn;
    uint16_t flags, type;
    uint64_t cookie, offset;
    uint32_t length;
    uint32_t error;          /* NBD error found while validating */
    uint8_t *buf;
    uint8_t *read_base;      /* a READ's allocation: headroom, then buf */
    size_t buffered;         /* bytes counted in conn->buffered */
    int pending;
    int ret;                 /* first failure, -errno */
    char message[sizeof(((qed_error *)0)->message)];
    /* block status walk */
    struct extent *ext;
    unsigned next, cap, max_extents;
    uint64_t walk_pos, walk_end;
    struct qed_block_status st;
    bool walk_failed;
    /* write-zeroes with NO_HOLE */
    uint64_t zero_pos;
    uint8_t *zeros;
    struct iovec *zero_iov;
};

static uint32_t errno_to_nbd(int err)
{
    switch (err) {
    case EPERM:
    case EROFS:
        return NBD_EPERM;
    case ENOMEM:
        return NBD_ENOMEM;
    case EINVAL:
        return NBD_EINVAL;
    case ENOSPC:
    case EDQUOT:
    case EFBIG:
        return NBD_ENOSPC;
    case EOVERFLOW:
        return NBD_EOVERFLOW;
    case ENOTSUP:
        return NBD_ENOTSUP;
    case ESHUTDOWN:
        return NBD_ESHUTDOWN;
    default:
        return NBD_EIO;
    }
}

/* ---- replies ------------------------------------------------------------------ */

static void finish(struct nbd_command *cmd)
{
    struct nbd_conn *c = cmd->conn;
    size_t buffered = cmd->buffered;

    free(cmd->ext);
    free(cmd->zeros);
    free(cmd->zero_iov);
    free(cmd);
    qedi_conn_request_done(c, buffered);
}

static void simple_reply(struct nbd_command *cmd, uint32_t error,
                         const void *data, size_t len, void *owned)
{
    uint8_t head[16];
    nbd_put32(head, NBD_SIMPLE_REPLY_MAGIC);
    nbd_put32(head + 4, error);
    nbd_put64(head + 8, cmd->cookie);
    qedi_conn_send(cmd->conn, head, sizeof(head), error ? NULL : data,
              error ? 0 : len, owned, len);
}

static void chunk_header(uint8_t *head, const struct nbd_command *cmd,
                         uint16_t flags, uint16_t type, uint32_t len)
{
    nbd_put32(head, NBD_STRUCTURED_REPLY_MAGIC);
    nbd_put16(head + 4, flags);
    nbd_put16(head + 6, type);
    nbd_put64(head + 8, cmd->cookie);
    nbd_put32(head + 16, len);
}

static void structured_error(struct nbd_command *cmd, uint32_t error,
                             const char *msg)
{
    size_t mlen = msg ? strnlen(msg, 1024) : 0;
    uint8_t head[20 + 6 + 1024];

    chunk_header(head, cmd, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_ERROR,
                 (uint32_t)(6 + mlen));
    nbd_put32(head + 20, error);
    nbd_put16(head + 24, (uint16_t)mlen);
    if (mlen)
        memcpy(head + 26, msg, mlen);
    qedi_conn_send(cmd->conn, head, 26 + mlen, NULL, 0, NULL, 0);
}

/* Errors go in the reply form the command's success would have used. */
static void reply_error(struct nbd_command *cmd, uint32_t error,
                        const char *msg)
{
    bool structured_cmd = cmd->type == NBD_CMD_READ ||
                          cmd->type == NBD_CMD_BLOCK_STATUS;
    if (cmd->conn->structured && structured_cmd)
        structured_error(cmd, error, msg);
    else
        simple_reply(cmd, error, NULL, 0, NULL);
}

static void reply_status(struct nbd_command *cmd)
{
    if (cmd->ret < 0)
        reply_error(cmd, errno_to_nbd(-cmd->ret), cmd->message);
    else
        simple_reply(cmd, 0, NULL, 0, NULL);
}

/* ---- sub-operation bookkeeping ------------------------------------------------- */

static void note_result(struct nbd_command *cmd, int ret, const qed_error *err)
{
    if (ret < 0 && cmd->ret == 0) {
        cmd->ret = ret;
        snprintf(cmd->message, sizeof(cmd->message), "%s",
                 err ? err->message : strerror(-ret));
    }
}

/* ---- block status walk --------------------------------------------------------- */

static void walk_step(struct nbd_command *cmd, void (*done)(struct nbd_command *));

struct walk_ctx {
    struct nbd_command *cmd;
    void (*done)(struct nbd_command *);
};

static bool add_extent(struct nbd_command *cmd, const struct qed_block_status *st,
                       uint64_t offset)
{
    struct extent e = { .offset = offset, .length = st->length,
                        .zero = st->zero, .data = st->data,
                        .present = st->present, .depth = st->depth };

    if (cmd->next == cmd->cap) {
        unsigned cap = cmd->cap ? cmd->cap * 2 : 8;
        struct extent *n = realloc(cmd->ext, sizeof(*n) * cap);
        if (!n)
            return false;
        cmd->ext = n;
        cmd->cap = cap;
    }
    cmd->ext[cmd->next++] = e;
    return true;
}

static void walk_answer(void *opaque, int ret, const qed_error *err)
{
    struct walk_ctx *w = opaque;
    struct nbd_command *cmd = w->cmd;
    void (*done)(struct nbd_command *) = w->done;

    free(w);
    (void)err;
    if (ret < 0 || cmd->st.length == 0 || !add_extent(cmd, &cmd->st, cmd->walk_pos)) {
        cmd->walk_failed = true;
        if (ret < 0)
            note_result(cmd, ret, err);
        done(cmd);
        return;
    }
    cmd->walk_pos += cmd->st.length;
    walk_step(cmd, done);
}

/* Collects the extents of [walk_pos, walk_end), at most max_extents. */
static void walk_step(struct nbd_command *cmd, void (*done)(struct nbd_command *))
{
    struct walk_ctx *w;
    int ret;

    if (cmd->walk_pos >= cmd->walk_end || cmd->next >= cmd->max_extents) {
        done(cmd);
        return;
    }
    w = malloc(sizeof(*w));
    if (!w) {
        cmd->walk_failed = true;
        done(cmd);
        return;
    }
    w->cmd = cmd;
    w->done = done;
    qed_block_status_init(&cmd->st);
    ret = qed_aio_block_status(cmd->conn->srv->img, cmd->walk_pos,
                               cmd->walk_end - cmd->walk_pos, &cmd->st,
                               walk_answer, w);
    if (ret < 0) {
        free(w);
        cmd->walk_failed = true;
        done(cmd);
    }
}

static void walk(struct nbd_command *cmd, unsigned max_extents,
                 void (*done)(struct nbd_command *))
{
    cmd->walk_pos = cmd->offset;
    cmd->walk_end = cmd->offset + cmd->length;
    cmd->max_extents = max_extents;
    walk_step(cmd, done);
}

/* ---- READ --------------------------------------------------------------------- */

/* Merges the walked extents into runs of holes and data, clipped to the
 * request; returns the number of runs written to runs[]. */
static unsigned read_runs(const struct nbd_command *cmd, struct extent *runs)
{
    uint64_t end = cmd->offset + cmd->length, pos = cmd->offset;
    unsigned n = 0;

    for (unsigned i = 0; i < cmd->next && pos < end; i++) {
        const struct extent *e = &cmd->ext[i];
        uint64_t len = MIN_U64(e->length, end - pos);
        bool hole = e->zero && !e->data;
        if (n > 0 && runs[n - 1].zero == hole) {
            runs[n - 1].length += len;
        } else {
            runs[n] = (struct extent){ .offset = pos, .length = len,
                                       .zero = hole };
            n++;
        }
        pos += len;
    }
    if (pos < end) {
        /* The walk stopped early: the rest goes as data. */
        if (n > 0 && !runs[n - 1].zero)
            runs[n - 1].length += end - pos;
        else
            runs[n++] = (struct extent){ .offset = pos, .length = end - pos };
    }
    return n;
}

/* A READ's buffer has room for a reply header before the data, so header
 * and data leave as one piece: one TLS record and one system call per
 * reply instead of two, without copying the data. */
#define READ_HEADROOM 32u

/* Sends head (head_len bytes) and then len bytes at data inside the read
 * buffer; owned (the allocation) goes with it when not NULL.  room says
 * whether the head_len bytes before data are free to write the head into. */
static void send_read_piece(struct nbd_command *cmd, const uint8_t *head,
                            size_t head_len, uint8_t *data, size_t len,
                            bool room, void *owned)
{
    size_t owned_size = owned ? READ_HEADROOM + cmd->length : 0;

    if (room) {
        memcpy(data - head_len, head, head_len);
        qedi_conn_send(cmd->conn, NULL, 0, data - head_len, head_len + len, owned,
                  owned_size);
    } else {
        qedi_conn_send(cmd->conn, head, head_len, data, len, owned, owned_size);
    }
}

/* Structured reply to a READ: OFFSET_HOLE chunks for holes, OFFSET_DATA
 * chunks for data, DONE on the last.  The read buffer is released with the
 * last data chunk (counted against the output limit until then). */
static void send_read_chunks(struct nbd_command *cmd)
{
    struct extent *runs;
    unsigned n, last_data = UINT32_MAX;

    if (cmd->walk_failed || cmd->next == 0) {
        cmd->next = 0; /* one data chunk for the whole range */
    }
    runs = calloc(cmd->next + 1, sizeof(*runs));
    if (!runs) {
        free(cmd->read_base);
        qedi_conn_close(cmd->conn, true);
        return;
    }
    n = read_runs(cmd, runs);
    for (unsigned i = 0; i < n; i++)
        if (!runs[i].zero)
            last_data = i;
    for (unsigned i = 0; i < n; i++) {
        uint16_t flags = i + 1 == n ? NBD_REPLY_FLAG_DONE : 0;
        uint8_t head[32];

        if (runs[i].zero) {
            chunk_header(head, cmd, flags, NBD_REPLY_TYPE_OFFSET_HOLE, 12);
            nbd_put64(head + 20, runs[i].offset);
            nbd_put32(head + 28, (uint32_t)runs[i].length);
            qedi_conn_send(cmd->conn, head, 32, NULL, 0, NULL, 0);
        } else {
            /* Before a data run: the headroom, or a hole run's bytes,
             * which are never sent. */
            bool room = i == 0 || runs[i - 1].length >= 28;
            chunk_header(head, cmd, flags, NBD_REPLY_TYPE_OFFSET_DATA,
                         (uint32_t)(8 + runs[i].length));
            nbd_put64(head + 20, runs[i].offset);
            send_read_piece(cmd, head, 28,
                            cmd->buf + (runs[i].offset - cmd->offset),
                            runs[i].length, room,
                            i == last_data ? cmd->read_base : NULL);
        }
    }
    if (last_data == UINT32_MAX)
        free(cmd->read_base);
    free(runs);
}

static void read_finished(struct nbd_command *cmd)
{
    if (--cmd->pending > 0)
        return;
    if (cmd->ret < 0) {
        free(cmd->read_base);
        reply_error(cmd, errno_to_nbd(-cmd->ret), cmd->message);
    } else if (!cmd->conn->structured) {
        uint8_t head[16];
        nbd_put32(head, NBD_SIMPLE_REPLY_MAGIC);
        nbd_put32(head + 4, 0);
        nbd_put64(head + 8, cmd->cookie);
        send_read_piece(cmd, head, sizeof(head), cmd->buf, cmd->length, true,
                        cmd->read_base);
    } else if (cmd->length == 0) {
        /* No data chunk may be empty: the reply is a bare DONE. */
        uint8_t head[20];
        chunk_header(head, cmd, NBD_REPLY_FLAG_DONE, NBD_REPLY_TYPE_NONE, 0);
        qedi_conn_send(cmd->conn, head, sizeof(head), NULL, 0, NULL, 0);
        free(cmd->read_base);
    } else if (cmd->flags & NBD_CMD_FLAG_DF) {
        cmd->walk_failed = true;
        send_read_chunks(cmd);
    } else {
        send_read_chunks(cmd);
    }
    cmd->buf = cmd->read_base = NULL;
    finish(cmd);
}

static void read_done(void *opaque, int ret, const qed_error *err)
{
    struct nbd_command *cmd = opaque;
    note_result(cmd, ret, err);
    read_finished(cmd);
}

static void start_read(struct nbd_command *cmd)
{
    struct iovec v;
    int ret;

    cmd->read_base = malloc(READ_HEADROOM + cmd->length);
    cmd->buf = cmd->read_base ? cmd->read_base + READ_HEADROOM : NULL;
    if (!cmd->buf) {
        reply_error(cmd, NBD_ENOMEM, "out of memory");
        finish(cmd);
        return;
    }
    cmd->buffered = cmd->length;
    cmd->conn->buffered += cmd->length;
    v = (struct iovec){ cmd->buf, cmd->length };
    cmd->pending = 1;
    if (cmd->length) {
        cmd->pending++;
        ret = qed_aio_readv(cmd->conn->srv->img, &v, 1, cmd->offset, read_done,
                            cmd);
        if (ret < 0) {
            cmd->pending--;
            note_result(cmd, ret, NULL);
        }
    }
    /* The map of the range is fetched at the same time as the data. */
    if (cmd->conn->structured && !(cmd->flags & NBD_CMD_FLAG_DF) &&
        cmd->length && cmd->ret == 0) {
        cmd->pending++;
        walk(cmd, MAX_EXTENTS, read_finished);
    }
    read_finished(cmd);
}

/* ---- WRITE, FLUSH, TRIM, WRITE_ZEROES ---------------------------------------- */

static void after_flush(void *opaque, int ret, const qed_error *err)
{
    struct nbd_command *cmd = opaque;
    note_result(cmd, ret, err);
    reply_status(cmd);
    finish(cmd);
}

/* Completes a modifying command: with FUA, flush first. */
static void modified(void *opaque, int ret, const qed_error *err)
{
    struct nbd_command *cmd = opaque;

    note_result(cmd, ret, err);
    free(cmd->buf);
    cmd->buf = NULL;
    if (cmd->ret == 0 && (cmd->flags & NBD_CMD_FLAG_FUA)) {
        int r = qed_aio_flush(cmd->conn->srv->img, after_flush, cmd);
        if (r == 0)
            return;
        note_result(cmd, r, NULL);
    }
    reply_status(cmd);
    finish(cmd);
}

static void submitted(struct nbd_command *cmd, int ret)
{
    if (ret < 0)
        modified(cmd, ret, NULL);
}

static void zero_bytes_step(void *opaque, int ret, const qed_error *err);

/* NO_HOLE: the range must end up allocated, so real zeros are written, up
 * to 64 MiB at a time from one shared zero buffer. */
static void write_zero_bytes(struct nbd_command *cmd)
{
    uint64_t end = cmd->offset + cmd->length;
    uint64_t len = MIN_U64(end - cmd->zero_pos, 64ull * ZERO_CHUNK);
    int n = 0;

    if (!cmd->zeros) {
        cmd->zeros = calloc(1, ZERO_CHUNK);
        cmd->zero_iov = calloc(64, sizeof(*cmd->zero_iov));
        if (!cmd->zeros || !cmd->zero_iov) {
            modified(cmd, -ENOMEM, NULL);
            return;
        }
    }
    for (uint64_t done = 0; done < len; done += ZERO_CHUNK, n++)
        cmd->zero_iov[n] = (struct iovec){ cmd->zeros,
                                           MIN_U64(ZERO_CHUNK, len - done) };
    submitted(cmd, qed_aio_writev(cmd->conn->srv->img, cmd->zero_iov, n,
                                  cmd->zero_pos, zero_bytes_step, cmd));
    cmd->zero_pos += len;
}

static void zero_bytes_step(void *opaque, int ret, const qed_error *err)
{
    struct nbd_command *cmd = opaque;
    if (ret < 0 || cmd->zero_pos >= cmd->offset + cmd->length) {
        modified(cmd, ret, err);
        return;
    }
    write_zero_bytes(cmd);
}

static void start_write_zeroes(struct nbd_command *cmd)
{
    qed_image *img = cmd->conn->srv->img;
    unsigned flags = QED_ZERO_MAY_UNMAP;

    if (cmd->flags & NBD_CMD_FLAG_NO_HOLE) {
        if (cmd->flags & NBD_CMD_FLAG_FAST_ZERO) {
            modified(cmd, -ENOTSUP, NULL);
            return;
        }
        cmd->zero_pos = cmd->offset;
        if (cmd->length == 0) {
            modified(cmd, 0, NULL);
            return;
        }
        write_zero_bytes(cmd);
        return;
    }
    if (cmd->flags & NBD_CMD_FLAG_FAST_ZERO)
        flags |= QED_ZERO_NO_FALLBACK;
    submitted(cmd, qed_aio_write_zeroes(img, cmd->offset, cmd->length, flags,
                                        modified, cmd));
}

/* ---- BLOCK_STATUS --------------------------------------------------------------- */

static uint32_t base_flags(const struct extent *e)
{
    return (e->data ? 0 : NBD_STATE_HOLE) | (e->zero ? NBD_STATE_ZERO : 0);
}

static uint32_t depth_value(const struct extent *e)
{
    return e->present ? e->depth + 1 : 0;
}

/* One BLOCK_STATUS chunk for a context: descriptors merged where the value
 * repeats. */
static void send_context_chunk(struct nbd_command *cmd, uint32_t id,
                               uint32_t (*value)(const struct extent *),
                               bool last)
{
    size_t max = 4 + (size_t)cmd->next * 8;
    uint8_t *data = malloc(max);
    uint8_t head[20];
    size_t len = 4;
    uint64_t end = cmd->offset + cmd->length;

    if (!data) {
        qedi_conn_close(cmd->conn, true);
        return;
    }
    nbd_put32(data, id);
    for (unsigned i = 0; i < cmd->next; i++) {
        uint32_t v = value(&cmd->ext[i]);
        uint64_t elen = MIN_U64(cmd->ext[i].length, end - cmd->ext[i].offset);
        if (len > 4 && nbd_get32(data + len - 4) == v &&
            nbd_get32(data + len - 8) + elen <= UINT32_MAX &&
            !(cmd->flags & NBD_CMD_FLAG_REQ_ONE)) {
            nbd_put32(data + len - 8, (uint32_t)(nbd_get32(data + len - 8) + elen));
            continue;
        }
        if (len > 4 && (cmd->flags & NBD_CMD_FLAG_REQ_ONE))
            break;
        nbd_put32(data + len, (uint32_t)elen);
        nbd_put32(data + len + 4, v);
        len += 8;
    }
    chunk_header(head, cmd, last ? NBD_REPLY_FLAG_DONE : 0,
                 NBD_REPLY_TYPE_BLOCK_STATUS, (uint32_t)len);
    qedi_conn_send(cmd->conn, head, sizeof(head), data, len, data, len);
}

static void block_status_walked(struct nbd_command *cmd)
{
    struct nbd_conn *c = cmd->conn;

    if (cmd->next == 0) {
        reply_error(cmd, errno_to_nbd(cmd->ret < 0 ? -cmd->ret : EIO),
                    cmd->ret < 0 ? cmd->message : "block status failed");
    } else {
        if (c->meta_base)
            send_context_chunk(cmd, CONTEXT_BASE_ID, base_flags, !c->meta_depth);
        if (c->meta_depth)
            send_context_chunk(cmd, CONTEXT_DEPTH_ID, depth_value, true);
    }
    finish(cmd);
}

/* ---- validation and dispatch ---------------------------------------------------- */

/* FUA is accepted on every command, as the specification requires (it is
 * meaningful only for writes). */
static uint16_t allowed_flags(uint16_t type)
{
    switch (type) {
    case NBD_CMD_READ:
        return NBD_CMD_FLAG_FUA | NBD_CMD_FLAG_DF;
    case NBD_CMD_WRITE_ZEROES:
        return NBD_CMD_FLAG_FUA | NBD_CMD_FLAG_NO_HOLE | NBD_CMD_FLAG_FAST_ZERO;
    case NBD_CMD_BLOCK_STATUS:
        return NBD_CMD_FLAG_FUA | NBD_CMD_FLAG_REQ_ONE;
    default:
        return NBD_CMD_FLAG_FUA;
    }
}

static bool modifies(uint16_t type)
{
    return type == NBD_CMD_WRITE || type == NBD_CMD_TRIM ||
           type == NBD_CMD_WRITE_ZEROES;
}

static uint32_t validate(const struct nbd_command *cmd)
{
    const struct nbd_conn *c = cmd->conn;
    uint64_t size = qed_size(c->srv->img);
    bool ranged = cmd->type != NBD_CMD_FLUSH && cmd->type != NBD_CMD_DISC;

    if (cmd->type > NBD_CMD_BLOCK_STATUS)
        return NBD_EINVAL;
    if (cmd->flags & ~allowed_flags(cmd->type))
        return NBD_EINVAL;
    if ((cmd->flags & NBD_CMD_FLAG_DF) && !c->structured)
        return NBD_EINVAL;
    if (cmd->type == NBD_CMD_BLOCK_STATUS &&
        (!c->structured || (!c->meta_base && !c->meta_depth) ||
         cmd->length == 0))
        return NBD_EINVAL;
    if ((cmd->type == NBD_CMD_READ || cmd->type == NBD_CMD_WRITE) &&
        cmd->length > NBD_MAX_PAYLOAD)
        return cmd->type == NBD_CMD_READ && (cmd->flags & NBD_CMD_FLAG_DF)
                   ? NBD_EOVERFLOW
                   : NBD_EINVAL;
    if (ranged && (cmd->offset > size || cmd->length > size - cmd->offset))
        return modifies(cmd->type) ? NBD_ENOSPC : NBD_EINVAL;
    if (modifies(cmd->type) && c->srv->opts.read_only)
        return NBD_EPERM;
    return 0;
}

static void execute(struct nbd_command *cmd)
{
    qed_image *img = cmd->conn->srv->img;

    if (cmd->error) {
        reply_error(cmd, cmd->error, NULL);
        free(cmd->buf);
        cmd->buf = NULL;
        finish(cmd);
        return;
    }
    switch (cmd->type) {
    case NBD_CMD_READ:
        start_read(cmd);
        break;
    case NBD_CMD_WRITE: {
        struct iovec v = { cmd->buf, cmd->length };
        if (cmd->length == 0) {
            modified(cmd, 0, NULL);
            break;
        }
        submitted(cmd, qed_aio_writev(img, &v, 1, cmd->offset, modified, cmd));
        break;
    }
    case NBD_CMD_FLUSH:
        submitted(cmd, qed_aio_flush(img, modified, cmd));
        break;
    case NBD_CMD_TRIM:
        if (cmd->length == 0) {
            modified(cmd, 0, NULL);
            break;
        }
        submitted(cmd, qed_aio_discard(img, cmd->offset, cmd->length, modified,
                                       cmd));
        break;
    case NBD_CMD_WRITE_ZEROES:
        if (cmd->length == 0) {
            modified(cmd, 0, NULL);
            break;
        }
        start_write_zeroes(cmd);
        break;
    case NBD_CMD_CACHE:
        /* A hint; the file system's own read-ahead serves it. */
        simple_reply(cmd, 0, NULL, 0, NULL);
        finish(cmd);
        break;
    case NBD_CMD_BLOCK_STATUS:
        walk(cmd, (cmd->flags & NBD_CMD_FLAG_REQ_ONE) ? 1 : MAX_EXTENTS,
             block_status_walked);
        break;
    default:
        reply_error(cmd, NBD_EINVAL, NULL);
        finish(cmd);
        break;
    }
}

/* The bytes a request makes its connection hold: a READ's data, a WRITE's
 * data (from the moment it starts arriving).  Replies without data are
 * counted as they are queued. */
static size_t budget_cost(const struct nbd_command *cmd)
{
    if (cmd->error)
        return 0; /* answered at once; a refused WRITE's data is skipped */
    if (cmd->type == NBD_CMD_READ || cmd->type == NBD_CMD_WRITE)
        return cmd->length;
    return 0;
}

/* Executes cmd, or for a WRITE starts reading its data. */
static void admit(struct nbd_command *cmd)
{
    struct nbd_conn *c = cmd->conn;

    if (cmd->type == NBD_CMD_WRITE && cmd->length > 0) {
        /* The data follows the header whatever we think of the request;
         * a request we refuse has its data read and thrown away. */
        bool discard = cmd->error != 0;
        if (qedi_conn_expect_payload(c, cmd->length, discard) < 0) {
            free(cmd);
            qedi_conn_close(c, true);
            qedi_conn_request_done(c, 0);
            return;
        }
        if (!discard) {
            cmd->buffered = cmd->length;
            c->buffered += cmd->length;
        }
        c->writing = cmd;
        return;
    }
    execute(cmd);
}

void qedi_commands_release_held(struct nbd_conn *c)
{
    struct nbd_command *cmd = c->held;

    c->held = NULL;
    if (cmd)
        admit(cmd);
}

void qedi_commands_header(struct nbd_conn *c)
{
    const uint8_t *h = c->header;
    struct nbd_command *cmd;

    if (nbd_get32(h) != NBD_REQUEST_MAGIC) {
        qedi_conn_close(c, true);
        return;
    }
    cmd = calloc(1, sizeof(*cmd));
    if (!cmd) {
        qedi_conn_close(c, true);
        return;
    }
    cmd->conn = c;
    cmd->flags = nbd_get16(h + 4);
    cmd->type = nbd_get16(h + 6);
    cmd->cookie = nbd_get64(h + 8);
    cmd->offset = nbd_get64(h + 16);
    cmd->length = nbd_get32(h + 24);
    qedi_conn_expect_header(c, NBD_REQUEST_SIZE);
    if (cmd->type == NBD_CMD_DISC) {
        free(cmd);
        qedi_conn_close(c, false);
        return;
    }
    c->in_flight++;
    cmd->error = validate(cmd);
    if (!qedi_conn_fits(c, budget_cost(cmd))) {
        /* Nothing more is read until the replies queued drain (the client
         * reads them) and it fits. */
        c->held = cmd;
        c->held_cost = budget_cost(cmd);
        return;
    }
    admit(cmd);
}

void qedi_commands_payload(struct nbd_conn *c)
{
    struct nbd_command *cmd = c->writing;

    c->writing = NULL;
    if (!cmd)
        return;
    cmd->buf = c->payload;
    c->payload = NULL;
    execute(cmd);
}

void qedi_commands_refuse_held(struct nbd_conn *c)
{
    struct nbd_command *cmd = c->held;

    if (!cmd)
        return;
    c->held = NULL;
    /* Its header was read: it gets an answer, though its data (a WRITE's)
     * is never read; the connection closes after the reply. */
    reply_error(cmd, NBD_ESHUTDOWN, "the server is shutting down");
    finish(cmd);
}

void qedi_commands_abandon_payload(struct nbd_conn *c)
{
    struct nbd_command *cmd = c->writing;

    if (c->held) {
        struct nbd_command *held = c->held;
        c->held = NULL;
        finish(held);
    }
    if (!cmd)
        return;
    c->writing = NULL;
    c->payload_need = c->payload_have = 0;
    finish(cmd);
}
