#!/usr/bin/env bash
#
# pgbouncer.sh create|update|delete|check - a region's PgBouncer, in front
# of the region's HAProxy (docs/pooling.md says why in front and not behind).
#
# Environment (create/update):
#   RUN_AS             OS user running pgbouncer (the group's user)
#   POOL_DIR           absolute directory: pgbouncer.ini, userlist.txt (0600),
#                      pgbouncer.pid, pgbouncer.log, the unix socket
#   POOL_HOST          address the pooler listens on: loopback on the local
#                      target, the host's own address with TARGET=ssh
#   POOL_PORT          its port (the fleet file's network.pool_port)
#   APP_DB, APP_USER   the application's database and user
#   WRITE_TARGET       host:port of the region's HAProxy write listener:
#                      the database APP_DB
#   READ_TARGET        host:port of its read listener: the database
#                      APP_DB_read
#   PRIMARY            host:port of the group's primary node.  Only compared:
#                      when it changes (a switchover), every server
#                      connection is closed once idle (RECONNECT), so that no
#                      pooled connection keeps talking to the old primary
#                      through a draining HAProxy process.
#   DEFAULT_POOL_SIZE  server connections per pool (database, user)
#   MAX_CLIENT_CONN    client connections accepted
#   PG_APP_PASSWORD    (secret) the application user's password: written to
#                      userlist.txt (0600, RUN_AS), which PgBouncer uses both
#                      to check clients (SCRAM) and to log in to the server
#   TLS_CERT, TLS_KEY  the pooler's certificate (its address) and key (secret),
#   TLS_CA             and the group's CA, base64-encoded PEM (lib.sh write_tls):
#                      clients must use TLS; the proxy is verified (verify-full)
# delete needs only RUN_AS and POOL_DIR.
#
# create/update (idempotent): render pgbouncer.ini and userlist.txt; start
# pgbouncer (-d) as RUN_AS if it is not running; if it runs and either file
# changed, RELOAD it with SIGHUP: clients stay connected.  Nothing happens
# when nothing changed.
#
# The admin console is reached over the unix socket in POOL_DIR (0700) as
# user "pgbouncer", which PgBouncer admits without a password from its own
# OS user; over TCP only APP_USER may ask it, read-only (stats_users).
#
# Output: one summary line on stdout; progress/errors on stderr.
set -euo pipefail

# shellcheck source=SCRIPTDIR/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

init_vars() {
    INI=$POOL_DIR/pgbouncer.ini
    USERLIST=$POOL_DIR/userlist.txt
    PIDFILE=$POOL_DIR/pgbouncer.pid
    LOGFILE=$POOL_DIR/pgbouncer.log
    PRIMARY_FILE=$POOL_DIR/primary
    TLS_DIR=$POOL_DIR/tls
}

# pooler_pid : the pid in the pid file if it is a running pgbouncer.
pooler_pid() {
    local pid=
    [[ -f "$PIDFILE" ]] && read -r pid <"$PIDFILE"
    if proc_exe_is "$pid" "$PGBOUNCER_BIN"; then printf '%s' "$pid"; fi
}

render_ini() {
    cat <<EOF
; Managed by dbfleet (pgbouncer.sh); rewritten on every run - do not edit.
[databases]
$APP_DB = host=${WRITE_TARGET%:*} port=${WRITE_TARGET##*:} dbname=$APP_DB
${APP_DB}_read = host=${READ_TARGET%:*} port=${READ_TARGET##*:} dbname=$APP_DB

[pgbouncer]
listen_addr = $POOL_HOST
listen_port = $POOL_PORT
unix_socket_dir = $POOL_DIR
pidfile = $PIDFILE
logfile = $LOGFILE
auth_type = scram-sha-256
auth_file = $USERLIST
stats_users = $APP_USER
pool_mode = transaction
default_pool_size = $DEFAULT_POOL_SIZE
max_client_conn = $MAX_CLIENT_CONN
; JDBC sends it; PgBouncer would refuse the login otherwise.
ignore_startup_parameters = extra_float_digits
; A dead HAProxy or primary: new server logins are tried again every second,
; and a client waits at most 30 s for a server connection.
server_login_retry = 1
query_wait_timeout = 30
; TLS both ways: clients must use it (the pooler's certificate names this
; address); the proxy behind is verified against the group's CA.
client_tls_sslmode = require
client_tls_cert_file = $TLS_DIR/server.crt
client_tls_key_file = $TLS_DIR/server.key
client_tls_protocols = tlsv1.2,tlsv1.3
server_tls_sslmode = verify-full
server_tls_ca_file = $TLS_DIR/ca.crt
server_tls_protocols = tlsv1.2,tlsv1.3
; Hundreds of short client connections would drown the log.
log_connections = 0
log_disconnections = 0
EOF
}

# render_userlist : the auth file; a '"' in a password is written twice.
render_userlist() {
    printf '"%s" "%s"\n' "$APP_USER" "${PG_APP_PASSWORD//\"/\"\"}"
}

listening() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

pid_running() { [[ -n "$(pooler_pid)" ]]; }

# admin COMMAND : run a command on the admin console (unix socket, as RUN_AS).
admin() {
    run_as "$PG_BIN/psql" -X -q -A -t -w -h "$POOL_DIR" -p "$POOL_PORT" -U pgbouncer \
        -d pgbouncer -c "$1"
}

do_create() {
    protect_secrets
    check_run_as
    check_fleet
    require_env POOL_DIR POOL_HOST POOL_PORT APP_DB APP_USER WRITE_TARGET READ_TARGET \
        PRIMARY DEFAULT_POOL_SIZE MAX_CLIENT_CONN PG_APP_PASSWORD TLS_CERT TLS_KEY TLS_CA
    check_abs_path POOL_DIR
    check_bind POOL_HOST "$POOL_HOST"
    check_port POOL_PORT "$POOL_PORT"
    check_ident APP_DB "$APP_DB"
    check_ident APP_USER "$APP_USER"
    check_hostport WRITE_TARGET "$WRITE_TARGET"
    check_hostport READ_TARGET "$READ_TARGET"
    check_hostport PRIMARY "$PRIMARY"
    [[ "$DEFAULT_POOL_SIZE" =~ ^[1-9][0-9]{0,4}$ ]] || die "DEFAULT_POOL_SIZE: '$DEFAULT_POOL_SIZE' is not a pool size"
    [[ "$MAX_CLIENT_CONN" =~ ^[1-9][0-9]{0,5}$ ]] || die "MAX_CLIENT_CONN: '$MAX_CLIENT_CONN' is not a number of clients"
    [[ -x "$PGBOUNCER_BIN" ]] || die "pgbouncer not found at $PGBOUNCER_BIN (package pgbouncer)"
    [[ -x "$PG_BIN/psql" ]] || die "psql not found at $PG_BIN/psql"

    init_vars
    claim_dir "$POOL_DIR" use
    make_dirs "$POOL_DIR"
    mark_dir "$POOL_DIR" "pgbouncer"
    lock_dir "$POOL_DIR"

    local done_=() changed=0 previous=
    if write_tls "$TLS_DIR"; then
        changed=1
        done_+=("certificate written")
    fi
    if render_ini | put_file "$INI"; then
        changed=1
        done_+=("config written")
    fi
    if render_userlist | put_file "$USERLIST"; then
        changed=1
        done_+=("userlist written")
    fi
    [[ -f "$PRIMARY_FILE" ]] && previous=$(<"$PRIMARY_FILE")

    local pid
    pid=$(pooler_pid)
    if [[ -z "$pid" ]]; then
        [[ -e "$PIDFILE" ]] && rm -f -- "$PIDFILE"
        # One descriptor per client and per server connection: the soft limit
        # is raised to the hard one inside run_as (runuser's PAM session
        # would reset a limit raised out here).
        # shellcheck disable=SC2016  # expanded by the inner shell
        run_as bash -c 'ulimit -n "$(ulimit -Hn)" 2>/dev/null; exec "$@"' pgbouncer \
            "$PGBOUNCER_BIN" -d -q "$INI" >&2 ||
            die "pgbouncer failed to start with $INI (see $LOGFILE)"
        wait_for 10 "pgbouncer to write $PIDFILE" pid_running ||
            die "pgbouncer did not start (see $LOGFILE)"
        done_+=(started)
    elif ((changed)); then
        # SIGHUP = RELOAD: the files are read again, clients stay connected.
        kill -HUP "$pid" || die "cannot signal pgbouncer $pid"
        done_+=(reloaded)
    fi
    wait_for 10 "pgbouncer to listen on $POOL_HOST:$POOL_PORT" listening "$POOL_HOST" "$POOL_PORT" ||
        die "pgbouncer is not listening on $POOL_HOST:$POOL_PORT (see $LOGFILE)"
    if [[ "$previous" != "$PRIMARY" ]]; then
        if [[ -n "$previous" ]]; then
            # The primary moved: close every server connection as soon as it is
            # released, so the next transaction reaches the new primary.
            admin RECONNECT >&2 || die "RECONNECT on the admin console failed"
            done_+=("server connections renewed for primary $PRIMARY")
        fi
        printf '%s\n' "$PRIMARY" | put_file "$PRIMARY_FILE" || true
    fi

    local what="no changes"
    if ((${#done_[@]} > 0)); then
        what=$(printf '%s, ' "${done_[@]}")
        what=${what%, }
    fi
    printf '%s: pooler %s:%s (pid %s) ready in %s: %s\n' \
        "$SCRIPT_NAME" "$POOL_HOST" "$POOL_PORT" "$(pooler_pid)" "$(elapsed)" "$what"
}

gone() { ! proc_exe_is "$1" "$PGBOUNCER_BIN"; }

do_delete() {
    check_run_as
    check_fleet
    require_env POOL_DIR
    check_abs_path POOL_DIR
    init_vars
    if [[ -d "$POOL_DIR" ]]; then
        claim_dir "$POOL_DIR" delete
        lock_dir "$POOL_DIR"
        local pid
        pid=$(pooler_pid)
        if [[ -n "$pid" ]]; then
            kill -TERM "$pid" 2>/dev/null || true
            if ! wait_for 10 "pgbouncer $pid to exit" gone "$pid"; then
                warn "pgbouncer $pid ignored SIGTERM; sending SIGKILL"
                kill -KILL "$pid" 2>/dev/null || true
                wait_for 5 "pgbouncer $pid to die" gone "$pid" || die "pgbouncer $pid is still running"
            fi
        fi
        safe_remove_dir "$POOL_DIR"
    fi
    printf '%s: deleted %s in %s\n' "$SCRIPT_NAME" "$POOL_DIR" "$(elapsed)"
}

# do_check : read-only drift probe; DRIFT_EXIT_CODE (lib.sh) when the pooler
# is not running or a file is missing.  Changes nothing.
do_check() {
    require_env POOL_DIR
    init_vars
    [[ -f "$INI" && -f "$USERLIST" ]] || exit "$DRIFT_EXIT_CODE"
    [[ -n "$(pooler_pid)" ]] || exit "$DRIFT_EXIT_CODE"
    exit 0
}

case "${1:-}" in
create | update) do_create ;;
delete) do_delete ;;
check) do_check ;;
*) die "usage: $SCRIPT_NAME create|update|delete|check (configuration in the environment)" ;;
esac
