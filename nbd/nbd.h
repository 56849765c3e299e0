/* SPDX-License-Identifier: MIT */
/* The NBD server: exports one image to many clients over Unix or TCP
 * sockets, on the image's own event loop (non-blocking sockets, no thread
 * per request).  All connections share the open image, so a flush on one
 * covers the writes of all (NBD_FLAG_CAN_MULTI_CONN). */
#ifndef QED_NBD_H
#define QED_NBD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

#include "proto.h"
#include "qed.h"
#include "tls.h"

struct nbd_server_options {
    bool read_only;
    const char *export_name;       /* NULL: "" */
    const char *description;       /* NULL: none */
    /* Clients at once: connections that finished negotiating.  A client
     * that asks to start transmission when all are taken waits for one. */
    unsigned max_connections;      /* 0: 16 */
    /* Connections still negotiating (TLS handshake included) have their
     * own cap: when it is full, the one negotiating longest is dropped to
     * make room for a newcomer. */
    unsigned max_negotiating;      /* 0: the larger of max_connections and
                                      NBD_DEFAULT_MAX_NEGOTIATING */
    bool persistent;               /* keep serving after the last client */
    unsigned handshake_limit_ms;   /* negotiation time allowed; 0: none */
    const struct nbd_tls *tls;     /* NULL: no TLS (STARTTLS unsupported) */
    /* Conditions an operator should hear of (descriptors running out), at
     * most one line every few seconds; NULL: not reported. */
    void (*notice)(void *opaque, const char *message);
    void *notice_opaque;
    /* Bytes one connection may hold: WRITE data received or being written,
     * READ data read or waiting to be sent, and every reply not yet taken
     * by the client.  A request that would pass it waits (and the
     * connection reads nothing more) until replies drain, unless the
     * connection holds nothing: one request of any allowed size always
     * goes through. */
    size_t conn_budget;            /* 0: NBD_MAX_PAYLOAD */
};

#define NBD_DEFAULT_MAX_NEGOTIATING 1024u
#define NBD_DEFAULT_HANDSHAKE_LIMIT_MS 10000u

struct nbd_server;

int qedi_nbd_server_new(qed_image *image, const struct nbd_server_options *options,
                   struct nbd_server **out, qed_error *err);
/* Listening sockets; any number may be added. */
int qedi_nbd_server_listen_unix(struct nbd_server *srv, const char *path,
                           qed_error *err);
int qedi_nbd_server_listen_tcp(struct nbd_server *srv, const char *address,
                          const char *port, qed_error *err);
/* Takes a socket that is already listening (systemd socket activation). */
int qedi_nbd_server_adopt_listener(struct nbd_server *srv, int fd, qed_error *err);
/* Serves one already-connected socket (tests and fuzzers: a socketpair). */
int qedi_nbd_server_add_client(struct nbd_server *srv, int fd, qed_error *err);
/* Stops accepting and reading requests; requests in flight finish and are
 * answered, then every connection closes. */
void qedi_nbd_server_shutdown(struct nbd_server *srv);
/* True once there is nothing left to do: shut down (or, when not
 * persistent, the last client left) and every connection closed. */
bool qedi_nbd_server_finished(const struct nbd_server *srv);
unsigned qedi_nbd_server_connections(const struct nbd_server *srv);
/* Closes the listening sockets and frees the server (connections must have
 * finished); does not close the image. */
void qedi_nbd_server_free(struct nbd_server *srv);

/* Options with every default filled in (handshake limit 10 s). */
void qedi_nbd_server_options_init(struct nbd_server_options *options);

/* ---- internal ------------------------------------------------------------- */

#define NBD_MAX_PAYLOAD (32u * 1024 * 1024)
#define NBD_MAX_OPTION (64u * 1024)
#define NBD_MAX_REQUESTS 64u          /* in flight per connection */

struct nbd_out;
struct nbd_command;

enum nbd_phase {
    PHASE_CLIENT_FLAGS,  /* waiting for the client's 32-bit flags */
    PHASE_OPTIONS,       /* option haggling */
    PHASE_TRANSMISSION,
    PHASE_CLOSING,       /* answering what is in flight, then closing */
};

enum nbd_tls_state {
    TLS_NONE,            /* plaintext */
    TLS_STARTING,        /* STARTTLS answered: the ACK is going out */
    TLS_HANDSHAKING,     /* reading nothing but the TLS handshake */
    TLS_ACTIVE,          /* every byte either way goes through the session */
};

/* Where a connection stands in the admission order (admission.c). */
enum nbd_queue {
    QUEUE_NONE,          /* holding a client slot, or closed */
    QUEUE_NEGOTIATING,   /* negotiating, under the handshake limit */
    QUEUE_WAITING,       /* negotiated; waiting for a client slot */
};

struct nbd_conn_list {
    struct nbd_conn *head, *tail;
    unsigned count;
};

struct nbd_conn {
    struct nbd_server *srv;
    int fd;
    enum nbd_phase phase;
    enum nbd_queue queue;
    bool has_slot;            /* counted among the clients at once */
    uint64_t started_ms;      /* when it connected */
    struct nbd_conn *queue_prev, *queue_next;
    enum nbd_tls_state tls_state;
    struct nbd_tls_session *tls;
    bool pending_read_scheduled; /* input to handle from the loop: TLS data
                                    already decrypted, or a held request
                                    that now fits the budget */
    bool read_stopped;        /* not reading: limits reached or closing */
    bool hard_close;          /* protocol violation: drop the output too */
    bool closed;
    bool destroy_scheduled;
    unsigned watched;         /* QED_LOOP_* events registered */

    /* input: a fixed-size header, then a payload */
    uint8_t header[32];       /* the largest fixed header: a request */
    size_t header_have, header_need;
    uint8_t *payload;         /* option data, or a WRITE's data */
    size_t payload_have, payload_need;
    size_t payload_len;       /* length of the payload last asked for */
    bool discard_payload;     /* reading a payload only to skip it */
    struct nbd_command *writing; /* the WRITE whose data is being read */
    uint32_t option;          /* option being read */

    /* output */
    struct nbd_out *out_head, *out_tail;
    size_t out_bytes;
    uint64_t sent_bytes;      /* written to the socket, ever */
    uint64_t drain_mark;      /* shutdown: sent_bytes at the last look */

    /* negotiated */
    bool no_zeroes;
    bool structured;
    bool meta_base, meta_depth;
    uint16_t tx_flags;

    unsigned in_flight;
    size_t buffered;          /* payload bytes of requests in flight */
    /* A request read but held back: executing it (or reading its data)
     * would pass the connection's budget. */
    struct nbd_command *held;
    size_t held_cost;
    struct nbd_conn *prev, *next; /* every open connection */
};

struct nbd_server {
    qed_image *img;
    qed_loop *loop;
    struct nbd_server_options opts;
    char export_name[4097];
    int listeners[16];
    char *unix_paths[16];
    unsigned nlisteners;
    bool accepting;           /* listeners are watched */
    bool accept_paused;       /* out of descriptors: wait for a close */
    uint64_t accept_retry_timer;
    uint64_t last_notice_ms;
    unsigned notices_held;    /* conditions not reported since */
    struct nbd_conn *conns;
    unsigned nconns;          /* open connections */
    unsigned nclients;        /* connections holding a client slot */
    struct nbd_conn_list negotiating; /* oldest first */
    struct nbd_conn_list waiting;     /* oldest first */
    uint64_t handshake_timer;
    uint64_t resume_timer;    /* waiting clients get freed slots */
    uint64_t last_client_timer; /* without -t: the last client left */
    unsigned live_conns;      /* connection objects not yet destroyed: a
                                 closed one may still have requests in
                                 flight that will come back to it */
    bool had_client;
    bool shutting_down;
    uint64_t drain_timer;     /* shutdown: clients get this long to read */
    uint32_t preferred_block;
};

/* connection.c */
void qedi_conn_start(struct nbd_server *srv, int fd);
void qedi_conn_close(struct nbd_conn *c, bool hard);
void qedi_conn_update_watch(struct nbd_conn *c);
/* Queues bytes to send: head (copied; may be empty) then optional data.  owned (of
 * owned_size bytes), when not NULL, is freed after sending and counts
 * against the connection's output limit until then. */
void qedi_conn_send(struct nbd_conn *c, const void *head, size_t head_len,
               const void *data, size_t data_len, void *owned,
               size_t owned_size);
void qedi_conn_expect_header(struct nbd_conn *c, size_t len);
int qedi_conn_expect_payload(struct nbd_conn *c, size_t len, bool discard);
/* Whether a request needing cost more bytes may go now (the budget). */
bool qedi_conn_fits(const struct nbd_conn *c, size_t cost);
void qedi_conn_request_done(struct nbd_conn *c, size_t buffered);
void qedi_server_connection_gone(struct nbd_server *srv, struct nbd_conn *c);

/* admission.c: who may connect, negotiate and become a client. */
void qedi_admission_joined(struct nbd_conn *c);
void qedi_admission_left(struct nbd_conn *c);
/* Room for one more negotiating connection, dropping the one negotiating
 * longest if the cap is reached; false when none could be dropped. */
bool qedi_admission_make_room(struct nbd_server *srv, bool out_of_descriptors);
/* A client slot for c, which asked to start transmission; false when all
 * are taken: c waits, and qedi_handshake_resume runs once it has one. */
bool qedi_admission_claim_slot(struct nbd_conn *c);
void qedi_admission_free(struct nbd_server *srv);
uint64_t qedi_nbd_now_ms(void);
/* A rate-limited line through opts.notice. */
void qedi_server_notice(struct nbd_server *srv, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* handshake.c */
/* A waiting connection got its client slot: its GO is answered now. */
void qedi_handshake_resume(struct nbd_conn *c);
void qedi_handshake_start(struct nbd_conn *c);
void qedi_handshake_header(struct nbd_conn *c);   /* a header arrived */
void qedi_handshake_payload(struct nbd_conn *c);  /* an option's data arrived */

/* commands.c */
void qedi_commands_header(struct nbd_conn *c);    /* a request header arrived */
void qedi_commands_payload(struct nbd_conn *c);   /* a WRITE's data arrived */
/* The connection ends before a WRITE's data arrived: drop that WRITE (and
 * a request held back by the budget). */
void qedi_commands_abandon_payload(struct nbd_conn *c);
/* Shutting down: the held request is answered with ESHUTDOWN. */
void qedi_commands_refuse_held(struct nbd_conn *c);
/* The held request fits now: execute it or start reading its data. */
void qedi_commands_release_held(struct nbd_conn *c);

#endif
