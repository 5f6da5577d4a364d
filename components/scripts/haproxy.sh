#!/usr/bin/env bash
#
# haproxy.sh create|update|delete|check|render - a region's HAProxy in front
# of a group managed by Patroni.
#
# Environment (create/update/render):
#   RUN_AS          OS user running haproxy
#   PROXY_DIR       absolute directory: haproxy.cfg, haproxy.pid, haproxy.sock,
#                   haproxy.state
#   PROXY_HOST      the address all three listeners bind to; it is also the
#                   SOURCE address of haproxy's connections (and checks) to
#                   the nodes (so pg_hba sees the region's address, not
#                   127.0.0.1 - list PROXY_HOST in the nodes' ALLOWED_HOSTS)
#   WRITE_PORT      listener forwarding to the group's current leader
#   READ_PORT       listener forwarding to this region's nodes
#   STATS_PORT      HTTP stats page (CSV at /;csv)
#   WRITE_SERVERS   space-separated host:pgport:restport of EVERY node of the
#                   group (the declared primary region first): the write
#                   listener sends to the one whose Patroni says /primary
#   READ_LOCAL      space-separated host:pgport:restport of this region's nodes
#   READ_BACKUPS    space-separated host:pgport:restport of other regions'
#                   nodes, nearest first; used only when no READ_LOCAL node
#                   passes its check, and then only the first healthy one (no
#                   "option allbackups")
#   READ_LAG_BYTES  a read server passes only while Patroni's
#                   /read-only?lag=READ_LAG_BYTES answers 200 (the leader, or
#                   a running replica whose replay is within that many bytes)
#   SERVER_MAXCONN  connections each listener opens to one node at most;
#                   more clients wait in the server's queue
#   QUEUE_TIMEOUT_S how long (s) a queued client waits for a slot before it
#                   gets an error
#   TLS_CA          the group's CA certificate (PEM, base64-encoded), written
#                   to PROXY_DIR/tls/ca.crt: the health checks speak HTTPS to
#                   Patroni and verify each node's certificate against it
# delete needs only RUN_AS and PROXY_DIR; check only PROXY_DIR.
#
# create/update (idempotent): render haproxy.cfg; if it differs from the
# current one, validate it with "haproxy -c" first and only then install
# it.  Start haproxy (-D -p haproxy.pid) as RUN_AS if it is not running;
# if it runs and the configuration changed, reload it seamlessly (new
# process takes the listening sockets over the stats socket with -x, old
# one finishes its sessions, -sf; hard-stop-after bounds that to 30 s).
# Nothing happens when nothing changed.  Every start and reload begins from
# haproxy.state (server_state): write servers start DOWN until their first
# passing check, and on a reload each server keeps the state the old process
# had, so neither a cold start nor a reload sends a write to a replica during
# the first check interval.  render prints the configuration
# the environment gives and changes nothing.
#
# Health checks ask each node's Patroni REST API (HTTPS GET on restport,
# the node's certificate verified against the group's CA; writes every 1 s,
# reads every 2 s: each check is a TLS handshake with a Python server, and
# every region's proxy checks every node of the group), never PostgreSQL
# itself: that a node accepts logins says
# nothing about whether it is the primary, and writes reaching a read-only
# node fail with SQLSTATE 25006, which applications do not retry.
#   write: GET /primary must answer 200 (fall 1, rise 1); a node marked down
#          has its sessions cut, so clients see connection errors (which
#          they retry) instead of read-only errors.
#   read:  GET /read-only?lag=READ_LAG_BYTES must answer 200 (fall 2,
#          rise 1); the leader always passes, so a region whose replica lags
#          reads from the nearest healthy region until it catches up.
# Both listeners also watch real traffic (observe layer4): a refused
# connection marks the server down at once and the retry is redispatched.
#
# Server names are <kind><i>_<host>:<pgport> (node, local, backup); dbfleet
# status reads the node address from the part after the first "_".
#
# Output: one summary line on stdout; progress/errors on stderr.
set -euo pipefail

# shellcheck source=SCRIPTDIR/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

init_vars() {
    CFG=$PROXY_DIR/haproxy.cfg
    PIDFILE=$PROXY_DIR/haproxy.pid
    SOCK=$PROXY_DIR/haproxy.sock
    STATE=$PROXY_DIR/haproxy.state
    TLS_DIR=$PROXY_DIR/tls
    # Every check is HTTPS; a node whose certificate the group's CA did not
    # sign fails its check (PostgreSQL traffic itself passes through as TCP).
    CHECK_TLS="check-ssl verify required ca-file $TLS_DIR/ca.crt"
}

# haproxy_pid : the pid in the pid file if it is a running haproxy.
haproxy_pid() {
    local pid=
    [[ -f "$PIDFILE" ]] && read -r pid <"$PIDFILE"
    if proc_exe_is "$pid" "$HAPROXY_BIN"; then printf '%s' "$pid"; fi
}

# our_haproxies : pids of every haproxy running our configuration file
# (the current one and any old ones still draining after a reload).
our_haproxies() {
    local p args
    for p in /proc/[0-9]*; do
        proc_exe_is "${p#/proc/}" "$HAPROXY_BIN" || continue
        args=$(tr '\0' ' ' <"$p/cmdline" 2>/dev/null) || continue
        [[ " $args " == *" -f $CFG "* ]] && printf '%s\n' "${p#/proc/}"
    done
    return 0
}

# check_servers NAME LIST : LIST is space-separated ipv4:pgport:restport.
check_servers() {
    local name=$1 item rest
    for item in $2; do
        [[ "$item" =~ ^[^:]+:[^:]+:[^:]+$ ]] || die "$name: '$item' is not host:pgport:restport"
        rest=${item#*:}
        check_ipv4 "$name" "${item%%:*}"
        check_port "$name" "${rest%%:*}"
        check_port "$name" "${rest#*:}"
    done
}

# check_count NAME VALUE : VALUE is a whole number >= 1.
check_count() {
    [[ "$2" =~ ^[1-9][0-9]{0,9}$ ]] || die "$1: '$2' is not a whole number >= 1"
}

# server_lines PREFIX EXTRA LIST : one "server" line per host:pgport:restport,
# named PREFIX<i>_host:pgport and checked on restport; EXTRA ends the line.
server_lines() {
    local prefix=$1 extra=$2 item host pgport i=0
    for item in $3; do
        i=$((i + 1))
        host=${item%%:*}
        pgport=${item#*:}
        pgport=${pgport%%:*}
        printf '    server %s%d_%s:%s %s:%s check port %s%s\n' \
            "$prefix" "$i" "$host" "$pgport" "$host" "$pgport" "${item##*:}" "$extra"
    done
}

# render_cfg : the configuration for the current environment.
render_cfg() {
    cat <<EOF
# Managed by dbfleet (haproxy.sh); rewritten on every run - do not edit.
global
    maxconn 1024
    hard-stop-after 30s
    stats socket $SOCK mode 600 level admin expose-fd listeners
    stats timeout 30s
    server-state-file $STATE

defaults
    mode tcp
    timeout connect 3s
    timeout client 1h
    timeout server 1h
    timeout check 2s
    # A client beyond a server's maxconn waits this long for a slot (then
    # gets an error) instead of PostgreSQL's "remaining connection slots
    # are reserved".
    timeout queue ${QUEUE_TIMEOUT_S}s
    # Servers start in the state server_state (haproxy.sh) wrote.
    load-server-state-from-file global

# Writes: every node of the group; only the one whose Patroni answers
# /primary with 200 AND whose PostgreSQL already runs as the primary is up,
# so writes follow a failover with no "up" and never reach a read-only
# node (Patroni answers 200 as soon as it holds the leader lock, while
# PostgreSQL may still be finishing its promotion: the role in the answer
# says which).  Sessions are cut when it is marked down.
listen write
    bind $PROXY_HOST:$WRITE_PORT
    source $PROXY_HOST
    retries 2
    option redispatch 1
    option httpchk
    http-check send meth GET uri /primary
    http-check expect status 200
    http-check expect rstring "\"role\": \"(master|primary)\""
    default-server inter 1s fall 1 rise 1 on-marked-down shutdown-sessions observe layer4 error-limit 1 on-error mark-down maxconn $SERVER_MAXCONN $CHECK_TLS
EOF
    server_lines node "" "$WRITE_SERVERS"
    cat <<EOF

# Reads: this region's nodes while Patroni says they are within the lag
# budget; when none is, the first healthy backup in the order below
# (nearest region first; no "option allbackups").  A refused connection
# marks a server down at once (observe layer4) and the retry is
# redispatched, so a dead local node costs a client one retry instead of
# the 2-4 s the periodic check needs; a replica past the lag budget leaves
# within 4 s.
listen read
    bind $PROXY_HOST:$READ_PORT
    source $PROXY_HOST
    balance leastconn
    retries 2
    option redispatch 1
    option httpchk
    http-check send meth GET uri /read-only?lag=$READ_LAG_BYTES
    http-check expect status 200
    default-server inter 2s fall 2 rise 1 observe layer4 error-limit 1 on-error mark-down maxconn $SERVER_MAXCONN $CHECK_TLS
EOF
    server_lines local "" "${READ_LOCAL:-}"
    server_lines backup " backup" "${READ_BACKUPS:-}"
    cat <<EOF

# Stats page (CSV at /;csv), on the region address only.
listen stats
    mode http
    bind $PROXY_HOST:$STATS_PORT
    timeout client 30s
    timeout http-request 10s
    stats enable
    stats uri /
    stats refresh 5s
EOF
}

# check_env : every input of create/update/render is present and well formed.
check_env() {
    require_env PROXY_DIR PROXY_HOST READ_PORT WRITE_PORT STATS_PORT WRITE_SERVERS \
        READ_LAG_BYTES SERVER_MAXCONN QUEUE_TIMEOUT_S TLS_CA
    ca_pem >/dev/null
    check_abs_path PROXY_DIR
    check_bind PROXY_HOST "$PROXY_HOST"
    check_port READ_PORT "$READ_PORT"
    check_port WRITE_PORT "$WRITE_PORT"
    check_port STATS_PORT "$STATS_PORT"
    [[ "$READ_PORT" != "$WRITE_PORT" && "$READ_PORT" != "$STATS_PORT" && "$WRITE_PORT" != "$STATS_PORT" ]] ||
        die "READ_PORT, WRITE_PORT and STATS_PORT must differ"
    check_servers WRITE_SERVERS "$WRITE_SERVERS"
    check_servers READ_LOCAL "${READ_LOCAL:-}"
    check_servers READ_BACKUPS "${READ_BACKUPS:-}"
    [[ -n "${READ_LOCAL:-}${READ_BACKUPS:-}" ]] || die "READ_LOCAL and READ_BACKUPS are both empty"
    check_count READ_LAG_BYTES "$READ_LAG_BYTES"
    check_count SERVER_MAXCONN "$SERVER_MAXCONN"
    check_count QUEUE_TIMEOUT_S "$QUEUE_TIMEOUT_S"
}

# server_state OLD_PID : the server-state file (stdout) a new haproxy starts
# from.  HAProxy starts every server UP until its first check, which runs up
# to "inter" later: for that long a new process would send writes to any
# node.  So every write server starts DOWN (comes up at its first passing
# check) unless the running process OLD_PID knows better: on a reload each
# server the old process has - same name, address, port and check port -
# keeps the state it had (the leader stays up, a lagging replica stays out).
# Read servers the old process lacks start UP (a read on a node that is down
# is retried on another).  python3 is there: Patroni needs it on every node.
server_state() {
    python3 - "$SOCK" "${1:-}" <<'PY'
import os
import socket
import sys

sock, old_pid = sys.argv[1], sys.argv[2]


def servers(listener, prefix, items):
    out = {}
    for i, item in enumerate(items.split(), 1):
        host, pg, rest = item.split(":")
        out[(listener, f"{prefix}{i}_{host}:{pg}")] = (host, pg, rest)
    return out


want = servers("write", "node", os.environ["WRITE_SERVERS"])
want.update(servers("read", "local", os.environ.get("READ_LOCAL", "")))
want.update(servers("read", "backup", os.environ.get("READ_BACKUPS", "")))
dump = b""
if old_pid:
    try:
        with socket.socket(socket.AF_UNIX) as s:
            s.settimeout(5)
            s.connect(sock)
            s.sendall(b"show servers state\n")
            while chunk := s.recv(65536):
                dump += chunk
    except OSError as exc:
        print(f"haproxy.sh: warning: no server state from {sock}: {exc}", file=sys.stderr)
kept = {}
for line in dump.decode(errors="replace").splitlines():
    f = line.split()
    # be_id be_name srv_id srv_name srv_addr ... srv_port(18) ... srv_check_port(21)
    if len(f) >= 25 and not line.startswith("#"):
        key = (f[1], f[3])
        if want.get(key) == (f[4], f[18], f[21]):
            kept[key] = line
print("1")
print(
    "# be_id be_name srv_id srv_name srv_addr srv_op_state srv_admin_state srv_uweight "
    "srv_iweight srv_time_since_last_change srv_check_status srv_check_result "
    "srv_check_health srv_check_state srv_agent_state bk_f_forced_id srv_f_forced_id "
    "srv_fqdn srv_port srvrecord srv_use_ssl srv_check_port srv_check_addr "
    "srv_agent_addr srv_agent_port"
)
for (listener, name), (host, pg, rest) in want.items():
    if (listener, name) in kept:
        print(kept[(listener, name)])
    elif listener == "write":
        # As haproxy itself dumps a server whose check failed: operational state
        # 0 (stopped), check health 0, check state 6 (configured, enabled; 0 would
        # crash haproxy 2.6 at the first check); ids 0: found by name.
        print(f"0 write 0 {name} {host} 0 0 1 1 0 8 2 0 6 0 0 0 - {pg} - 0 {rest} - - {rest}")
PY
}

# listening HOST PORT... : every port accepts TCP connections.
listening() {
    local host=$1 port
    shift
    for port in "$@"; do
        (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null || return 1
    done
}

# new_pid_running OLD : the pid file names a running haproxy other than OLD.
new_pid_running() {
    local pid
    pid=$(haproxy_pid)
    [[ -n "$pid" && "$pid" != "$1" ]]
}

do_create() {
    check_run_as
    check_fleet
    check_env
    [[ -x "$HAPROXY_BIN" ]] || die "haproxy not found at $HAPROXY_BIN"

    init_vars
    claim_dir "$PROXY_DIR" use
    make_dirs "$PROXY_DIR"
    mark_dir "$PROXY_DIR" "haproxy"
    lock_dir "$PROXY_DIR"

    local done_=() changed=0 content state current=
    # A new CA reaches haproxy only by a reload (it reads ca-file at start).
    if write_ca "$TLS_DIR"; then
        changed=1
        done_+=("CA written")
    fi
    content=$(render_cfg)
    [[ -f "$CFG" ]] && current=$(<"$CFG")
    if [[ "$content" != "$current" ]]; then
        printf '%s\n' "$content" | put_file "$CFG.new" || true
        if ! run_as "$HAPROXY_BIN" -c -q -f "$CFG.new" >&2; then
            die "generated $CFG.new is invalid (haproxy -c); the running configuration was kept"
        fi
        run_as mv -f -- "$CFG.new" "$CFG"
        changed=1
        done_+=("config written")
    fi

    local pid
    pid=$(haproxy_pid)
    if [[ -z "$pid" ]]; then
        [[ -e "$PIDFILE" ]] && rm -f -- "$PIDFILE"
        state=$(server_state "") || die "cannot write the server state for haproxy (python3)"
        printf '%s\n' "$state" | put_file "$STATE" || true
        run_as "$HAPROXY_BIN" -f "$CFG" -D -p "$PIDFILE" >&2 ||
            die "haproxy failed to start with $CFG"
        wait_for 10 "haproxy to write $PIDFILE" new_pid_running "" ||
            die "haproxy did not start (no running pid in $PIDFILE)"
        done_+=(started)
    elif ((changed)); then
        state=$(server_state "$pid") || die "cannot write the server state for haproxy (python3)"
        printf '%s\n' "$state" | put_file "$STATE" || true
        run_as "$HAPROXY_BIN" -f "$CFG" -D -p "$PIDFILE" -x "$SOCK" -sf "$pid" >&2 ||
            die "haproxy reload failed; the old process $pid keeps running"
        wait_for 10 "the reloaded haproxy to write $PIDFILE" new_pid_running "$pid" ||
            die "haproxy reload did not produce a new process"
        done_+=(reloaded)
    fi
    wait_for 10 "haproxy to listen on $PROXY_HOST:$WRITE_PORT,$READ_PORT,$STATS_PORT" \
        listening "$PROXY_HOST" "$WRITE_PORT" "$READ_PORT" "$STATS_PORT" ||
        die "haproxy is not listening on $PROXY_HOST"

    local what="no changes"
    if ((${#done_[@]} > 0)); then
        what=$(printf '%s, ' "${done_[@]}")
        what=${what%, }
    fi
    printf '%s: proxy %s write:%s read:%s stats:%s (pid %s) ready in %s: %s\n' \
        "$SCRIPT_NAME" "$PROXY_HOST" "$WRITE_PORT" "$READ_PORT" "$STATS_PORT" \
        "$(haproxy_pid)" "$(elapsed)" "$what"
}

# gone PID... : none of the pids is a running haproxy any more.
gone() {
    local p
    for p in "$@"; do proc_exe_is "$p" "$HAPROXY_BIN" && return 1; done
    return 0
}

do_delete() {
    check_run_as
    check_fleet
    require_env PROXY_DIR
    check_abs_path PROXY_DIR
    init_vars
    if [[ -d "$PROXY_DIR" ]]; then
        claim_dir "$PROXY_DIR" delete
        lock_dir "$PROXY_DIR"
        # The pid file's process plus any older process of ours still
        # draining after a reload - identified by exe and our -f argument.
        local pids=() p
        p=$(haproxy_pid)
        [[ -n "$p" ]] && pids+=("$p")
        while read -r p; do
            [[ -n "$p" && " ${pids[*]} " != *" $p "* ]] && pids+=("$p")
        done < <(our_haproxies)
        if ((${#pids[@]} > 0)); then
            kill -TERM "${pids[@]}" 2>/dev/null || true
            if ! wait_for 10 "haproxy ${pids[*]} to exit" gone "${pids[@]}"; then
                warn "haproxy ${pids[*]} ignored SIGTERM; sending SIGKILL"
                kill -KILL "${pids[@]}" 2>/dev/null || true
                wait_for 5 "haproxy ${pids[*]} to die" gone "${pids[@]}" ||
                    die "haproxy ${pids[*]} is still running"
            fi
        fi
        safe_remove_dir "$PROXY_DIR"
    fi
    printf '%s: deleted %s in %s\n' "$SCRIPT_NAME" "$PROXY_DIR" "$(elapsed)"
}

# do_check : read-only drift probe run by every `pulumi preview`/`up`. Exit 0
# when the host matches what was declared, DRIFT_EXIT_CODE (lib.sh) when it
# does not - the engine then plans an update, and `create|update` repairs it.
# Changes nothing.
do_check() {
    require_env PROXY_DIR
    init_vars
    [[ -f "$CFG" ]] || exit "$DRIFT_EXIT_CODE"
    [[ -n "$(haproxy_pid)" ]] || exit "$DRIFT_EXIT_CODE"
    exit 0
}

case "${1:-}" in
create | update) do_create ;;
delete) do_delete ;;
check) do_check ;;
render)
    check_env
    init_vars
    render_cfg
    ;;
*) die "usage: $SCRIPT_NAME create|update|delete|check|render (configuration in the environment)" ;;
esac
