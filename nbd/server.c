/* SPDX-License-Identifier: MIT */
/* Listening sockets (Unix, TCP, or inherited through socket activation),
 * accepting (paused while descriptors run out; who gets a slot is
 * admission.c's), and the server's life cycle: it is finished once it was
 * asked to shut down, or (when not persistent) the last client left, and
 * every connection has closed. */
#include <errno.h>
#include <fcntl.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "nbd.h"
#include "proto.h"

/* Connections the kernel queues before accept: as many as it allows, so a
 * burst of clients is not refused while the loop is busy. */
#define LISTEN_BACKLOG SOMAXCONN
/* Connections accepted per wake-up: the ones already open get their turn
 * between batches. */
#define ACCEPT_BATCH 64
/* Out of descriptors with nothing to drop: try accepting again after this
 * long, or as soon as a connection closes. */
#define ACCEPT_RETRY_MS 200u

static void on_listener(void *opaque, int fd, unsigned events);

/* Listeners are watched unless the server is shutting down or out of
 * descriptors.  The connection limits do not stop accepting: a newcomer
 * always gets in, and the admission rules decide who makes room. */
static void update_accepting(struct nbd_server *srv)
{
    bool want = !srv->shutting_down && !srv->accept_paused;

    if (want == srv->accepting)
        return;
    for (unsigned i = 0; i < srv->nlisteners; i++) {
        if (want)
            qed_loop_watch_fd(srv->loop, srv->listeners[i], QED_LOOP_READ,
                              on_listener, srv);
        else
            qed_loop_unwatch_fd(srv->loop, srv->listeners[i]);
    }
    srv->accepting = want;
}

void qedi_nbd_server_options_init(struct nbd_server_options *options)
{
    *options = (struct nbd_server_options){
        .max_connections = 16,
        .handshake_limit_ms = NBD_DEFAULT_HANDSHAKE_LIMIT_MS,
    };
}

int qedi_nbd_server_new(qed_image *image, const struct nbd_server_options *options,
                   struct nbd_server **out, qed_error *err)
{
    struct nbd_server *srv = calloc(1, sizeof(*srv));
    struct qed_image_info info;

    *out = NULL;
    if (!srv) {
        err->code = ENOMEM;
        snprintf(err->message, sizeof(err->message), "out of memory");
        return -ENOMEM;
    }
    srv->img = image;
    srv->loop = qed_image_loop(image);
    if (options)
        srv->opts = *options;
    else
        qedi_nbd_server_options_init(&srv->opts);
    if (!srv->opts.max_connections)
        srv->opts.max_connections = 16;
    if (!srv->opts.conn_budget)
        srv->opts.conn_budget = NBD_MAX_PAYLOAD;
    /* Room for every client to negotiate at once: a burst of honest
     * clients (all reconnecting after a restart) is not cut down. */
    if (!srv->opts.max_negotiating)
        srv->opts.max_negotiating = srv->opts.max_connections >
                                            NBD_DEFAULT_MAX_NEGOTIATING
                                        ? srv->opts.max_connections
                                        : NBD_DEFAULT_MAX_NEGOTIATING;
    snprintf(srv->export_name, sizeof(srv->export_name), "%s",
             srv->opts.export_name ? srv->opts.export_name : "");
    srv->preferred_block = 4096;
    qed_image_info_init(&info);
    if (qed_get_info(image, &info, NULL) == 0 && info.cluster_size > 4096)
        srv->preferred_block = info.cluster_size;
    if (srv->preferred_block > NBD_MAX_PAYLOAD)
        srv->preferred_block = NBD_MAX_PAYLOAD;
    *out = srv;
    return 0;
}

static int add_listener(struct nbd_server *srv, int fd, char *unix_path,
                        qed_error *err)
{
    if (srv->nlisteners == sizeof(srv->listeners) / sizeof(srv->listeners[0])) {
        close(fd);
        free(unix_path);
        err->code = EMFILE;
        snprintf(err->message, sizeof(err->message), "too many listening sockets");
        return -EMFILE;
    }
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    srv->listeners[srv->nlisteners] = fd;
    srv->unix_paths[srv->nlisteners] = unix_path;
    srv->nlisteners++;
    /* Re-register every listener, the new one included. */
    srv->accepting = false;
    update_accepting(srv);
    return 0;
}

static int fail_errno(qed_error *err, const char *what, const char *name)
{
    int code = errno;
    err->code = code;
    snprintf(err->message, sizeof(err->message), "%s %s: %s", what, name,
             strerror(code));
    return -code;
}

/* True when path is a Unix socket nobody accepts connections on: the
 * leftover of a server that died without removing it.  The probe does not
 * block: a live server with a full backlog answers EAGAIN, not a refusal. */
static bool socket_is_stale(const struct sockaddr_un *addr)
{
    struct stat st;
    bool stale;
    int fd;

    if (lstat(addr->sun_path, &st) < 0 || !S_ISSOCK(st.st_mode))
        return false;
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return false;
    stale = connect(fd, (const struct sockaddr *)addr, sizeof(*addr)) < 0 &&
            errno == ECONNREFUSED;
    close(fd);
    return stale;
}

/* Binds fd to addr, replacing a stale socket file.  Anything else already
 * at the path (a live server's socket, a regular file) is left alone. */
static int bind_unix(int fd, const struct sockaddr_un *addr, qed_error *err)
{
    const char *path = addr->sun_path;
    struct stat st;

    if (bind(fd, (const struct sockaddr *)addr, sizeof(*addr)) == 0)
        return 0;
    if (errno != EADDRINUSE)
        return fail_errno(err, "listening on", path);
    if (lstat(path, &st) == 0 && !S_ISSOCK(st.st_mode)) {
        err->code = EEXIST;
        snprintf(err->message, sizeof(err->message),
                 "%s exists and is not a socket; not replacing it", path);
        return -EEXIST;
    }
    if (!socket_is_stale(addr)) {
        err->code = EADDRINUSE;
        snprintf(err->message, sizeof(err->message),
                 "listening on %s: another server is listening there", path);
        return -EADDRINUSE;
    }
    if (unlink(path) < 0 && errno != ENOENT)
        return fail_errno(err, "removing the stale socket", path);
    if (bind(fd, (const struct sockaddr *)addr, sizeof(*addr)) < 0)
        return fail_errno(err, "listening on", path);
    return 0;
}

int qedi_nbd_server_listen_unix(struct nbd_server *srv, const char *path,
                           qed_error *err)
{
    struct sockaddr_un addr = { .sun_family = AF_UNIX };
    int fd;

    if (strlen(path) >= sizeof(addr.sun_path)) {
        err->code = ENAMETOOLONG;
        snprintf(err->message, sizeof(err->message),
                 "socket path is longer than %zu bytes", sizeof(addr.sun_path) - 1);
        return -ENAMETOOLONG;
    }
    memcpy(addr.sun_path, path, strlen(path) + 1);
    fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return fail_errno(err, "socket", path);
    if (bind_unix(fd, &addr, err) < 0) {
        close(fd);
        return -err->code;
    }
    if (listen(fd, LISTEN_BACKLOG) < 0) {
        int ret = fail_errno(err, "listening on", path);
        close(fd);
        return ret;
    }
    return add_listener(srv, fd, strdup(path), err);
}

int qedi_nbd_server_listen_tcp(struct nbd_server *srv, const char *address,
                          const char *port, qed_error *err)
{
    struct addrinfo hints = { .ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                              .ai_flags = AI_PASSIVE };
    struct addrinfo *res, *ai;
    int rc = getaddrinfo(address, port, &hints, &res);
    int added = 0;

    if (rc != 0) {
        err->code = EINVAL;
        snprintf(err->message, sizeof(err->message), "address %s port %s: %s",
                 address ? address : "*", port, gai_strerror(rc));
        return -EINVAL;
    }
    for (ai = res; ai; ai = ai->ai_next) {
        int one = 1;
        int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC,
                        ai->ai_protocol);
        if (fd < 0)
            continue;
        setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (ai->ai_family == AF_INET6)
            setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
        if (bind(fd, ai->ai_addr, ai->ai_addrlen) < 0 || listen(fd, LISTEN_BACKLOG) < 0) {
            fail_errno(err, "listening on port", port);
            close(fd);
            continue;
        }
        if (add_listener(srv, fd, NULL, err) == 0)
            added++;
    }
    freeaddrinfo(res);
    return added ? 0 : -(err->code ? err->code : EADDRNOTAVAIL);
}

int qedi_nbd_server_adopt_listener(struct nbd_server *srv, int fd, qed_error *err)
{
    fcntl(fd, F_SETFD, FD_CLOEXEC);
    return add_listener(srv, fd, NULL, err);
}

static void tune_socket(int fd)
{
    int one = 1;
    /* Replies are written whole; do not hold them back (TCP only). */
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

int qedi_nbd_server_add_client(struct nbd_server *srv, int fd, qed_error *err)
{
    (void)err;
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
    qedi_conn_start(srv, fd);
    return 0;
}

static void resume_accepting(void *opaque)
{
    struct nbd_server *srv = opaque;

    srv->accept_retry_timer = 0;
    srv->accept_paused = false;
    update_accepting(srv);
}

/* accept failed for want of descriptors (or kernel memory).  The pending
 * connection stays in the backlog and the listener stays readable, so
 * retrying at once would spin: drop the connection negotiating longest and
 * retry, or, with none to drop, stop watching the listeners until a
 * connection closes or a short timer runs out.  Returns whether to retry
 * now. */
static bool out_of_descriptors(struct nbd_server *srv, int err)
{
    bool dropped = qedi_admission_make_room(srv, true);

    qedi_server_notice(srv, "accept: %s with %u connections open; %s",
                       strerror(err), srv->nconns,
                       dropped ? "dropping the connections negotiating longest"
                               : "waiting for a connection to close");
    if (dropped)
        return true;
    srv->accept_paused = true;
    update_accepting(srv);
    if (!srv->accept_retry_timer)
        srv->accept_retry_timer = qed_loop_add_timer(srv->loop, ACCEPT_RETRY_MS,
                                                     resume_accepting, srv);
    return false;
}

static void on_listener(void *opaque, int lfd, unsigned events)
{
    struct nbd_server *srv = opaque;
    (void)events;

    for (int i = 0; i < ACCEPT_BATCH && srv->accepting; i++) {
        int fd = accept4(lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);

        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            if ((errno == EMFILE || errno == ENFILE || errno == ENOBUFS ||
                 errno == ENOMEM) &&
                out_of_descriptors(srv, errno))
                continue;
            return;
        }
        /* A newcomer always gets in: at the negotiating cap the
         * connection negotiating longest makes room. */
        qedi_admission_make_room(srv, false);
        tune_socket(fd);
        qedi_conn_start(srv, fd);
    }
}

void qedi_server_connection_gone(struct nbd_server *srv, struct nbd_conn *c)
{
    if (c->prev)
        c->prev->next = c->next;
    else
        srv->conns = c->next;
    if (c->next)
        c->next->prev = c->prev;
    c->prev = c->next = NULL;
    srv->nconns--;
    qedi_admission_left(c);
    /* A descriptor is free again. */
    if (srv->accept_paused) {
        if (srv->accept_retry_timer)
            qed_loop_cancel_timer(srv->loop, srv->accept_retry_timer);
        resume_accepting(srv);
    }
}

#define DRAIN_TIMEOUT_MS 1000u

/* A look every DRAIN_TIMEOUT_MS during shutdown: a connection whose
 * requests are still executing is owed their answers and waits (slow
 * storage must not cost a client replies to writes that complete), and so
 * does one whose client took some of its replies since the last look; one
 * whose client took nothing is cut off. */
static void drain_expired(void *opaque)
{
    struct nbd_server *srv = opaque;
    struct nbd_conn *c, *next;
    bool waiting = false;

    srv->drain_timer = 0;
    for (c = srv->conns; c; c = next) {
        next = c->next;
        if (c->in_flight > 0 || c->sent_bytes > c->drain_mark) {
            c->drain_mark = c->sent_bytes;
            waiting = true;
            continue;
        }
        qedi_conn_close(c, true);
    }
    if (waiting)
        srv->drain_timer = qed_loop_add_timer(srv->loop, DRAIN_TIMEOUT_MS,
                                              drain_expired, srv);
}

void qedi_nbd_server_shutdown(struct nbd_server *srv)
{
    struct nbd_conn *c, *next;

    if (srv->shutting_down)
        return;
    srv->shutting_down = true;
    update_accepting(srv);
    for (c = srv->conns; c; c = next) {
        next = c->next;
        /* A WRITE whose data is still arriving was never acknowledged:
         * drop it.  Mid-handshake clients are dropped; the others get the
         * answers to what is in flight first, and one held back by the
         * budget is refused. */
        if (c->phase == PHASE_TRANSMISSION)
            qedi_commands_refuse_held(c);
        qedi_commands_abandon_payload(c);
        c->drain_mark = c->sent_bytes;
        qedi_conn_close(c, c->phase != PHASE_TRANSMISSION);
    }
    if (srv->nconns > 0)
        srv->drain_timer = qed_loop_add_timer(srv->loop, DRAIN_TIMEOUT_MS,
                                              drain_expired, srv);
}

bool qedi_nbd_server_finished(const struct nbd_server *srv)
{
    if (srv->nconns > 0 || srv->live_conns > 0)
        return false;
    return srv->shutting_down || (!srv->opts.persistent && srv->had_client);
}

unsigned qedi_nbd_server_connections(const struct nbd_server *srv)
{
    return srv->nconns;
}

void qedi_nbd_server_free(struct nbd_server *srv)
{
    if (!srv)
        return;
    if (srv->drain_timer)
        qed_loop_cancel_timer(srv->loop, srv->drain_timer);
    if (srv->accept_retry_timer)
        qed_loop_cancel_timer(srv->loop, srv->accept_retry_timer);
    qedi_admission_free(srv);
    for (unsigned i = 0; i < srv->nlisteners; i++) {
        if (srv->accepting)
            qed_loop_unwatch_fd(srv->loop, srv->listeners[i]);
        close(srv->listeners[i]);
        if (srv->unix_paths[i]) {
            unlink(srv->unix_paths[i]);
            free(srv->unix_paths[i]);
        }
    }
    free(srv);
}
