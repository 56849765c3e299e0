/* SPDX-License-Identifier: MIT */
/* libFuzzer target: the NBD server's handshake and transmission phases.
 * The input is what a client sends, fed through a socketpair to a server
 * exporting a small QED image; the replies are read and dropped.  One image
 * and server live for the whole run, as a long-running server would.  The
 * server offers TLS (--tls=on with a PSK), so STARTTLS, the bytes a client
 * sends after it and the TLS handshake itself are reached too. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "nbd.h"
#include "qed.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static qed_image *image;
static struct nbd_server *server;

/* PSK credentials from a throwaway file: loaded once, then removed. */
static struct nbd_tls *make_tls(void)
{
    static const char line[] = "fuzz:000102030405060708090a0b0c0d0e0f\n";
    char path[] = "/tmp/qed-fuzz-psk-XXXXXX";
    struct nbd_tls_config cfg = { .mode = NBD_TLS_ON, .psk_file = path };
    struct nbd_tls *tls = NULL;
    qed_error err;
    int fd = mkstemp(path);

    if (fd < 0 || write(fd, line, sizeof(line) - 1) != (ssize_t)(sizeof(line) - 1) ||
        qedi_nbd_tls_new(&cfg, &tls, &err) < 0) {
        fprintf(stderr, "fuzz-nbd TLS setup failed\n");
        abort();
    }
    close(fd);
    unlink(path);
    return tls;
}

static void setup(void)
{
    static char path[] = "/tmp/qed-fuzz-nbd-XXXXXX";
    struct qed_create_options co = { .size = sizeof(co),
                                     .virtual_size = 8 << 20,
                                     .cluster_size = 4096, .table_size = 1 };
    struct nbd_server_options so = { .persistent = true,
                                     .handshake_limit_ms = 1000 };
    struct qed_open_options oo = { .size = sizeof(oo), .flags = QED_OPEN_RDWR };
    qed_error err;
    int fd = mkstemp(path);

    so.tls = make_tls();
    if (fd < 0 || qed_create(path, &co, &err) < 0 ||
        qed_open(path, &oo, &image, &err) < 0 ||
        qedi_nbd_server_new(image, &so, &server, &err) < 0) {
        fprintf(stderr, "fuzz-nbd setup failed\n");
        abort();
    }
    close(fd);
    unlink(path); /* the open image keeps it */
    /* Some data, some zero clusters, some unallocated space. */
    static uint8_t buf[65536];
    memset(buf, 0x5a, sizeof(buf));
    qed_pwrite(image, buf, sizeof(buf), 1 << 20, &err);
    qed_write_zeroes(image, 2 << 20, 1 << 20, QED_ZERO_MAY_UNMAP, &err);
}

/* Runs the server until the client side has nothing more to read and the
 * connection is gone, with a bound on iterations so no input can hang. */
static void pump(int client, const uint8_t *data, size_t size)
{
    qed_loop *loop = qed_image_loop(image);
    static uint8_t sink[1 << 16];
    size_t sent = 0;
    bool shut = false;

    for (int i = 0; i < 100000; i++) {
        if (sent < size) {
            ssize_t n = send(client, data + sent, size - sent,
                             MSG_DONTWAIT | MSG_NOSIGNAL);
            if (n > 0)
                sent += (size_t)n;
            else if (n < 0 && errno != EAGAIN)
                sent = size;
        } else if (!shut) {
            shutdown(client, SHUT_WR);
            shut = true;
        }
        qed_loop_run(loop, 0);
        ssize_t got;
        while ((got = recv(client, sink, sizeof(sink), MSG_DONTWAIT)) > 0)
            ;
        if (shut && qedi_nbd_server_connections(server) == 0 && got == 0)
            return;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int sv[2];
    qed_error err;

    if (!image)
        setup();
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
        return 0;
    qedi_nbd_server_add_client(server, sv[0], &err);
    pump(sv[1], data, size);
    /* Let any request still in flight finish before the next input. */
    for (int i = 0; i < 1000 && qedi_nbd_server_connections(server) > 0; i++)
        qed_loop_run(qed_image_loop(image), 1);
    close(sv[1]);
    qed_drain(image, &err);
    /* Closed connections are freed from the loop. */
    qed_loop_run(qed_image_loop(image), 0);
    return 0;
}
