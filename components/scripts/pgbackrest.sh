#!/usr/bin/env bash
#
# pgbackrest.sh create|update|delete|check - a region group's backups with
# pgBackRest (Debian's 2.45, /usr/bin/pgbackrest): its configuration, its
# encrypted repository and stanza, and its backup scheduler, all under
# BACKUP_DIR (the group's data root: its backups never leave the group).
#
# Environment (create/update):
#   RUN_AS                 the group's OS user (runs PostgreSQL, hence archive-push)
#   BACKUP_DIR             absolute directory (0700, dbfleet marker):
#                            pgbackrest.conf   configuration (0600: the passphrase)
#                            pgpass            the superuser's password for
#                                              pgBackRest's connections (0600)
#                            repo/             the repository (repo1, aes-256-cbc)
#                            spool/            archive-async's queue
#                            log/ run/         pgBackRest's logs, locks; scheduler.log
#                            scheduler.sh      the scheduler (pgbackrest_scheduler)
#                            scheduler.settings its schedule, re-read every minute
#   DATA_ROOT              the group's data root (BACKUP_DIR must be inside it)
#   STANZA                 the stanza (`<fleet>-<group>`)
#   NODES                  space-separated path:port:socketdir of every node
#                          (pgBackRest finds the leader among them)
#   SCHEDULE_HOURS, FULL_EVERY_DAYS, FULL_KEEP   schedule and retention
#   PG_BACKUP_PASSPHRASE   the repository's cipher passphrase (Vault)
#   PG_SUPERUSER_PASSWORD  password of "postgres" (Vault)
#   FLEET_NAME             as for every script (lib.sh)
# delete needs RUN_AS and BACKUP_DIR.
#
# The ssh target (BACKUP_MODE repo | node; default local, as above): one run
# per host of the group, BACKUP_DIR that host's own directory
# (<data root>/pgbackrest/<region>-<k>).  Every host runs pgBackRest's TLS
# server (`pgbackrest server` as RUN_AS, started by BACKUP_DIR/server.sh =
# pgbackrest_server; its absence is drift) on TLS_ADDRESS:TLS_PORT with its
# certificate (TLS_CERT, TLS_KEY secret, TLS_CA: base64 PEM, lib.sh
# write_tls, into BACKUP_DIR/tls), admitting only the certificate names in
# TLS_CLIENTS, and for STANZA only.
#   repo: the repository is here, and the passphrase (nowhere else); NODES is
#         this host's node, REMOTE_NODES "address:path:port:socketdir" the
#         other hosts' nodes, reached through their TLS servers; stanza and
#         check as on the local target; the scheduler is no process here but
#         a check (`scheduler.sh DIR once`) that cron runs, and create once
#         in the background.
# What survives a reboot is cron's (Debian package cron): one root-owned 0644
# file per group and host, /etc/cron.d/dbfleet-<STANZA>-<region>-<k> (no
# secret: the programs it names read the 0600 configuration), that starts
# server.sh @reboot and every minute (it starts at most one server), and on
# the repository host runs the scheduler's check every 5 minutes, all as
# RUN_AS.  Its absence or another content is drift; delete removes it first.
# `render-cron` prints it (nothing changed, the host not asked).
#   node: REPO_HOST is the repository host, whose TLS server archive-push
#         (async) reaches.  No passphrase here: the repository host hands
#         the archive's key over the TLS connection for each push.
#
# create/update (idempotent): writes the files (only when they differ), creates
# the stanza when `pgbackrest info` does not find it valid and then runs
# `pgbackrest check` (a WAL switch on the leader that must reach the
# repository through archive_command), and starts the scheduler when it is
# not running (restarts it when its program changed); on the ssh target it
# starts the TLS server unless it runs, writes the cron file, and on the
# repository host starts one scheduler check in the background.
# check: drift when the configuration is missing, the scheduler (local) or
# the TLS server (ssh) is not running, the cron file (ssh) is missing or
# differs, or the stanza is not valid.
# delete: removes the cron file (ssh), stops the scheduler, the TLS server and
# pgBackRest, and removes BACKUP_DIR (only with this fleet's marker) - the
# repository goes with the group, as its data directories do.
#
# Output: one summary line on stdout; progress/errors on stderr.  The
# passphrase never leaves the 0600 configuration: not argv, not a log.
set -euo pipefail

# shellcheck source=SCRIPTDIR/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

# The scheduler's and the TLS server's starter's programs; HostScript ships
# their text in place of these lines.
SCHEDULER_SH=$(<"$(dirname -- "${BASH_SOURCE[0]}")/pgbackrest_scheduler")
SERVER_SH=$(<"$(dirname -- "${BASH_SOURCE[0]}")/pgbackrest_server")

PGBACKREST_BIN=${PGBACKREST_BIN:-/usr/bin/pgbackrest}
# Where the ssh target's cron files go (Debian's cron reads every file there
# whose name is made of [A-Za-z0-9_-] only).
CRON_DIR=/etc/cron.d
# How often cron runs the scheduler's check on the repository host (minutes).
CRON_CHECK_MINUTES=5
PYTHON=/usr/bin/python3
# `pgbackrest info` status codes of a usable stanza: 0 ok, 2 no valid backups yet.
INFO_CODE_PY='
import json, sys
try:
    print(json.load(sys.stdin)[0]["status"]["code"])
except (ValueError, IndexError, KeyError, TypeError):
    print(99)
'

# The secrets of this script (lib.sh protects the PG_*_PASSWORD ones).
secret_guard() {
    if [[ -n "${PG_BACKUP_PASSPHRASE+x}" ]]; then
        export -n PG_BACKUP_PASSPHRASE
        [[ "$PG_BACKUP_PASSPHRASE" != *[![:print:]]* && "$PG_BACKUP_PASSPHRASE" != *[[:space:]]* ]] ||
            die "PG_BACKUP_PASSPHRASE must be printable ASCII without spaces"
    fi
    protect_secrets
}

MODE=${BACKUP_MODE:-local}

init_vars() {
    TLS_DIR=$BACKUP_DIR/tls
    CONF=$BACKUP_DIR/pgbackrest.conf
    PGPASS=$BACKUP_DIR/pgpass
    REPO=$BACKUP_DIR/repo
    SPOOL=$BACKUP_DIR/spool
    LOGS=$BACKUP_DIR/log
    RUNS=$BACKUP_DIR/run
    SCHEDULER=$BACKUP_DIR/scheduler.sh
    SETTINGS=$BACKUP_DIR/scheduler.settings
    SCHED_PID=$RUNS/scheduler.pid
    SERVER=$BACKUP_DIR/server.sh
    SERVER_PID=$RUNS/server.pid
    # The ssh target's cron file: the stanza names fleet and group, the
    # directory the host (the lab's hosts share one /etc/cron.d).
    CRON_FILE=
    if [[ "$MODE" != local && -n "${STANZA:-}" ]]; then
        CRON_FILE=$CRON_DIR/dbfleet-$STANZA-${BACKUP_DIR##*/}
    fi
}

check_inputs() {
    check_run_as
    check_env
    [[ -x "$PGBACKREST_BIN" ]] || die "pgBackRest not found at $PGBACKREST_BIN (Debian package pgbackrest)"
    [[ -x "$PYTHON" ]] || PYTHON=$(command -v python3) || die "python3 is required"
}

# check_env : the environment alone (the host not asked).
check_env() {
    check_fleet
    require_env RUN_AS
    # It is a field of a cron file root's cron reads: a plain user name only.
    [[ "$RUN_AS" =~ ^[a-z_][a-z0-9_-]{0,31}$ ]] || die "RUN_AS '$RUN_AS' is not a user name"
    [[ "$RUN_AS" != root ]] || die "RUN_AS must not be root"
    check_abs_path PGBACKREST_BIN
    require_env BACKUP_DIR DATA_ROOT STANZA NODES SCHEDULE_HOURS FULL_EVERY_DAYS FULL_KEEP
    check_abs_path BACKUP_DIR
    check_abs_path DATA_ROOT
    # Residency: the repository is inside the group's own data root.
    [[ "$BACKUP_DIR" == "$DATA_ROOT"/* ]] || die "BACKUP_DIR $BACKUP_DIR is not inside DATA_ROOT $DATA_ROOT"
    [[ "$STANZA" =~ ^[a-z0-9][a-z0-9-]{0,127}$ ]] || die "STANZA '$STANZA' is not a stanza name"
    local v
    for v in SCHEDULE_HOURS FULL_EVERY_DAYS FULL_KEEP; do
        [[ "${!v}" =~ ^[1-9][0-9]{0,3}$ ]] || die "$v '${!v}' is not a positive number"
    done
    local n path port sock
    for n in $NODES; do
        [[ "$n" =~ ^(/[A-Za-z0-9._/-]+):([0-9]+):(/[A-Za-z0-9._/-]+)$ ]] ||
            die "NODES: '$n' is not path:port:socketdir"
        path=${BASH_REMATCH[1]} port=${BASH_REMATCH[2]} sock=${BASH_REMATCH[3]}
        check_port NODES "$port"
        [[ "$path" == "$DATA_ROOT"/* && "$sock" == "$DATA_ROOT"/* ]] ||
            die "NODES: $path is not a node of this group's data root $DATA_ROOT"
    done
    [[ "$MODE" =~ ^(local|repo|node)$ ]] || die "BACKUP_MODE '$MODE' is not local, repo or node"
    if [[ "$MODE" != local ]]; then
        require_env TLS_ADDRESS TLS_PORT REPO_HOST
        check_ipv4 TLS_ADDRESS "$TLS_ADDRESS"
        check_ipv4 REPO_HOST "$REPO_HOST"
        check_port TLS_PORT "$TLS_PORT"
        local a
        for a in ${TLS_CLIENTS:-}; do check_ipv4 TLS_CLIENTS "$a"; done
        [[ "$MODE" == repo || -z "${REMOTE_NODES:-}" ]] || die "REMOTE_NODES is for the repository host"
        [[ "$MODE" == node || "$REPO_HOST" == "$TLS_ADDRESS" ]] ||
            die "REPO_HOST $REPO_HOST is not this host ($TLS_ADDRESS) in mode repo"
        [[ "$MODE" == repo || "${REPO_NODE:-}" =~ ^[a-z]{2,8}-[0-9]$ ]] ||
            die "REPO_NODE '${REPO_NODE:-}' is not the repository host's node (<region>-<k>)"
        local addr rpath rport
        for n in ${REMOTE_NODES:-}; do
            [[ "$n" =~ ^([0-9.]+):(/[A-Za-z0-9._/-]+):([0-9]+):(/[A-Za-z0-9._/-]+)$ ]] ||
                die "REMOTE_NODES: '$n' is not address:path:port:socketdir"
            addr=${BASH_REMATCH[1]} rpath=${BASH_REMATCH[2]} rport=${BASH_REMATCH[3]}
            check_ipv4 REMOTE_NODES "$addr"
            check_port REMOTE_NODES "$rport"
            [[ "$rpath" == "$DATA_ROOT"/* ]] ||
                die "REMOTE_NODES: $rpath is not a node of this group's data root $DATA_ROOT"
        done
    fi
    init_vars
    [[ -z "$CRON_FILE" || "${CRON_FILE##*/}" =~ ^[A-Za-z0-9_-]+$ ]] ||
        die "cron file name ${CRON_FILE##*/} has characters cron ignores such files for"
}

render_config() {
    local i=0 n
    printf '# Managed by dbfleet (pgbackrest.sh); rewritten on every run - do not edit.\n[global]\n'
    if [[ "$MODE" == node ]]; then
        # The repository is on REPO_HOST, reached through its TLS server; the
        # remote end reads the repository host's own configuration.
        cat <<EOF
repo1-host=$REPO_HOST
repo1-host-type=tls
repo1-host-port=$TLS_PORT
repo1-host-config=$DATA_ROOT/pgbackrest/$REPO_NODE/pgbackrest.conf
repo1-host-cert-file=$TLS_DIR/server.crt
repo1-host-key-file=$TLS_DIR/server.key
repo1-host-ca-file=$TLS_DIR/ca.crt
EOF
    else
        cat <<EOF
repo1-path=$REPO
repo1-cipher-type=aes-256-cbc
repo1-cipher-pass=$PG_BACKUP_PASSPHRASE
repo1-retention-full-type=count
repo1-retention-full=$FULL_KEEP
start-fast=y
EOF
    fi
    cat <<EOF
compress-type=lz4
process-max=2
archive-async=y
archive-timeout=60
spool-path=$SPOOL
log-path=$LOGS
lock-path=$RUNS
log-level-console=warn
log-level-file=info
EOF
    if [[ "$MODE" != local ]]; then
        cat <<EOF
tls-server-address=$TLS_ADDRESS
tls-server-port=$TLS_PORT
tls-server-cert-file=$TLS_DIR/server.crt
tls-server-key-file=$TLS_DIR/server.key
tls-server-ca-file=$TLS_DIR/ca.crt
EOF
        for n in ${TLS_CLIENTS:-}; do printf 'tls-server-auth=%s=%s\n' "$n" "$STANZA"; done
    fi
    printf '\n[%s]\n' "$STANZA"
    for n in $NODES; do
        i=$((i + 1))
        IFS=: read -r path port sock <<<"$n"
        printf 'pg%d-path=%s\npg%d-port=%s\npg%d-socket-path=%s\npg%d-user=postgres\n' \
            "$i" "$path" "$i" "$port" "$i" "$sock" "$i"
    done
    for n in ${REMOTE_NODES:-}; do
        i=$((i + 1))
        IFS=: read -r addr path port sock <<<"$n"
        printf 'pg%d-host=%s\npg%d-host-type=tls\npg%d-host-port=%s\npg%d-host-config=%s\n' \
            "$i" "$addr" "$i" "$i" "$TLS_PORT" "$i" "$(peer_conf "$path")"
        printf 'pg%d-host-cert-file=%s\npg%d-host-key-file=%s\npg%d-host-ca-file=%s\n' \
            "$i" "$TLS_DIR/server.crt" "$i" "$TLS_DIR/server.key" "$i" "$TLS_DIR/ca.crt"
        printf 'pg%d-path=%s\npg%d-port=%s\npg%d-socket-path=%s\npg%d-user=postgres\n' \
            "$i" "$path" "$i" "$port" "$i" "$sock" "$i"
    done
}

# peer_conf NODE_PGDATA : the configuration of the host that runs that node
# (ssh target: <data root>/pgbackrest/<region>-<k>/pgbackrest.conf).
peer_conf() {
    local d=${1%/pgdata}
    printf '%s/pgbackrest/%s/pgbackrest.conf' "$DATA_ROOT" "${d##*/}"
}

# pgbr ARGS... : pgBackRest as RUN_AS with this group's configuration; the
# superuser's password reaches libpq through the 0600 pgpass, never argv.
pgbr() {
    run_as env PGPASSFILE="$PGPASS" "$PGBACKREST_BIN" --config="$CONF" --stanza="$STANZA" "$@"
}

info_code() {
    pgbr --output=json info 2>/dev/null | "$PYTHON" -I -c "$INFO_CODE_PY"
}

# scheduler_pid : the pid in scheduler.pid if it runs this group's scheduler.
scheduler_pid() {
    local pid='' args
    [[ -f "$SCHED_PID" ]] && read -r pid <"$SCHED_PID"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 0
    args=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 0
    [[ " $args" == *" $SCHEDULER $BACKUP_DIR "* ]] && printf '%s' "$pid"
    return 0
}

gone() { [[ ! -e "/proc/$1" ]]; }

# stanza_create : one try; its output in STANZA_OUT.
stanza_create() { STANZA_OUT=$(pgbr stanza-create 2>&1); }

# our_pgbackrest : pids of pgBackRest processes that use this group's
# configuration (archive-push's async workers outlive the PostgreSQL that
# started them by a moment).
our_pgbackrest() {
    local p args
    for p in /proc/[0-9]*; do
        proc_exe_is "${p#/proc/}" "$PGBACKREST_BIN" || continue
        args=$(tr '\0' ' ' <"$p/cmdline" 2>/dev/null) || continue
        [[ " $args" == *" --config=$CONF "* ]] && printf '%s\n' "${p#/proc/}"
    done
    return 0
}

no_pgbackrest() { [[ -z "$(our_pgbackrest)" ]]; }

# stop_pgbackrest : let this group's pgBackRest processes finish (30 s), then
# stop them, so that nothing of the group's user outlives its repository.
stop_pgbackrest() {
    wait_for 30 "pgBackRest processes of $STANZA to finish" no_pgbackrest && return 0
    local pid
    for pid in $(our_pgbackrest); do kill -TERM "$pid" 2>/dev/null || true; done
    wait_for 10 "pgBackRest processes of $STANZA to stop" no_pgbackrest && return 0
    for pid in $(our_pgbackrest); do kill -KILL "$pid" 2>/dev/null || true; done
}

stop_scheduler() {
    local pid pgid
    pid=$(scheduler_pid)
    [[ -n "$pid" ]] || return 0
    # The scheduler runs in a session of its own (start_scheduler): its process
    # group holds it, its poll's sleep and a backup it runs, which must all end —
    # a process left behind keeps the group's user from being deleted.
    pgid=$(ps -o pgid= -p "$pid" 2>/dev/null | tr -d ' ')
    if [[ "$pgid" =~ ^[0-9]+$ && "$pgid" != "$(ps -o pgid= -p $$ | tr -d ' ')" ]]; then
        kill -TERM -- "-$pgid" 2>/dev/null || true
        wait_for 15 "the scheduler (pid $pid) to stop" gone "$pid" || kill -KILL -- "-$pgid" 2>/dev/null || true
        wait_for 15 "the scheduler's processes to end" group_gone "$pgid" || warn "processes of group $pgid remain"
    else
        kill -TERM "$pid" 2>/dev/null || true
        wait_for 15 "the scheduler (pid $pid) to stop" gone "$pid" || kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f -- "$SCHED_PID"
}

# group_gone PGID : no process is left in process group PGID.
group_gone() { ! pgrep -g "$1" >/dev/null 2>&1; }

# start_scheduler : detached (its own session), as RUN_AS, with an empty
# environment: it inherits no secret.
start_scheduler() {
    local pid
    # shellcheck disable=SC2016  # expanded by the inner shell
    pid=$(run_as setsid bash -c 'exec env -i PATH=/usr/bin:/bin bash "$0" "$1" >>"$2" 2>&1 </dev/null & printf "%s" "$!"' \
        "$SCHEDULER" "$BACKUP_DIR" "$LOGS/scheduler.log") || die "could not start the backup scheduler"
    printf '%s\n' "$pid" | put_file "$SCHED_PID" || true
}

# server_pid : the pid in server.pid if it runs this host's TLS server.
server_pid() {
    local pid='' args
    [[ -f "$SERVER_PID" ]] && read -r pid <"$SERVER_PID"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 0
    proc_exe_is "$pid" "$PGBACKREST_BIN" || return 0
    args=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 0
    [[ " $args" == *" --config=$CONF server "* ]] && printf '%s' "$pid"
    return 0
}

# needs_server : the ssh target, with another host to talk to (a group of one host
# has nothing to serve: its repository and its node are on the same host).
needs_server() { [[ "$MODE" != local && -n "${TLS_CLIENTS//[[:space:]]/}" ]]; }

server_answers() { run_as "$PGBACKREST_BIN" --config="$CONF" server-ping >/dev/null 2>&1; }

# our_servers : pids of this host's TLS server and its forks (each holds the
# server's lock, server.sh).
our_servers() {
    local p
    for p in $(our_pgbackrest); do
        [[ " $(tr '\0' ' ' <"/proc/$p/cmdline" 2>/dev/null) " == *" --config=$CONF server "* ]] && printf '%s\n' "$p"
    done
    return 0
}

no_server() { [[ -z "$(our_servers)" ]]; }

stop_server() {
    local pid
    [[ -n "$(our_servers)" ]] || return 0
    for pid in $(our_servers); do kill -TERM "$pid" 2>/dev/null || true; done
    wait_for 15 "the pgBackRest TLS server of $STANZA to stop" no_server && return 0
    for pid in $(our_servers); do kill -KILL "$pid" 2>/dev/null || true; done
    wait_for 5 "the pgBackRest TLS server of $STANZA to end" no_server || true
}

# start_server : pgBackRest's TLS server through server.sh (pgbackrest_server:
# detached, as RUN_AS, at most one) - the same start as cron's.
start_server() {
    run_as bash "$SERVER" "$BACKUP_DIR" "$PGBACKREST_BIN" || die "could not start pgBackRest's TLS server"
    wait_for 30 "pgBackRest's TLS server on $TLS_ADDRESS:$TLS_PORT" server_answers ||
        die "pgBackRest's TLS server did not answer on $TLS_ADDRESS:$TLS_PORT: $(tail -n 3 "$LOGS/server.log" 2>/dev/null | tr '\n' ' ')"
}

# render_cron : the ssh target's cron file for this host.  Every command is a
# program of BACKUP_DIR run by bash as RUN_AS, so cron's job needs nothing of
# its environment but PATH; HOME=/ because the group's user has no home (cron
# would change into it).  No secret: server.sh and scheduler.sh read the 0600
# files.
render_cron() {
    printf '# Managed by dbfleet (pgbackrest.sh) for stanza %s, host %s%s\n' \
        "$STANZA" "${BACKUP_DIR##*/}" "${FLEET_NAME:+, $(fleet_mark)}"
    cat <<EOF
# \`dbfleet up\` rewrites it, destroy removes it - do not edit.
SHELL=/bin/sh
PATH=/usr/bin:/bin
HOME=/
MAILTO=""
EOF
    if needs_server; then
        cat <<EOF
# pgBackRest's TLS server on $TLS_ADDRESS:$TLS_PORT: after a reboot, and within a minute whenever
# it stopped (server.sh holds run/server.lock while the server runs: never two).
@reboot $RUN_AS /bin/bash $SERVER $BACKUP_DIR $PGBACKREST_BIN
* * * * * $RUN_AS /bin/bash $SERVER $BACKUP_DIR $PGBACKREST_BIN
EOF
    fi
    if [[ "$MODE" == repo ]]; then
        cat <<EOF
# The backup scheduler's check: a backup when the newest is older than the schedule
# (scheduler.settings; at most one check at a time).
*/$CRON_CHECK_MINUTES * * * * $RUN_AS /bin/bash $SCHEDULER $BACKUP_DIR once
EOF
    fi
}

# cron_current : the cron file is root's, 0644, and has exactly render_cron's text.
cron_current() {
    local want have
    [[ -f "$CRON_FILE" && ! -L "$CRON_FILE" ]] || return 1
    [[ "$(stat -c %u:%a -- "$CRON_FILE")" == 0:644 ]] || return 1
    want=$(
        render_cron
        printf x
    )
    have=$(
        cat -- "$CRON_FILE"
        printf x
    )
    [[ "$have" == "$want" ]]
}

# write_cron : (re)write the cron file, atomically, unless current (then
# return 1).  Root's: cron ignores a file another user could change.
write_cron() {
    cron_current && return 1
    ((EUID == 0)) || die "only root may write $CRON_FILE (the host's cron)"
    [[ -d "$CRON_DIR" ]] || die "$CRON_DIR does not exist: is the Debian package cron installed?"
    # A name with a dot: cron ignores the temporary file.
    local tmp=$CRON_DIR/.${CRON_FILE##*/}.tmp.$$
    if ! { render_cron >"$tmp" && chown 0:0 -- "$tmp" && chmod 0644 -- "$tmp" && mv -f -- "$tmp" "$CRON_FILE"; }; then
        rm -f -- "$tmp"
        die "cannot write $CRON_FILE"
    fi
    return 0
}

# remove_cron : delete this host's cron file (only one dbfleet wrote).
remove_cron() {
    [[ -n "$CRON_FILE" ]] && [[ -e "$CRON_FILE" || -L "$CRON_FILE" ]] || return 0
    if [[ -L "$CRON_FILE" || ! -f "$CRON_FILE" ]] ||
        ! head -n 1 -- "$CRON_FILE" | grep -q '^# Managed by dbfleet (pgbackrest.sh)'; then
        die "$CRON_FILE was not written by dbfleet; refusing to remove it"
    fi
    rm -f -- "$CRON_FILE" || die "cannot remove $CRON_FILE"
}

# kick_scheduler : one scheduler check now, detached, as RUN_AS, with an empty
# environment: a new group's first backup does not wait for cron.
kick_scheduler() {
    # shellcheck disable=SC2016  # expanded by the inner shell
    run_as setsid bash -c 'exec env -i PATH=/usr/bin:/bin bash "$0" "$1" once </dev/null >/dev/null 2>&1 &' \
        "$SCHEDULER" "$BACKUP_DIR" || warn "could not start the backup scheduler's check"
}

do_create() {
    require_env PG_SUPERUSER_PASSWORD
    [[ "$MODE" == node ]] || require_env PG_BACKUP_PASSPHRASE
    check_inputs
    claim_dir "$BACKUP_DIR" use
    make_dirs "$BACKUP_DIR" "$SPOOL" "$LOGS" "$RUNS"
    [[ "$MODE" == node ]] || make_dirs "$REPO"
    mark_dir "$BACKUP_DIR" "backup $([[ "$MODE" == node ]] && echo configuration || echo repository)"
    lock_dir "$BACKUP_DIR"
    local done_=() esc server_changed=0
    if [[ "$MODE" != local ]] && write_tls "$TLS_DIR"; then
        server_changed=1
        done_+=("certificate written")
    fi
    if render_config | put_file "$CONF"; then
        server_changed=1
        done_+=("configuration written")
    fi
    esc=${PG_SUPERUSER_PASSWORD//\\/\\\\}
    esc=${esc//:/\\:}
    printf '*:*:*:postgres:%s\n' "$esc" | put_file "$PGPASS" || true
    if needs_server; then
        # A new starter restarts the server too: one started by an older
        # dbfleet holds no lock, and cron's start would race it.
        if printf '%s\n' "$SERVER_SH" | put_file "$SERVER"; then server_changed=1; fi
        # pgBackRest's server reads its configuration and certificate once.
        if ((server_changed)); then stop_server; fi
        if [[ -z "$(server_pid)" ]]; then
            start_server
            done_+=("TLS server started")
        fi
    fi
    # The ssh target's cron file once the programs it names are in place (the
    # repository host's scheduler.sh below: cron's next check may wait).
    if [[ -n "$CRON_FILE" ]]; then
        if [[ "$MODE" == repo ]]; then printf '%s\n' "$SCHEDULER_SH" | put_file "$SCHEDULER" || true; fi
        if write_cron; then done_+=("cron file written"); fi
    fi
    if [[ "$MODE" == node ]]; then
        local what="no changes"
        if ((${#done_[@]} > 0)); then
            what=$(printf '%s, ' "${done_[@]}")
            what=${what%, }
        fi
        printf '%s: stanza %s: node configuration in %s, TLS server on %s:%s, repository on %s, in %s: %s\n' \
            "$SCRIPT_NAME" "$STANZA" "$BACKUP_DIR" "$TLS_ADDRESS" "$TLS_PORT" "$REPO_HOST" "$(elapsed)" "$what"
        return 0
    fi
    printf '%s %s %s\n' "$STANZA" "$SCHEDULE_HOURS" "$FULL_EVERY_DAYS" | put_file "$SETTINGS" || true
    local restart=0
    if printf '%s\n' "$SCHEDULER_SH" | put_file "$SCHEDULER"; then restart=1; fi

    local code out
    code=$(info_code)
    if [[ "$code" != 0 && "$code" != 2 ]]; then
        info "stanza $STANZA is not valid yet (pgbackrest info code $code): stanza-create"
        # The leader's archive_command may already run archive-push (async),
        # which holds the stanza's archive lock for moments at a time: retry.
        wait_for 60 "pgbackrest stanza-create $STANZA" stanza_create ||
            die "pgbackrest stanza-create $STANZA failed: $(tail -n 3 <<<"$STANZA_OUT" | tr '\n' ' ')"
        # A WAL switch on the leader that must arrive in the repository: proves
        # archive_command, the passphrase and the repository's permissions.
        if ! out=$(pgbr check 2>&1); then
            if [[ "$out" == *archive_mode* ]]; then
                die "pgbackrest check $STANZA: archive_mode is not on in the leader: it takes effect when PostgreSQL restarts (a group deployed before backups: restart its nodes, e.g. a switchover and back); $(tail -n 2 <<<"$out" | tr '\n' ' ')"
            fi
            die "pgbackrest check $STANZA failed: $(tail -n 3 <<<"$out" | tr '\n' ' ')"
        fi
        done_+=("stanza created and checked")
    fi

    if [[ "$MODE" == local ]]; then
        if ((restart)); then stop_scheduler; fi
        if [[ -z "$(scheduler_pid)" ]]; then
            start_scheduler
            done_+=("scheduler started")
        fi
    else
        # cron runs the checks here; a scheduler loop an older dbfleet started
        # (its cmdline says no `once`) goes.
        local pid
        pid=$(scheduler_pid)
        if [[ -n "$pid" && " $(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null)" != *" once "* ]]; then
            stop_scheduler
            done_+=("scheduler loop stopped")
        fi
        kick_scheduler
    fi
    local what="no changes"
    if ((${#done_[@]} > 0)); then
        what=$(printf '%s, ' "${done_[@]}")
        what=${what%, }
    fi
    printf '%s: stanza %s in %s (every %s h, full every %s d, %s full kept) in %s: %s\n' \
        "$SCRIPT_NAME" "$STANZA" "$REPO" "$SCHEDULE_HOURS" "$FULL_EVERY_DAYS" "$FULL_KEEP" \
        "$(elapsed)" "$what"
}

do_delete() {
    check_run_as
    check_fleet
    require_env BACKUP_DIR
    check_abs_path BACKUP_DIR
    init_vars
    # cron's first: it would start again what is stopped below.
    remove_cron
    if [[ -d "$BACKUP_DIR" ]]; then
        claim_dir "$BACKUP_DIR" delete
        stop_scheduler
        stop_server
        stop_pgbackrest
        safe_remove_dir "$BACKUP_DIR"
    fi
    # The ssh target's per-host directories share a parent: the last one out removes it.
    if [[ "$MODE" != local ]]; then
        rmdir -- "$(dirname -- "$BACKUP_DIR")" 2>/dev/null || true
    fi
    printf '%s: deleted %s in %s\n' "$SCRIPT_NAME" "$BACKUP_DIR" "$(elapsed)"
}

do_check() {
    check_inputs
    [[ -f "$CONF" ]] || exit "$DRIFT_EXIT_CODE"
    if needs_server && [[ -z "$(server_pid)" ]]; then
        warn "pgBackRest's TLS server of $STANZA on $TLS_ADDRESS:$TLS_PORT is not running"
        exit "$DRIFT_EXIT_CODE"
    fi
    if [[ -n "$CRON_FILE" ]] && ! cron_current; then
        warn "$CRON_FILE is missing or not what dbfleet wrote"
        exit "$DRIFT_EXIT_CODE"
    fi
    [[ "$MODE" != node ]] || exit 0
    if [[ "$MODE" == local && -z "$(scheduler_pid)" ]]; then
        warn "the backup scheduler of $STANZA is not running"
        exit "$DRIFT_EXIT_CODE"
    fi
    local code
    code=$(info_code)
    if [[ "$code" != 0 && "$code" != 2 ]]; then
        warn "stanza $STANZA is not valid (pgbackrest info code $code)"
        exit "$DRIFT_EXIT_CODE"
    fi
    exit 0
}

secret_guard

case "${1:-}" in
create | update) do_create ;;
delete) do_delete ;;
check) do_check ;;
render-cron)
    check_env
    [[ -n "$CRON_FILE" ]] || die "the local target has no cron file (BACKUP_MODE repo or node)"
    printf '# %s\n' "$CRON_FILE"
    render_cron
    ;;
*) die "usage: $SCRIPT_NAME create|update|delete|check|render-cron (configuration in the environment)" ;;
esac
