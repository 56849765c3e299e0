/* SPDX-License-Identifier: MIT */
/* `qed serve`: export an image over NBD, like qemu-nbd. */
#include <arpa/inet.h>
#include <errno.h>
#include <getopt.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "common.h"
#include "nbd.h"

struct serve_settings {
    struct nbd_server_options server;
    const char *socket_path;
    const char *bind_address;
    const char *port;
    enum qed_format format;
    enum qed_cache cache;
    bool force_share;
    bool copy_on_read;
    struct nbd_tls_config tls;
    bool tls_given;                /* --tls was on the command line */
    const char *authz[64];
};

static void on_signal(void *opaque, int fd, unsigned events)
{
    struct nbd_server *srv = opaque;
    struct signalfd_siginfo si;
    (void)events;

    while (read(fd, &si, sizeof(si)) == (ssize_t)sizeof(si))
        ;
    qedi_nbd_server_shutdown(srv);
}

/* SIGINT and SIGTERM arrive on the loop as a readable descriptor, so the
 * shutdown runs like any other event. */
static int watch_signals(qed_loop *loop, struct nbd_server *srv)
{
    sigset_t set;
    int fd;

    sigemptyset(&set);
    sigaddset(&set, SIGINT);
    sigaddset(&set, SIGTERM);
    if (sigprocmask(SIG_BLOCK, &set, NULL) < 0)
        return -errno;
    fd = signalfd(-1, &set, SFD_NONBLOCK | SFD_CLOEXEC);
    if (fd < 0)
        return -errno;
    if (qed_loop_watch_fd(loop, fd, QED_LOOP_READ, on_signal, srv) < 0) {
        close(fd);
        return -EIO;
    }
    return fd;
}

/* systemd socket activation: LISTEN_PID names us and LISTEN_FDS counts the
 * listening sockets handed over from descriptor 3 on. */
static int activation_fds(void)
{
    const char *pid = getenv("LISTEN_PID");
    const char *fds = getenv("LISTEN_FDS");
    char *end;
    long n;

    if (!pid || !fds || strtol(pid, &end, 10) != (long)getpid() || *end)
        return 0;
    n = strtol(fds, &end, 10);
    if (*end || n < 0 || n > 16)
        return 0;
    return (int)n;
}

static bool add_listeners(struct nbd_server *srv,
                          const struct serve_settings *s, const char *file)
{
    qed_error err = { 0 };
    int inherited = activation_fds();

    if (!s->socket_path && !s->port && inherited > 0) {
        for (int i = 0; i < inherited; i++) {
            if (qedi_nbd_server_adopt_listener(srv, 3 + i, &err) < 0) {
                tool_report(file, "socket activation", &err);
                return false;
            }
        }
        return true;
    }
    if (s->socket_path && qedi_nbd_server_listen_unix(srv, s->socket_path, &err) < 0) {
        tool_report(file, NULL, &err);
        return false;
    }
    if (s->port && qedi_nbd_server_listen_tcp(srv, s->bind_address, s->port, &err) < 0) {
        tool_report(file, NULL, &err);
        return false;
    }
    return true;
}

/* TLS credentials are all loaded (and checked) before the image is opened
 * or a socket listens: a bad file is reported at once. */
static bool load_tls(const struct serve_settings *s, struct nbd_tls **out)
{
    qed_error err = { 0 };
    char why[256];

    *out = NULL;
    if (s->tls.mode == NBD_TLS_OFF)
        return true;
    if (qedi_nbd_tls_new(&s->tls, out, &err) < 0) {
        tool_error(NULL, "%s", err.message);
        return false;
    }
    /* Served anyway (the clock may be wrong), but clients will refuse it. */
    if (qedi_nbd_tls_certificate_problem(*out, why, sizeof(why)))
        tool_error("warning", "%s/server-cert.pem: %s; clients will refuse it",
                   s->tls.certificates_dir, why);
    return true;
}

static bool is_loopback(const char *address)
{
    struct in_addr v4;
    struct in6_addr v6;

    if (strcmp(address, "localhost") == 0)
        return true;
    if (inet_pton(AF_INET, address, &v4) == 1)
        return (ntohl(v4.s_addr) >> 24) == 127;
    return inet_pton(AF_INET6, address, &v6) == 1 &&
           IN6_IS_ADDR_LOOPBACK(&v6);
}

static void warn_if_exposed(const struct serve_settings *s)
{
    if (s->port && s->tls.mode != NBD_TLS_REQUIRE && !is_loopback(s->bind_address))
        tool_error("warning", "serving on %s without --tls=require: anyone "
                   "who can reach it can read%s the image", s->bind_address,
                   s->server.read_only ? "" : " and write");
}

static int serve_image(const struct serve_settings *s, const char *file);

/* Every connection costs a descriptor: take all the system allows this
 * process (the hard limit) rather than the soft limit's 1024. */
static void raise_descriptor_limit(void)
{
    struct rlimit rl;

    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
}

static int serve(struct serve_settings *s, const char *file)
{
    struct nbd_tls *tls;
    int status;

    if (!load_tls(s, &tls))
        return 1;
    warn_if_exposed(s);
    raise_descriptor_limit();
    s->server.tls = tls;
    status = serve_image(s, file);
    qedi_nbd_tls_free(tls);
    return status;
}

static int serve_image(const struct serve_settings *s, const char *file)
{
    struct qed_open_options opts = { .size = sizeof(opts), .format = s->format,
                                     .cache = s->cache };
    struct nbd_server_options server_options;
    struct nbd_server *srv;
    qed_image *img;
    qed_error err = { 0 };
    int sigfd, status = 0;

    if (!s->server.read_only)
        opts.flags |= QED_OPEN_RDWR;
    if (s->force_share)
        opts.flags |= QED_OPEN_FORCE_SHARE;
    if (s->copy_on_read)
        opts.flags |= QED_OPEN_COPY_ON_READ;
    if (tool_qed_open(file, &opts, &img, &err) < 0) {
        tool_report(file, NULL, &err);
        return 1;
    }
    tool_report_warnings(file, img);
    server_options = s->server;
    server_options.notice = tool_print_notice;
    server_options.notice_opaque = (void *)file;
    if (qedi_nbd_server_new(img, &server_options, &srv, &err) < 0) {
        tool_report(file, NULL, &err);
        tool_close(file, img);
        return 1;
    }
    sigfd = watch_signals(qed_image_loop(img), srv);
    if (sigfd < 0 || !add_listeners(srv, s, file)) {
        if (sigfd < 0)
            tool_error(file, "cannot watch signals: %s", strerror(-sigfd));
        qedi_nbd_server_free(srv);
        tool_close(file, img);
        return 1;
    }
    signal(SIGPIPE, SIG_IGN);
    while (!qedi_nbd_server_finished(srv)) {
        int r = qed_loop_run(qed_image_loop(img), -1);
        if (r < 0) {
            tool_error(file, "event loop: %s", strerror(-r));
            status = 1;
            break;
        }
    }
    qed_loop_unwatch_fd(qed_image_loop(img), sigfd);
    close(sigfd);
    /* Listeners go (and the socket file with them); then the image is
     * flushed and marked clean. */
    qedi_nbd_server_free(srv);
    if (!tool_close(file, img))
        status = 1;
    return status;
}

/* More than any descriptor limit allows: the descriptors are the bound. */
#define MAX_CLIENTS 1000000

static bool parse_connections(const char *text, unsigned *out)
{
    char *end;
    long v = strtol(text, &end, 10);
    if (*end || end == text || v < 1 || v > MAX_CLIENTS) {
        tool_error(NULL, "invalid connection count '%s' (1 to %d)", text,
                   MAX_CLIENTS);
        return false;
    }
    *out = (unsigned)v;
    return true;
}

static bool parse_handshake_limit(const char *text, unsigned *ms)
{
    char *end;
    long v = strtol(text, &end, 10);
    if (*end || end == text || v < 0 || v > 3600) {
        tool_error(NULL, "invalid handshake limit '%s' (0 to 3600 seconds; "
                   "0: none)", text);
        return false;
    }
    *ms = (unsigned)v * 1000;
    return true;
}

static bool parse_tls_mode(const char *text, enum nbd_tls_mode *mode)
{
    if (strcmp(text, "off") == 0)
        *mode = NBD_TLS_OFF;
    else if (strcmp(text, "on") == 0)
        *mode = NBD_TLS_ON;
    else if (strcmp(text, "require") == 0)
        *mode = NBD_TLS_REQUIRE;
    else {
        tool_error(NULL, "invalid --tls '%s' (off, on or require)", text);
        return false;
    }
    return true;
}

/* Credentials without --tls mean --tls=require: the safe reading.  The
 * combinations that cannot work are refused before anything starts. */
static int check_tls_settings(const struct tool_command *cmd,
                              struct serve_settings *s)
{
    struct nbd_tls_config *t = &s->tls;
    bool creds = t->certificates_dir || t->psk_file;
    bool extras = t->verify_peer || t->nauthz || t->priority;

    if (!s->tls_given && (creds || extras))
        t->mode = NBD_TLS_REQUIRE;
    if (t->mode == NBD_TLS_OFF && (creds || extras))
        return tool_bad_usage(cmd, "--tls=off cannot be used with TLS "
                                   "credentials or settings");
    if (t->mode != NBD_TLS_OFF && !creds)
        return tool_bad_usage(cmd, "--tls=%s needs --tls-certificates=DIR or "
                              "--tls-psk=FILE",
                              t->mode == NBD_TLS_ON ? "on" : "require");
    if (t->verify_peer && !t->certificates_dir)
        return tool_bad_usage(cmd, "--tls-verify-peer needs "
                                   "--tls-certificates=DIR");
    return 0;
}

static bool parse_port(const char *text)
{
    char *end;
    long v = strtol(text, &end, 10);
    if (*end || end == text || v < 1 || v > 65535) {
        tool_error(NULL, "invalid port '%s' (1 to 65535)", text);
        return false;
    }
    return true;
}

enum {
    OPT_CACHE = TOOL_OPT_HELP + 1, OPT_DESCRIPTION, OPT_TLS, OPT_TLS_CERTS,
    OPT_TLS_PSK, OPT_TLS_VERIFY, OPT_TLS_AUTHZ, OPT_TLS_PRIORITY,
    OPT_HANDSHAKE_LIMIT, OPT_COPY_ON_READ,
};

static int serve_main(const struct tool_command *cmd, int argc, char **argv)
{
    static const struct option longopts[] = {
        { "help", no_argument, NULL, TOOL_OPT_HELP },
        { "read-only", no_argument, NULL, 'r' },
        { "export-name", required_argument, NULL, 'x' },
        { "shared", required_argument, NULL, 'e' },
        { "persistent", no_argument, NULL, 't' },
        { "socket", required_argument, NULL, 'k' },
        { "bind", required_argument, NULL, 'b' },
        { "port", required_argument, NULL, 'p' },
        { "format", required_argument, NULL, 'f' },
        { "cache", required_argument, NULL, OPT_CACHE },
        { "description", required_argument, NULL, OPT_DESCRIPTION },
        TOOL_FORCE_SHARE_OPTION,
        { "tls", required_argument, NULL, OPT_TLS },
        { "tls-certificates", required_argument, NULL, OPT_TLS_CERTS },
        { "tls-psk", required_argument, NULL, OPT_TLS_PSK },
        { "tls-verify-peer", no_argument, NULL, OPT_TLS_VERIFY },
        { "tls-authz", required_argument, NULL, OPT_TLS_AUTHZ },
        { "tls-priority", required_argument, NULL, OPT_TLS_PRIORITY },
        { "handshake-limit", required_argument, NULL, OPT_HANDSHAKE_LIMIT },
        { "handshake-timeout", required_argument, NULL, OPT_HANDSHAKE_LIMIT },
        { "copy-on-read", no_argument, NULL, OPT_COPY_ON_READ },
        { NULL, 0, NULL, 0 },
    };
    struct serve_settings s = { .bind_address = "127.0.0.1" };
    int ch, r;

    qedi_nbd_server_options_init(&s.server);
    s.tls.authz = s.authz;
    while ((ch = getopt_long(argc, argv, ":hrx:e:tk:b:p:f:D:U", longopts,
                             NULL)) != -1) {
        switch (ch) {
        case 'h':
        case TOOL_OPT_HELP:
            tool_print_help(stdout, cmd);
            return 0;
        case 'r':
            s.server.read_only = true;
            break;
        case 'U':
            s.force_share = true;
            break;
        case 'x':
            if (strlen(optarg) > 4096) {
                tool_error(NULL, "export name is longer than 4096 bytes");
                return 1;
            }
            s.server.export_name = optarg;
            break;
        case 'e':
            if (!parse_connections(optarg, &s.server.max_connections))
                return 1;
            break;
        case 't':
            s.server.persistent = true;
            break;
        case 'k':
            s.socket_path = optarg;
            break;
        case 'b':
            s.bind_address = optarg;
            break;
        case 'p':
            if (!parse_port(optarg))
                return 1;
            s.port = optarg;
            break;
        case 'f':
            if (!tool_parse_format(optarg, &s.format))
                return 1;
            break;
        case OPT_CACHE:
            if (strcmp(optarg, "none") == 0) {
                s.cache = QED_CACHE_NONE;
            } else if (strcmp(optarg, "writeback") != 0) {
                tool_error(NULL, "invalid cache mode '%s' (none or writeback)",
                           optarg);
                return 1;
            }
            break;
        case 'D':
        case OPT_DESCRIPTION:
            s.server.description = optarg;
            break;
        case OPT_TLS:
            if (!parse_tls_mode(optarg, &s.tls.mode))
                return 1;
            s.tls_given = true;
            break;
        case OPT_TLS_CERTS:
            s.tls.certificates_dir = optarg;
            break;
        case OPT_TLS_PSK:
            s.tls.psk_file = optarg;
            break;
        case OPT_TLS_VERIFY:
            s.tls.verify_peer = true;
            break;
        case OPT_TLS_AUTHZ:
            if (s.tls.nauthz == sizeof(s.authz) / sizeof(s.authz[0])) {
                tool_error(NULL, "too many --tls-authz identities (at most 64)");
                return 1;
            }
            s.authz[s.tls.nauthz++] = optarg;
            break;
        case OPT_TLS_PRIORITY:
            s.tls.priority = optarg;
            break;
        case OPT_HANDSHAKE_LIMIT:
            if (!parse_handshake_limit(optarg, &s.server.handshake_limit_ms))
                return 1;
            break;
        case OPT_COPY_ON_READ:
            s.copy_on_read = true;
            break;
        default:
            return tool_bad_option(cmd, ch, argv);
        }
    }
    if (optind != argc - 1)
        return tool_bad_usage(cmd, "expected one image file name");
    if (!s.socket_path && !s.port && activation_fds() == 0)
        return tool_bad_usage(cmd, "give -k SOCKET or -p PORT (or start it "
                                   "through socket activation)");
    if (s.socket_path && s.port)
        return tool_bad_usage(cmd, "-k and -p cannot be used together");
    if ((r = check_tls_settings(cmd, &s)) != 0)
        return r;
    if (s.copy_on_read && s.server.read_only)
        return tool_bad_usage(cmd, "--copy-on-read writes into the image: "
                                   "it cannot be used with -r");
    return serve(&s, argv[optind]);
}

const struct tool_command serve_command = {
    .name = "serve",
    .synopsis = "[-r [-U]] [-x NAME] [-e N] [-t] [-f FMT] "
                "[--cache none|writeback] [--copy-on-read] "
                "[--tls=off|on|require --tls-certificates=DIR|--tls-psk=FILE "
                "...] (-k SOCKET | [-b ADDR] -p PORT) FILE",
    .summary = "Export an image over NBD, like qemu-nbd.",
    .details =
        "Options:\n"
        "  -r, --read-only        export read-only (writes get EPERM)\n"
        "  -U, --force-share      with -r: open without conflicting with a\n"
        "                         program writing the image (clients may\n"
        "                         then read inconsistent data)\n"
        "  -x, --export-name=NAME export name (default empty)\n"
        "  -D, --description=TEXT export description\n"
        "  -e, --shared=N         clients at once (default 16); connections\n"
        "                         still negotiating are not counted\n"
        "  -t, --persistent       keep serving after the last client leaves\n"
        "  -k, --socket=PATH      listen on a Unix socket\n"
        "  -b, --bind=ADDR        TCP address (default 127.0.0.1)\n"
        "  -p, --port=PORT        listen on a TCP port\n"
        "  -f, --format=FMT       image format (qed or raw; default probed)\n"
        "  --cache=none|writeback none opens the image with O_DIRECT\n"
        "  --copy-on-read         what clients read from the backing chain is\n"
        "                         also written into the image (not with -r)\n"
        "  --handshake-limit=S    drop clients still negotiating after S\n"
        "                         seconds, TLS handshake included (default 10;\n"
        "                         0: no limit); also --handshake-timeout\n"
        "TLS (GnuTLS, upgraded with NBD_OPT_STARTTLS):\n"
        "  --tls=off|on|require   on: offered; require: nothing but STARTTLS\n"
        "                         and ABORT before TLS (the default when\n"
        "                         credentials are given)\n"
        "  --tls-certificates=DIR X.509: DIR/server-cert.pem, server-key.pem,\n"
        "                         ca-cert.pem, optional ca-crl.pem\n"
        "  --tls-psk=FILE         pre-shared keys, username:hexkey lines (psktool)\n"
        "  --tls-verify-peer      X.509 clients need a certificate from the CA\n"
        "  --tls-authz=IDENTITY   allow only this client (certificate subject DN\n"
        "                         or PSK username); repeat for more\n"
        "  --tls-priority=STRING  GnuTLS priority (default refuses TLS < 1.2)\n"
        "Private keys and PSK files must not be accessible to other users.\n"
        "Without -k or -p, listening sockets passed by socket activation\n"
        "(LISTEN_FDS) are used, as `nbdinfo -- [ qed serve FILE ]` does.\n"
        "SIGINT or SIGTERM: requests in flight finish, the image is flushed\n"
        "and closed clean, the socket file is removed, exit status 0.\n",
    .run = serve_main,
};
