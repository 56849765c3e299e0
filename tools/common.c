/* SPDX-License-Identifier: MIT */
/* Shared pieces of the `qed` command-line tool. */
#include "common.h"

#include <errno.h>
#include <getopt.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- subcommands --------------------------------------------------------- */

void tool_print_help(FILE *out, const struct tool_command *cmd)
{
    fprintf(out, "usage: qed %s %s\n\n%s\n", cmd->name, cmd->synopsis,
            cmd->summary);
    if (cmd->details && cmd->details[0])
        fprintf(out, "\n%s", cmd->details);
}

/* ---- errors -------------------------------------------------------------- */

/* Errors are one line whatever a file name contains: control characters
 * are shown escaped. */
static void put_one_line(const char *text)
{
    for (const unsigned char *p = (const unsigned char *)text; *p; p++) {
        if (*p == '\n')
            fputs("\\n", stderr);
        else if (*p < 0x20 || *p == 0x7f)
            fprintf(stderr, "\\x%02x", *p);
        else
            fputc(*p, stderr);
    }
}

bool tool_find_url_password(const char *text, const char **start,
                            const char **end)
{
    const char *auth;

    while ((auth = strstr(text, "://")) != NULL) {
        const char *stop, *colon, *at = NULL;
        auth += 3;
        stop = auth + strcspn(auth, "/?#");
        /* The last '@' ends the user information: a password with an
         * unencoded '@' is still covered whole. */
        for (const char *p = auth; p < stop; p++)
            if (*p == '@')
                at = p;
        colon = memchr(auth, ':', (size_t)(stop - auth));
        if (colon && at && colon < at) {
            *start = colon + 1;
            *end = at;
            return true;
        }
        text = stop;
    }
    return false;
}

/* A URI's password (scheme://user:password@host) is never shown. */
const char *tool_display_name(const char *name, char *buf, size_t len)
{
    const char *start, *end;

    if (!tool_find_url_password(name, &start, &end))
        return name;
    snprintf(buf, len, "%.*s***%s", (int)(start - name), name, end);
    return buf;
}

static void tool_verror(const char *file, const char *fmt, va_list ap)
{
    char message[1024], shown[4096];

    vsnprintf(message, sizeof(message), fmt, ap);
    /* Flush stdout first so that the error lands after what was printed
     * before it when both streams go to the same place. */
    fflush(stdout);
    fputs("qed: ", stderr);
    if (file) {
        put_one_line(tool_display_name(file, shown, sizeof(shown)));
        fputs(": ", stderr);
    }
    put_one_line(message);
    fputc('\n', stderr);
}

void tool_error(const char *file, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    tool_verror(file, fmt, ap);
    va_end(ap);
}

void tool_print_notice(void *file, const char *message)
{
    tool_error((const char *)file, "warning: %s", message);
}

void tool_report(const char *file, const char *context, const qed_error *err)
{
    const char *message = err->message;
    char fallback[64];

    if (!message[0]) {
        snprintf(fallback, sizeof(fallback), "%s",
                 strerror(err->code ? err->code : EIO));
        message = fallback;
    }
    if (context)
        tool_error(file, "%s: %s", context, message);
    else
        tool_error(file, "%s", message);
}

/* ---- options ------------------------------------------------------------- */

int tool_bad_option(const struct tool_command *cmd, int ch, char **argv)
{
    const char *arg = optind > 0 ? argv[optind - 1] : "?";
    /* getopt_long reports a long option by its val, which for options
     * without a one-letter form is outside the printable range (or 0 for a
     * name it does not know); show those by the text given instead. */
    bool is_long = optopt < 0x21 || optopt > 0x7e;

    if (ch == ':' && !is_long)
        tool_error(NULL, "%s: option requires an argument -- '%c'", cmd->name,
                   optopt);
    else if (ch == ':')
        tool_error(NULL, "%s: option '%s' requires an argument", cmd->name,
                   arg);
    else if (!is_long)
        tool_error(NULL, "%s: invalid option -- '%c' (see 'qed %s --help')",
                   cmd->name, optopt, cmd->name);
    else
        tool_error(NULL, "%s: invalid option '%s' (see 'qed %s --help')",
                   cmd->name, arg, cmd->name);
    return 1;
}

int tool_bad_usage(const struct tool_command *cmd, const char *fmt, ...)
{
    char message[512];
    va_list ap;

    va_start(ap, fmt);
    vsnprintf(message, sizeof(message), fmt, ap);
    va_end(ap);
    tool_error(NULL, "%s: %s (see 'qed %s --help')", cmd->name, message,
               cmd->name);
    return 1;
}

bool tool_parse_size(const char *text, const char *what, uint64_t *out)
{
    qed_error err = {0};

    if (qed_parse_size(text, out, &err) < 0) {
        if (err.message[0])
            tool_error(NULL, "%s: %s", what, err.message);
        else
            tool_error(NULL, "invalid %s '%s'", what, text);
        return false;
    }
    return true;
}

bool tool_parse_byte(const char *text, int *out)
{
    char *end;
    long value;

    errno = 0;
    value = strtol(text, &end, 0);
    if (errno || end == text || *end || value < 0 || value > 255)
        return false;
    *out = (int)value;
    return true;
}

bool tool_parse_format(const char *text, enum qed_format *out)
{
    if (strcmp(text, "qed") == 0) {
        *out = QED_FORMAT_QED;
        return true;
    }
    if (strcmp(text, "raw") == 0) {
        *out = QED_FORMAT_RAW;
        return true;
    }
    tool_error(NULL, "unknown image format '%s' (expected qed or raw)", text);
    return false;
}

bool tool_parse_output(const char *text, bool *json)
{
    if (strcmp(text, "json") == 0) {
        *json = true;
        return true;
    }
    if (strcmp(text, "human") == 0) {
        *json = false;
        return true;
    }
    tool_error(NULL, "--output must be human or json, not '%s'", text);
    return false;
}

/* ---- create options ------------------------------------------------------ */

static const struct {
    const char *name;
    const char *help;
} create_option_list[] = {
    {"size=<size>", "Virtual disk size"},
    {"backing_file=<str>", "File name of a base image"},
    {"backing_fmt=<str>", "Image format of the base image (raw or qed)"},
    {"cluster_size=<size>", "Cluster size (in bytes, default 64k)"},
    {"table_size=<num>", "L1/L2 table size (in clusters, default 4)"},
    {"preallocation=<str>", "Preallocation mode (off, metadata, falloc, "
                            "full)"},
};

void tool_print_create_options(FILE *out)
{
    fprintf(out, "Supported options:\n");
    for (size_t i = 0; i < sizeof(create_option_list) /
                               sizeof(create_option_list[0]); i++)
        fprintf(out, "  %-22s - %s\n", create_option_list[i].name,
                create_option_list[i].help);
}

void tool_warn_qemu_incompatible(const char *path,
                                 const struct qed_create_options *o,
                                 uint64_t size)
{
    const char *why = qed_qemu_open_problem(size, o->cluster_size,
                                            o->table_size);

    if (why)
        tool_error(path, "warning: QEMU 7.2 will not open this image: %s",
                   why);
}

bool tool_create_options_help_requested(const char *text)
{
    return strcmp(text, "?") == 0 || strcmp(text, "help") == 0;
}

/* Cluster and table sizes are 32-bit fields; anything larger is passed on
 * as a value the library is sure to reject with its own message. */
static bool parse_u32_option(const char *name, const char *value,
                             uint32_t *out)
{
    uint64_t parsed;

    if (!tool_parse_size(value, name, &parsed))
        return false;
    if (parsed > UINT32_MAX) {
        tool_error(NULL, "%s %s is too large", name, value);
        return false;
    }
    *out = (uint32_t)parsed;
    return true;
}

bool tool_parse_preallocation(const char *text, enum qed_preallocation *out)
{
    static const enum qed_preallocation modes[] = {
        QED_PREALLOC_OFF, QED_PREALLOC_METADATA, QED_PREALLOC_FALLOC,
        QED_PREALLOC_FULL,
    };

    for (size_t i = 0; i < sizeof(modes) / sizeof(modes[0]); i++) {
        if (strcmp(text, qed_preallocation_name(modes[i])) == 0) {
            *out = modes[i];
            return true;
        }
    }
    tool_error(NULL, "Invalid preallocation mode '%s' (expected off, "
               "metadata, falloc or full)", text);
    return false;
}

static bool apply_create_option(const char *name, const char *value,
                                struct tool_create_settings *settings)
{
    struct qed_create_options *o = &settings->options;

    if (strcmp(name, "size") == 0) {
        settings->size_given = true;
        return tool_parse_size(value, name, &o->virtual_size);
    }
    if (strcmp(name, "cluster_size") == 0)
        return parse_u32_option(name, value, &o->cluster_size);
    if (strcmp(name, "table_size") == 0) {
        settings->table_size_given = true;
        return parse_u32_option(name, value, &o->table_size);
    }
    if (strcmp(name, "backing_file") == 0) {
        o->backing_file = value;
        return true;
    }
    if (strcmp(name, "preallocation") == 0) {
        settings->preallocation_given = true;
        return tool_parse_preallocation(value, &o->preallocation);
    }
    if (strcmp(name, "backing_fmt") == 0) {
        settings->backing_format_given = true;
        return tool_parse_format(value, &o->backing_format);
    }
    tool_error(NULL, "unknown option '%s' (see '-o help')", name);
    return false;
}

bool tool_parse_create_options(char *text,
                               struct tool_create_settings *settings)
{
    char *next = text;

    while (next) {
        char *item = next;
        char *comma = strchr(item, ',');
        char *equals;

        next = NULL;
        if (comma) {
            *comma = '\0';
            next = comma + 1;
        }
        if (!item[0])
            continue;
        equals = strchr(item, '=');
        if (!equals) {
            tool_error(NULL, "option '%s' needs a value (NAME=VALUE)", item);
            return false;
        }
        *equals = '\0';
        if (!apply_create_option(item, equals + 1, settings))
            return false;
    }
    return true;
}

/* ---- images -------------------------------------------------------------- */

bool tool_open(const char *path, enum qed_format format, unsigned flags,
               qed_image **out)
{
    struct qed_open_options options = {
        .size = sizeof(options),
        .flags = flags,
        .format = format,
    };
    qed_error err = {0};

    if (tool_qed_open(path, &options, out, &err) < 0) {
        tool_report(path, NULL, &err);
        *out = NULL;
        return false;
    }
    tool_report_warnings(path, *out);
    return true;
}

void tool_report_warnings(const char *path, const qed_image *image)
{
    const char *line = qed_warnings(image);

    while (line && *line) {
        const char *end = strchr(line, '\n');
        int len = end ? (int)(end - line) : (int)strlen(line);
        tool_error(path, "warning: %.*s", len, line);
        line = end ? end + 1 : NULL;
    }
}

bool tool_close(const char *path, qed_image *image)
{
    qed_error err = {0};

    if (qed_close(image, &err) < 0) {
        tool_report(path, NULL, &err);
        return false;
    }
    return true;
}

void *tool_alloc_buffer(size_t size)
{
    void *buf = NULL;

    if (posix_memalign(&buf, 4096, size ? size : 1) != 0)
        return NULL;
    return buf;
}

/* ---- output -------------------------------------------------------------- */

void tool_format_size(uint64_t bytes, char *buf, size_t len)
{
    static const char *const units[] = {"B",   "KiB", "MiB", "GiB",
                                        "TiB", "PiB", "EiB"};
    double value = (double)bytes;
    unsigned unit = 0;

    /* Go up a unit before "%.3g" would need four digits (or an exponent),
     * so a size reads at most "999 KiB" and then "0.977 MiB". */
    while (value >= 999.5 && unit + 1 < sizeof(units) / sizeof(units[0])) {
        value /= 1024;
        unit++;
    }
    snprintf(buf, len, "%.3g %s", value, units[unit]);
}

/* Length of the valid UTF-8 sequence at p (n bytes left), 0 if invalid. */
static size_t utf8_sequence_length(const unsigned char *p, size_t n)
{
    size_t need;
    uint32_t cp;

    if (p[0] < 0x80)
        return 1;
    if (p[0] >= 0xc2 && p[0] <= 0xdf) {
        need = 2;
        cp = p[0] & 0x1f;
    } else if (p[0] >= 0xe0 && p[0] <= 0xef) {
        need = 3;
        cp = p[0] & 0x0f;
    } else if (p[0] >= 0xf0 && p[0] <= 0xf4) {
        need = 4;
        cp = p[0] & 0x07;
    } else {
        return 0;
    }
    if (n < need)
        return 0;
    for (size_t i = 1; i < need; i++) {
        if ((p[i] & 0xc0) != 0x80)
            return 0;
        cp = (cp << 6) | (p[i] & 0x3f);
    }
    /* Reject overlong forms, surrogates and values past U+10FFFF. */
    if ((need == 3 && cp < 0x800) || (need == 4 && cp < 0x10000) ||
        (cp >= 0xd800 && cp <= 0xdfff) || cp > 0x10ffff)
        return 0;
    return need;
}

void tool_json_string(FILE *out, const char *text)
{
    const unsigned char *p = (const unsigned char *)text;
    size_t left = strlen(text);

    fputc('"', out);
    while (left > 0) {
        size_t seq = utf8_sequence_length(p, left);

        if (seq == 0) {
            fputs("\\ufffd", out);
            seq = 1;
        } else if (*p == '"' || *p == '\\') {
            fprintf(out, "\\%c", *p);
        } else if (*p == '\n') {
            fputs("\\n", out);
        } else if (*p == '\t') {
            fputs("\\t", out);
        } else if (*p == '\r') {
            fputs("\\r", out);
        } else if (*p < 0x20 || *p == 0x7f) {
            fprintf(out, "\\u%04x", *p);
        } else {
            fwrite(p, 1, seq, out);
        }
        p += seq;
        left -= seq;
    }
    fputc('"', out);
}

void tool_json_init(struct tool_json *json, FILE *out)
{
    json->out = out;
    json->depth = 0;
    json->need_comma = false;
}

/* Starts a member: comma after the previous one, newline, indent, key. */
static void json_member(struct tool_json *json, const char *key)
{
    if (json->need_comma)
        fputc(',', json->out);
    if (json->depth > 0)
        fputc('\n', json->out);
    for (int i = 0; i < json->depth; i++)
        fputs("    ", json->out);
    if (key) {
        tool_json_string(json->out, key);
        fputs(": ", json->out);
    }
    json->need_comma = true;
}

static void json_open(struct tool_json *json, const char *key, char bracket)
{
    json_member(json, key);
    fputc(bracket, json->out);
    json->depth++;
    json->need_comma = false;
}

static void json_close(struct tool_json *json, char bracket)
{
    bool empty = !json->need_comma;

    json->depth--;
    if (!empty) {
        fputc('\n', json->out);
        for (int i = 0; i < json->depth; i++)
            fputs("    ", json->out);
    }
    fputc(bracket, json->out);
    json->need_comma = true;
}

void tool_json_begin_object(struct tool_json *json, const char *key)
{
    json_open(json, key, '{');
}

void tool_json_end_object(struct tool_json *json)
{
    json_close(json, '}');
}

void tool_json_begin_array(struct tool_json *json, const char *key)
{
    json_open(json, key, '[');
}

void tool_json_end_array(struct tool_json *json)
{
    json_close(json, ']');
}

void tool_json_uint(struct tool_json *json, const char *key, uint64_t value)
{
    json_member(json, key);
    fprintf(json->out, "%llu", (unsigned long long)value);
}

void tool_json_bool(struct tool_json *json, const char *key, bool value)
{
    json_member(json, key);
    fputs(value ? "true" : "false", json->out);
}

void tool_json_str(struct tool_json *json, const char *key, const char *value)
{
    json_member(json, key);
    tool_json_string(json->out, value);
}

void tool_json_finish(struct tool_json *json)
{
    fputc('\n', json->out);
    json->need_comma = false;
}

/* ---- progress ------------------------------------------------------------ */

void tool_progress_start(struct tool_progress *progress, bool requested)
{
    progress->active = requested && isatty(STDERR_FILENO);
    progress->shown = -1;
    tool_progress_update(progress, 0, 1);
}

void tool_progress_update(struct tool_progress *progress, uint64_t done,
                          uint64_t total)
{
    double percent = total ? 100.0 * (double)done / (double)total : 100.0;

    if (!progress->active)
        return;
    if (percent > 100.0)
        percent = 100.0;
    /* Redraw on every whole percent, not on every request. */
    if (progress->shown >= 0 && percent - progress->shown < 1.0 &&
        percent < 100.0)
        return;
    fprintf(stderr, "    (%.2f/100%%)\r", percent);
    fflush(stderr);
    progress->shown = percent;
}

void tool_progress_finish(struct tool_progress *progress)
{
    if (!progress->active)
        return;
    if (progress->shown < 100.0)
        fprintf(stderr, "    (100.00/100%%)\r");
    fputc('\n', stderr);
    fflush(stderr);
    progress->active = false;
}

enum qed_engine tool_engine(void)
{
    const char *env = getenv("QED_IO_ENGINE");

    if (!env)
        return QED_ENGINE_AUTO;
    if (strcmp(env, "threads") == 0)
        return QED_ENGINE_THREADS;
    if (strcmp(env, "uring") == 0 || strcmp(env, "io_uring") == 0)
        return QED_ENGINE_URING;
    return QED_ENGINE_AUTO;
}

/* https: the CA file curl's tools take from the environment, and the
 * explicit opt-out of verification (said once on stderr). */
static void tool_tls_settings(struct qed_open_options *options)
{
    static bool warned;
    const char *ca = getenv("CURL_CA_BUNDLE");
    const char *off = getenv("QED_TLS_NO_VERIFY");

    if (!ca || !ca[0])
        ca = getenv("SSL_CERT_FILE");
    if (!options->tls_ca_file && ca && ca[0])
        options->tls_ca_file = ca;
    if (off && strcmp(off, "1") == 0) {
        options->tls_no_verify = true;
        if (!warned)
            tool_error("warning", "QED_TLS_NO_VERIFY=1: servers' TLS "
                       "certificates are not verified");
        warned = true;
    }
}

static const char *env_or_null(const char *name)
{
    const char *v = getenv(name);
    return v && v[0] ? v : NULL;
}

/* s3://: the standard AWS variables. */
static void tool_s3_settings(struct qed_open_options *options)
{
    options->s3_endpoint = env_or_null("AWS_ENDPOINT_URL");
    options->s3_region = env_or_null("AWS_REGION");
    if (!options->s3_region)
        options->s3_region = env_or_null("AWS_DEFAULT_REGION");
    options->s3_access_key_id = env_or_null("AWS_ACCESS_KEY_ID");
    options->s3_secret_access_key = env_or_null("AWS_SECRET_ACCESS_KEY");
    options->s3_session_token = env_or_null("AWS_SESSION_TOKEN");
}

/* http(s):// and s3://: QED_REMOTE_CACHE, the read cache's size ("0":
 * none). */
static int tool_cache_settings(struct qed_open_options *options,
                               qed_error *err)
{
    const char *text = env_or_null("QED_REMOTE_CACHE");
    uint64_t bytes;

    if (!text)
        return 0;
    if (qed_parse_size(text, &bytes, err) < 0) {
        char why[sizeof(err->message)];
        snprintf(why, sizeof(why), "%s", err->message[0] ? err->message
                                                          : "not a size");
        err->code = EINVAL;
        snprintf(err->message, sizeof(err->message),
                 "QED_REMOTE_CACHE='%.64s': %.400s", text, why);
        return -EINVAL;
    }
    options->remote_cache_bytes = bytes ? bytes : QED_REMOTE_CACHE_OFF;
    return 0;
}

int tool_remote_settings(struct qed_open_options *options, qed_error *err)
{
    tool_tls_settings(options);
    tool_s3_settings(options);
    return tool_cache_settings(options, err);
}

int tool_qed_open(const char *path, struct qed_open_options *options,
              qed_image **out, qed_error *err)
{
    if (!options->loop && options->engine == QED_ENGINE_AUTO)
        options->engine = tool_engine();
    *out = NULL;
    if (tool_remote_settings(options, err) < 0)
        return -EINVAL;
    return qed_open(path, options, out, err);
}
