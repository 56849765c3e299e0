# SPDX-License-Identifier: MIT
# Sourced by the tests of images behind http:// URLs (after lib.sh and
# nbd-tls-common.bash): nginx on a free loopback port serving $T/www, started
# here and stopped on exit.
_http_pids=()
# _http_stop — stops the servers started here (scripts that also source
# nbd-server.bash or mount-common.bash call it from their own EXIT trap).
_http_stop() {
    local p
    for p in "${_http_pids[@]}"; do kill "$p" 2>/dev/null && wait "$p" 2>/dev/null; done
    return 0
}
trap '_http_stop; _cleanup' EXIT

# start_nginx [EXTRA-HTTP-CONFIG] — nginx serving $T/www on 127.0.0.1:$HTTP_PORT
# (requests logged to $T/access.log as "PROTOCOL STATUS", format "proto"),
# with EXTRA-HTTP-CONFIG (more server blocks) in its http block; skips the
# whole script when nginx does not start.  Sets HTTP_PORT and HTTP_URL.
start_nginx() {
    local user=""
    mkdir -p "$T/www" "$T/tmp"
    HTTP_PORT=$(free_port)
    # As root, nginx's workers would run as nobody and not reach $T.
    [ "$(id -u)" -eq 0 ] && user="user root;"
    cat >"$T/nginx.conf" <<CONF
$user
daemon off;
pid $T/nginx.pid;
error_log $T/nginx.err;
events { worker_connections 256; }
http {
    access_log off;
    log_format proto '\$server_protocol \$status';
    client_body_temp_path $T/tmp;
    proxy_temp_path $T/tmp;
    fastcgi_temp_path $T/tmp;
    uwsgi_temp_path $T/tmp;
    scgi_temp_path $T/tmp;
    server { listen 127.0.0.1:$HTTP_PORT; root $T/www; access_log $T/access.log proto; }
    ${1:-}
}
CONF
    nginx -c "$T/nginx.conf" </dev/null >/dev/null 2>&1 &
    _http_pids+=($!)
    wait_port "$HTTP_PORT" || skip_all "nginx does not start here: $(head -c 300 "$T/nginx.err")"
    HTTP_URL="http://127.0.0.1:$HTTP_PORT"
}
