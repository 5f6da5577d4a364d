#!/usr/bin/env bash
#
# patroni.sh create|update|delete|check - one PostgreSQL 15 node of a region
# group, run by Patroni (Debian's patroni 3.0.2, /usr/bin/patroni).
#
# Patroni owns the node's life: it bootstraps the group's first node
# (initdb), clones the others from the leader (pg_basebackup), keeps the
# replication slots, promotes a replica when the leader's lock in the
# group's etcd expires, demotes a leader that loses etcd, and rewinds a
# former leader (pg_rewind) when it rejoins.  This script only declares the
# node: it writes Patroni's configuration, starts Patroni if it is not
# running (or reloads it when the configuration changed) and waits until the
# node's PostgreSQL runs.  Group-wide things (dynamic configuration, roles,
# switchover) are patroni_leader.sh's.
#
# Environment (create/update):
#   RUN_AS                   OS user owning and running the node (not root)
#   NODE_DIR                 absolute node directory; the script uses
#                              $NODE_DIR/pgdata          PGDATA
#                              $NODE_DIR/patroni.yml     Patroni's configuration
#                                                        (0600: it holds passwords)
#                              $NODE_DIR/patroni.etcd    the etcd client settings
#                                                        Patroni started with
#                              $NODE_DIR/run             socket dir, patroni.pid, pgpass
#                              $NODE_DIR/log             patroni.log, postgresql.log
#   PG_HOST, PG_PORT         the only address/port PostgreSQL listens on
#   REST_PORT                Patroni's REST API, on PG_HOST
#   MEMBER_NAME              the node's name in the group (`fra-0`)
#   SCOPE                    the group's cluster name in etcd (`<fleet>-<group>`)
#   ETCD_HOSTS               space-separated host:port of the group's etcd members
#   ALLOWED_HOSTS            space-separated IPv4 addresses/networks for pg_hba
#   DCS_CONFIG               JSON: the group's dynamic configuration, used when
#                            this node bootstraps the group (patroni_leader.sh
#                            keeps it current afterwards)
#   PG_SUPERUSER_PASSWORD    password of "postgres" (also the REST API's
#                            password for changes: user "patroni")
#   PG_REPLICATION_PASSWORD  password of role "replicator"
#   TLS_CERT, TLS_KEY        the node's certificate and private key from its
#                            group's CA (PEM, base64-encoded: one line each;
#                            TLS_KEY is secret), written to $NODE_DIR/tls 0600;
#                            they serve PostgreSQL and Patroni's REST API (HTTPS
#                            only) and are Patroni's client certificate for the
#                            group's etcd (HTTPS, client-certificate auth)
#   TLS_CA                   the group's CA certificate (PEM, base64-encoded):
#                            replication and rewind verify the leader with it
#                            (sslmode=verify-full).  PostgreSQL accepts TLS
#                            connections only (hostssl); new files are loaded
#                            with a reload, never a restart.
#   FLEET_NAME, TARGET       as for every script (lib.sh)
# delete needs only RUN_AS and NODE_DIR.
#
# A data directory made by dbfleet before Patroni (conf.d/dbfleet.conf) is
# taken over: its server is stopped cleanly and the old include removed;
# Patroni then starts it in the role the group's etcd gives it.
#
# Output: one summary line on stdout; progress/errors on stderr.
set -euo pipefail

# shellcheck source=SCRIPTDIR/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=SCRIPTDIR/pg_lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/pg_lib.sh"

PATRONI_BIN=${PATRONI_BIN:-/usr/bin/patroni}

patroni_vars() {
    pg_init_vars
    PATRONI_CONF=$NODE_DIR/patroni.yml
    PATRONI_PID=$RUN_DIR/patroni.pid
    PATRONI_LOG=$LOG_DIR/patroni.log
    TLS_DIR=$NODE_DIR/tls
    # The etcd client settings the running Patroni started with.
    ETCD_CLIENT=$NODE_DIR/patroni.etcd
}

# patroni_pid : the pid in patroni.pid if that process runs Patroni with
# this node's configuration (a python process: its command line says so).
patroni_pid() {
    local pid='' args
    [[ -f "$PATRONI_PID" ]] && read -r pid <"$PATRONI_PID"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 0
    args=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 0
    [[ " $args" == *" $PATRONI_BIN $PATRONI_CONF "* ]] && printf '%s' "$pid"
    return 0
}

# yaml_str VALUE : VALUE as a YAML double-quoted scalar.
yaml_str() {
    local v=${1//\\/\\\\}
    printf '"%s"' "${v//\"/\\\"}"
}

# render_etcd_client : how Patroni reaches etcd - HTTPS, the members verified
# against the group's CA, the node's certificate as its client certificate
# (etcd admits no other).  Patroni reads this only when it starts: a change
# restarts it (do_create).
render_etcd_client() {
    cat <<EOF
  protocol: https
  cacert: $(yaml_str "$TLS_DIR/ca.crt")
  cert: $(yaml_str "$TLS_DIR/server.crt")
  key: $(yaml_str "$TLS_DIR/server.key")
EOF
}

render_config() {
    local a h
    cat <<EOF
# Managed by dbfleet (patroni.sh); rewritten on every run - do not edit.
scope: $(yaml_str "$SCOPE")
namespace: /dbfleet/
name: $(yaml_str "$MEMBER_NAME")
log:
  dir: $(yaml_str "$LOG_DIR")
  level: INFO
  file_num: 2
  file_size: 10485760
restapi:
  listen: $(yaml_str "$PG_HOST:$REST_PORT")
  connect_address: $(yaml_str "$PG_HOST:$REST_PORT")
  # HTTPS only, with the node's certificate (its address is a SAN, so every
  # caller verifies it against the group's CA: HAProxy, the other members,
  # patroni_leader.sh, dbfleet status).  Reads (health checks, /cluster) are
  # open; changes need the password.
  certfile: $(yaml_str "$TLS_DIR/server.crt")
  keyfile: $(yaml_str "$TLS_DIR/server.key")
  cafile: $(yaml_str "$TLS_DIR/ca.crt")
  authentication:
    username: patroni
    password: $(yaml_str "$PG_SUPERUSER_PASSWORD")
# Patroni's own calls to other members' REST APIs (failsafe, election,
# switchover) verify them against the group's CA.
ctl:
  cacert: $(yaml_str "$TLS_DIR/ca.crt")
  certfile: $(yaml_str "$TLS_DIR/server.crt")
  keyfile: $(yaml_str "$TLS_DIR/server.key")
# etcd's v2 API: Patroni 3.0.2 refreshes its leader lock there with a
# compare-and-swap (prevValue), while its etcd3 client rewrites the key
# unconditionally, so an isolated ex-leader whose demotion was still running
# took the lock back from the new leader when the partition healed (two
# timelines 2).  See docs/high-availability.md.
etcd:
EOF
    render_etcd_client
    printf '  hosts:\n'
    for h in $ETCD_HOSTS; do printf '  - %s\n' "$(yaml_str "$h")"; done
    cat <<EOF
bootstrap:
  dcs: $DCS_CONFIG
  initdb:
  - encoding: UTF8
  - no-locale
  - data-checksums
  - auth: scram-sha-256
postgresql:
  listen: $(yaml_str "$PG_HOST:$PG_PORT")
  connect_address: $(yaml_str "$PG_HOST:$PG_PORT")
  data_dir: $(yaml_str "$PGDATA_DIR")
  bin_dir: $(yaml_str "$PG_BIN")
  pgpass: $(yaml_str "$RUN_DIR/patroni.pgpass")
  use_unix_socket: true
  authentication:
    superuser:
      username: postgres
      password: $(yaml_str "$PG_SUPERUSER_PASSWORD")
      sslmode: verify-full
      sslrootcert: $(yaml_str "$TLS_DIR/ca.crt")
    replication:
      username: replicator
      password: $(yaml_str "$PG_REPLICATION_PASSWORD")
      sslmode: verify-full
      sslrootcert: $(yaml_str "$TLS_DIR/ca.crt")
  basebackup:
  - checkpoint: fast
  # Never delete a data directory by itself: an operator decides.
  remove_data_directory_on_rewind_failure: false
  remove_data_directory_on_diverged_timelines: false
  parameters:
    # A private socket directory (nodes of different regions share port
    # numbers on the local target).
    unix_socket_directories: $(yaml_str "$RUN_DIR")
    unix_socket_permissions: "0700"
    password_encryption: scram-sha-256
    ssl: "on"
    ssl_cert_file: $(yaml_str "$TLS_DIR/server.crt")
    ssl_key_file: $(yaml_str "$TLS_DIR/server.key")
    ssl_ca_file: $(yaml_str "$TLS_DIR/ca.crt")
    ssl_min_protocol_version: TLSv1.2
    # One log file under NODE_DIR/log, private; never log statement text.
    logging_collector: "on"
    log_destination: stderr
    log_directory: $(yaml_str "$LOG_DIR")
    log_filename: postgresql.log
    log_file_mode: "0600"
    log_rotation_age: "0"
    log_rotation_size: "0"
    log_line_prefix: "%m [%p] %q%u@%d "
    log_statement: none
    log_min_duration_statement: "-1"
  pg_hba:
  - local all postgres scram-sha-256
EOF
    for a in ${ALLOWED_HOSTS:-}; do
        [[ "$a" == */* ]] || a="$a/32"
        printf '  - hostssl all all %s scram-sha-256\n' "$a"
        printf '  - hostssl replication replicator %s scram-sha-256\n' "$a"
    done
    cat <<'EOF'
watchdog:
  mode: "off"
tags:
  nofailover: false
  noloadbalance: false
  clonefrom: false
  nosync: false
EOF
}

# rest_get [CURL_ARGS...] PATH : GET on this node's REST API, over HTTPS and
# verified against the group's CA under the address it is dialled at.
rest_get() {
    local path=${*: -1}
    curl -s -m 3 --cacert "$TLS_DIR/ca.crt" "${@:1:$#-1}" "https://$PG_HOST:$REST_PORT$path"
}

# rest_code PATH : HTTP status of a GET on this node's REST API ("000": no answer).
rest_code() {
    rest_get -o /dev/null -w '%{http_code}' "$1" 2>/dev/null || true
}

rest_is() { [[ "$(rest_code "$1")" == "$2" ]]; }

# has_role : Patroni has settled the node's role; ROLE says which.
ROLE=starting
has_role() {
    if rest_is /primary 200; then
        ROLE=leader
    elif rest_is /replica 200; then
        ROLE=replica
    else
        return 1
    fi
}

# listening_on HOST PORT : something accepts TCP connections there.
listening_on() { (exec 3<>"/dev/tcp/$1/$2") 2>/dev/null; }

# running_or_failed : PostgreSQL runs under Patroni (HEALTHY=1) - or Patroni
# gave up starting it or exited (then waiting longer is pointless).  The answer is kept:
# asking again can meet the REST API restarting for a reloaded certificate.
HEALTHY=0
running_or_failed() {
    if rest_is /health 200; then
        HEALTHY=1
        return 0
    fi
    # Patroni itself gone (it exits on a configuration it cannot load): waiting
    # longer is pointless too.
    [[ -n "$(patroni_pid)" ]] || return 0
    local state
    state=$(rest_get /patroni 2>/dev/null) || return 1
    [[ "$state" == *'"state": "start failed"'* || "$state" == *'"state": "bootstrap failed"'* ]]
}

# start_patroni : Patroni detached from this script (its own session, output
# in its log), as RUN_AS; the secrets are not exported, so it inherits none.
start_patroni() {
    local pid
    # shellcheck disable=SC2016  # expanded by the inner shell
    pid=$(run_as setsid bash -c 'exec "$0" "$1" >>"$2" 2>&1 </dev/null & printf "%s" "$!"' \
        "$PATRONI_BIN" "$PATRONI_CONF" "$PATRONI_LOG") || die "could not start Patroni for $NODE_DIR"
    printf '%s\n' "$pid" | put_file "$PATRONI_PID" || true
}

# take_over_pre_patroni : a node dbfleet ran before Patroni; stop it cleanly
# and drop dbfleet's old include, so that Patroni's configuration applies.
take_over_pre_patroni() {
    [[ -f "$PGDATA_DIR/conf.d/dbfleet.conf" ]] || return 1
    info "$NODE_DIR was set up before Patroni: stopping it and handing it to Patroni"
    pg_stop
    wait_for 30 "postgres processes in $PGDATA_DIR to exit" pg_no_procs ||
        die "postgres processes still use $PGDATA_DIR; cannot hand it to Patroni"
    # shellcheck disable=SC2016
    run_as sed -i "/^include = 'conf.d\/dbfleet.conf'/d" "$PGDATA_DIR/postgresql.conf" ||
        die "cannot edit $PGDATA_DIR/postgresql.conf"
    rm -f -- "$PGDATA_DIR/conf.d/dbfleet.conf" "$SLOTS_STATE" "$REPL_PASSFILE"
    return 0
}

patroni_log_tail() { tail -n 8 "$PATRONI_LOG" >&2 2>/dev/null || true; }

do_create() {
    require_env PG_SUPERUSER_PASSWORD PG_REPLICATION_PASSWORD REST_PORT MEMBER_NAME SCOPE \
        ETCD_HOSTS DCS_CONFIG TLS_CERT TLS_KEY TLS_CA
    pg_check_common
    check_port REST_PORT "$REST_PORT"
    [[ "$MEMBER_NAME" =~ ^[a-z0-9-]+$ ]] || die "MEMBER_NAME '$MEMBER_NAME' is not a member name"
    [[ "$SCOPE" =~ ^[a-z0-9-]+$ ]] || die "SCOPE '$SCOPE' is not a cluster name"
    local h
    for h in $ETCD_HOSTS; do check_hostport ETCD_HOSTS "$h"; done
    [[ -x "$PATRONI_BIN" ]] || die "Patroni not found at $PATRONI_BIN (Debian package patroni)"

    patroni_vars
    pg_prepare_node_dir "postgresql node"
    local done_=() pid
    if take_over_pre_patroni; then done_+=("taken over from dbfleet's pre-Patroni setup"); fi

    local changed=0 tls_changed=0 etcd_changed=0
    if write_tls "$TLS_DIR"; then tls_changed=1; fi
    if render_config | put_file "$PATRONI_CONF"; then changed=1; fi
    if render_etcd_client | put_file "$ETCD_CLIENT"; then etcd_changed=1; fi
    pid=$(patroni_pid)
    if [[ -n "$pid" ]] && ((etcd_changed)); then
        # Patroni builds its etcd client once, at start (a reload keeps the old
        # one): a node set up for plain-http etcd (an older dbfleet) restarts
        # once.  It stops its PostgreSQL cleanly; a leader's stop makes the group
        # elect one again (docs/high-availability.md, "Upgrading to TLS").
        info "Patroni of $MEMBER_NAME talks to etcd differently now: restarting it"
        stop_patroni
        pid=
        done_+=("Patroni restarted (etcd over TLS)")
    fi
    if [[ -z "$pid" ]]; then
        # Another program on the node's ports would keep PostgreSQL (or Patroni's
        # API) from starting, which Patroni only retries: say so now.
        if ! pg_running && listening_on "$PG_HOST" "$PG_PORT"; then
            die "$PG_HOST:$PG_PORT is already in use by another program; PostgreSQL of $MEMBER_NAME cannot listen there"
        fi
        if listening_on "$PG_HOST" "$REST_PORT"; then
            die "$PG_HOST:$REST_PORT is already in use by another program; Patroni of $MEMBER_NAME cannot listen there"
        fi
        # A postgres left running by a killed Patroni is adopted by the new one.
        start_patroni
        done_+=("Patroni started")
    elif ((changed || tls_changed)); then
        # A reload also makes Patroni's REST API load a new certificate.
        kill -HUP "$pid" || die "could not reload Patroni (pid $pid)"
        done_+=("Patroni reloaded")
    fi
    if ((tls_changed)) && [[ -n "$pid" ]] && pg_running; then
        # New certificate files under the same names: PostgreSQL loads them on a
        # reload (SIGHUP); sessions and the server keep running.
        run_as "$PG_BIN/pg_ctl" reload -s -D "$PGDATA_DIR" >/dev/null ||
            die "could not reload PostgreSQL of $MEMBER_NAME for its new certificate"
        done_+=("certificate reloaded")
    fi

    # Running: Patroni answers and its PostgreSQL runs (a new replica first
    # copies the leader: pg_basebackup, so the deadline is generous).
    local state=
    if ! wait_for 600 "Patroni of $MEMBER_NAME to run PostgreSQL" running_or_failed; then
        state="after 600 s"
    elif ((!HEALTHY)); then
        state="(Patroni reports its start failed)"
    fi
    if [[ -n "$state" ]]; then
        patroni_log_tail
        [[ -n "$(patroni_pid)" ]] || die "Patroni of $MEMBER_NAME exited (see $PATRONI_LOG)"
        die "PostgreSQL of $MEMBER_NAME is not running under Patroni $state (see $PATRONI_LOG and $LOG_FILE)"
    fi
    # Its role, once Patroni has settled it (the leader's lock, or streaming).
    wait_for 60 "Patroni of $MEMBER_NAME to settle its role" has_role || true

    local what="no changes"
    if ((${#done_[@]} > 0)); then
        what=$(printf '%s, ' "${done_[@]}")
        what=${what%, }
    fi
    printf '%s: %s %s:%s (%s, REST %s) running as %s in %s: %s\n' \
        "$SCRIPT_NAME" "$MEMBER_NAME" "$PG_HOST" "$PG_PORT" "$NODE_DIR" "$REST_PORT" "$ROLE" \
        "$(elapsed)" "$what"
}

# stop_patroni : TERM Patroni (it stops its PostgreSQL cleanly), then make
# sure PostgreSQL is down too.
stop_patroni() {
    local pid
    pid=$(patroni_pid)
    if [[ -n "$pid" ]]; then
        kill -TERM "$pid" 2>/dev/null || true
        wait_for 120 "Patroni (pid $pid) to stop" patroni_gone "$pid" || kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f -- "$PATRONI_PID"
}

patroni_gone() { [[ ! -e "/proc/$1" ]]; }

do_delete() {
    check_run_as
    require_env NODE_DIR
    check_abs_path NODE_DIR
    patroni_vars
    if [[ -d "$NODE_DIR" ]]; then
        claim_dir "$NODE_DIR" delete
        stop_patroni
    fi
    pg_delete_node
}

# check : drift when Patroni is not running, or its PostgreSQL is not.
do_check() {
    require_env NODE_DIR REST_PORT PG_HOST
    patroni_vars
    [[ -f "$PATRONI_CONF" && -n "$(patroni_pid)" ]] || exit "$DRIFT_EXIT_CODE"
    # Patroni runs: one slow answer (a busy machine, a backup's checkpoint) is
    # not drift; PostgreSQL down for 10 s is.
    wait_for 10 "Patroni of ${MEMBER_NAME:-$NODE_DIR} to report PostgreSQL healthy" rest_is /health 200 \
        2>/dev/null || exit "$DRIFT_EXIT_CODE"
    exit 0
}

protect_secrets

case "${1:-}" in
create | update) do_create ;;
delete) do_delete ;;
check) do_check ;;
*) die "usage: $SCRIPT_NAME create|update|delete|check (configuration in the environment)" ;;
esac
