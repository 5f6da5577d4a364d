#!/usr/bin/env bash
#
# pgbackrest_ops.sh info|backup|restore - what an operator asks of a region
# group's backups (dbfleet/ops/backup.py, dbfleet status).  pgbackrest.sh
# (the group's GroupBackups resource) made everything this uses: the
# configuration and pgpass in BACKUP_DIR; this script needs no secret.
#
# Environment:
#   RUN_AS       the group's OS user
#   BACKUP_DIR   the group's backup directory (pgbackrest.sh)
#   STANZA       the group's stanza
# info: stdout is one JSON document: {"info": <pgbackrest info --output=json>,
#   "repo_bytes": <size of the repository>}.
# backup: BACKUP_TYPE full|diff|incr; one backup now, on the leader
#   (pgBackRest finds it); stdout: the summary line.
# restore: point-in-time recovery of the whole group, the steps in order:
#   NODE_DIRS      every node directory of the group
#   TARGET_DIR     the node directory to restore into (the preferred leader's)
#   TARGET_PORT    its PostgreSQL port
#   LEADER_DIR     the live leader's node directory, LEADER_PORT its port
#                  (optional: a group without a leader is not fenced)
#   ETCD_ENDPOINTS comma-separated host:port of the group's etcd
#   SCOPE          the group's Patroni scope (its keys: /dbfleet/SCOPE/)
#   RESTORE_TYPE   time | lsn | latest;  RESTORE_TARGET the time or LSN
#   1. writes stop: the leader turns read-only (default_transaction_read_only,
#      every application session ended), and its current WAL is switched and
#      archived (`pgbackrest check`), so the archive holds everything written
#      (on failure the leader is made writable again and nothing else is done);
#   2. Patroni stops on every node, the leader last (no replica is promoted);
#   3. `pgbackrest restore --delta` with the target into TARGET_DIR/pgdata;
#   4. PostgreSQL recovers there by itself (started by hand, without network)
#      up to the target and promotes; the recovery settings are then removed
#      and it is stopped cleanly;
#   5. the group's Patroni state is removed from etcd, and every other node's
#      data directory is emptied, so that Patroni, started again by
#      `dbfleet up` (the caller), takes the restored data directory as the
#      group's leader and clones the replicas from it.
#
# Output: the result on stdout; progress/errors on stderr.
set -euo pipefail

# shellcheck source=SCRIPTDIR/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

PGBACKREST_BIN=${PGBACKREST_BIN:-/usr/bin/pgbackrest}
ETCDCTL_BIN=${ETCDCTL_BIN:-/usr/bin/etcdctl}
PATRONI_BIN=${PATRONI_BIN:-/usr/bin/patroni}
RECOVERY_TIMEOUT=${RECOVERY_TIMEOUT:-1800}

check_inputs() {
    check_run_as
    [[ "$RUN_AS" != root ]] || die "RUN_AS must not be root"
    require_env BACKUP_DIR STANZA
    check_abs_path BACKUP_DIR
    [[ "$STANZA" =~ ^[a-z0-9][a-z0-9-]{0,127}$ ]] || die "STANZA '$STANZA' is not a stanza name"
    CONF=$BACKUP_DIR/pgbackrest.conf
    PGPASS=$BACKUP_DIR/pgpass
    [[ -f "$CONF" ]] || die "$CONF does not exist: the group's backups are not set up (run: dbfleet up)"
}

pgbr() {
    run_as env PGPASSFILE="$PGPASS" "$PGBACKREST_BIN" --config="$CONF" --stanza="$STANZA" "$@"
}

do_info() {
    local info bytes
    info=$(pgbr --output=json info) || die "pgbackrest info $STANZA failed"
    bytes=$(du -sb -- "$BACKUP_DIR/repo" 2>/dev/null | cut -f1)
    printf '{"info": %s, "repo_bytes": %s}\n' "$info" "${bytes:-0}"
}

do_backup() {
    require_env BACKUP_TYPE
    [[ "$BACKUP_TYPE" =~ ^(full|diff|incr)$ ]] || die "BACKUP_TYPE '$BACKUP_TYPE' is not full, diff or incr"
    local out
    out=$(pgbr --type="$BACKUP_TYPE" backup 2>&1) ||
        die "pgbackrest backup --type=$BACKUP_TYPE of $STANZA failed: $(tail -n 3 <<<"$out" | tr '\n' ' ')"
    printf '%s: %s backup of %s taken in %s\n' "$SCRIPT_NAME" "$BACKUP_TYPE" "$STANZA" "$(elapsed)"
}

# node_vars DIR : the paths of node DIR.
node_vars() {
    NODE_DIR=$1
    PGDATA_DIR=$NODE_DIR/pgdata
    RUN_DIR=$NODE_DIR/run
}

# node_psql DIR PORT ARGS... : psql as postgres on node DIR's socket.
node_psql() {
    local dir=$1 port=$2
    shift 2
    run_as env PGPASSFILE="$PGPASS" PGCONNECT_TIMEOUT=5 "$PG_BIN/psql" -X -q -A -t \
        -v ON_ERROR_STOP=1 -h "$dir/run" -p "$port" -U postgres -d postgres "$@"
}

fence() {
    [[ -n "${LEADER_DIR:-}" ]] || return 0
    node_psql "$LEADER_DIR" "$LEADER_PORT" >/dev/null <<'SQL' || die "cannot make the leader read-only"
ALTER SYSTEM SET default_transaction_read_only = on;
SELECT pg_reload_conf();
SELECT pg_terminate_backend(pid) FROM pg_stat_activity
 WHERE backend_type = 'client backend' AND usename NOT IN ('postgres', 'replicator')
   AND pid <> pg_backend_pid();
SQL
    info "writes stopped: the leader is read-only"
}

unfence() {
    [[ -n "${LEADER_DIR:-}" ]] || return 0
    node_psql "$LEADER_DIR" "$LEADER_PORT" >/dev/null <<'SQL' || warn "could not make the leader writable again"
ALTER SYSTEM RESET default_transaction_read_only;
SELECT pg_reload_conf();
SQL
}

patroni_pid_of() {
    local pid='' args
    [[ -f "$1/run/patroni.pid" ]] && read -r pid <"$1/run/patroni.pid"
    [[ "$pid" =~ ^[0-9]+$ ]] || return 0
    args=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null) || return 0
    [[ " $args" == *" $PATRONI_BIN $1/patroni.yml "* ]] && printf '%s' "$pid"
    return 0
}

gone() { [[ ! -e "/proc/$1" ]]; }

postmaster_alive() {
    local pid=
    [[ -f "$PGDATA_DIR/postmaster.pid" ]] && read -r pid <"$PGDATA_DIR/postmaster.pid"
    [[ "$pid" =~ ^[0-9]+$ && -e "/proc/$pid" && "/proc/$pid/exe" -ef "$PG_BIN/postgres" ]]
}

# stop_node DIR : Patroni stops (it stops its PostgreSQL cleanly); a
# PostgreSQL left running is stopped too.
stop_node() {
    local pid
    node_vars "$1"
    claim_dir "$NODE_DIR" restore
    pid=$(patroni_pid_of "$NODE_DIR")
    if [[ -n "$pid" ]]; then
        kill -TERM "$pid" 2>/dev/null || true
        wait_for 120 "Patroni of $NODE_DIR to stop" gone "$pid" || die "Patroni (pid $pid) of $NODE_DIR does not stop"
    fi
    if postmaster_alive; then
        run_as "$PG_BIN/pg_ctl" stop -D "$PGDATA_DIR" -m fast -w -t 120 -s >&2 ||
            die "could not stop PostgreSQL in $NODE_DIR"
    fi
}

in_recovery() { node_psql "$TARGET_DIR" "$TARGET_PORT" -c 'SELECT pg_is_in_recovery()' 2>/dev/null; }

# Recovery is over: promoted, or the postmaster gave up (the caller looks at why).
promoted_or_gone() { [[ "$(in_recovery)" == f ]] || ! postmaster_alive; }

recovery_log_tail() {
    tail -n 5 "$TARGET_DIR/log/restore-recovery.log" >&2 2>/dev/null || true
    tail -n 8 "$TARGET_DIR/log/postgresql.log" >&2 2>/dev/null || true
}

do_restore() {
    require_env NODE_DIRS TARGET_DIR TARGET_PORT ETCD_ENDPOINTS SCOPE RESTORE_TYPE
    check_abs_path TARGET_DIR
    check_port TARGET_PORT "$TARGET_PORT"
    [[ "$SCOPE" =~ ^[a-z0-9-]+$ ]] || die "SCOPE '$SCOPE' is not a cluster name"
    local args=() d
    case $RESTORE_TYPE in
    time) args=(--type=time "--target=$RESTORE_TARGET" --target-action=promote) ;;
    lsn) args=(--type=lsn "--target=$RESTORE_TARGET" --target-action=promote) ;;
    latest) args=(--type=default) ;;
    *) die "RESTORE_TYPE '$RESTORE_TYPE' is not time, lsn or latest" ;;
    esac
    # shellcheck disable=SC2153  # NODE_DIRS comes from the environment
    [[ " $NODE_DIRS " == *" $TARGET_DIR "* ]] || die "TARGET_DIR $TARGET_DIR is not one of NODE_DIRS"
    for d in $NODE_DIRS; do check_abs_path d; done

    # 1. No more writes; everything written so far into the archive.
    fence
    local out
    if ! out=$(pgbr check 2>&1); then
        unfence
        die "the leader's WAL does not reach the repository, so the restore could lose more than asked; nothing changed: $(tail -n 2 <<<"$out" | tr '\n' ' ')"
    fi
    # 2. Patroni stops everywhere, the leader last.
    for d in $NODE_DIRS; do [[ "$d" == "${LEADER_DIR:-}" ]] || stop_node "$d"; done
    [[ -z "${LEADER_DIR:-}" ]] || stop_node "$LEADER_DIR"
    info "Patroni stopped on every node"
    # 3. The restore.
    node_vars "$TARGET_DIR"
    out=$(pgbr --pg1-path="$PGDATA_DIR" --delta "${args[@]}" restore 2>&1) ||
        die "pgbackrest restore into $PGDATA_DIR failed (the group is stopped; run dbfleet up to start it as it is): $(tail -n 3 <<<"$out" | tr '\n' ' ')"
    info "restored into $PGDATA_DIR ($RESTORE_TYPE ${RESTORE_TARGET:-})"
    # 4. Recovery by PostgreSQL itself, no network, no Patroni.
    # pg_ctl -w returns once the postmaster runs (its pid file written) — with
    # hot_standby off that is before recovery ends; then wait for the promotion, or
    # for the postmaster to give up.
    run_as "$PG_BIN/pg_ctl" start -D "$PGDATA_DIR" -w -t 120 -s -l "$TARGET_DIR/log/restore-recovery.log" \
        -o "-c listen_addresses='' -c port=$TARGET_PORT -c unix_socket_directories=$RUN_DIR -c hot_standby=off" >&2 ||
        die "PostgreSQL did not start in $PGDATA_DIR (the group is stopped): $(recovery_log_tail 2>&1 | tr '\n' ' ')"
    wait_for "$RECOVERY_TIMEOUT" "PostgreSQL in $PGDATA_DIR to recover and promote" promoted_or_gone || true
    if [[ "$(in_recovery)" != f ]]; then
        recovery_log_tail
        postmaster_alive && run_as "$PG_BIN/pg_ctl" stop -D "$PGDATA_DIR" -m fast -w -s >&2
        die "PostgreSQL in $PGDATA_DIR did not reach the recovery target (see $TARGET_DIR/log/postgresql.log); the group is stopped"
    fi
    node_psql "$TARGET_DIR" "$TARGET_PORT" >/dev/null <<'SQL' || die "cannot clear the recovery settings in $PGDATA_DIR"
ALTER SYSTEM RESET restore_command;
ALTER SYSTEM RESET recovery_target_time;
ALTER SYSTEM RESET recovery_target_lsn;
ALTER SYSTEM RESET recovery_target_action;
ALTER SYSTEM RESET default_transaction_read_only;
CHECKPOINT;
SQL
    local where
    where=$(node_psql "$TARGET_DIR" "$TARGET_PORT" -c "SELECT pg_current_wal_lsn() || ' timeline ' || timeline_id FROM pg_control_checkpoint()")
    run_as "$PG_BIN/pg_ctl" stop -D "$PGDATA_DIR" -m fast -w -t 120 -s >&2 ||
        die "could not stop the restored PostgreSQL in $PGDATA_DIR"
    # 5. Patroni starts afresh: no cluster state, empty replicas.
    # Patroni keeps its state through etcd's v2 API (docs/high-availability.md), in
    # the v2 store: removed there; a group with no state yet has no key.
    if ! out=$(run_as env -i ETCDCTL_API=2 "$ETCDCTL_BIN" --endpoints="$ETCD_ENDPOINTS" --timeout=2s \
        --total-timeout=10s rm --recursive "/dbfleet/$SCOPE" 2>&1) && [[ "$out" != *"Key not found"* ]]; then
        die "cannot remove $SCOPE's Patroni state from etcd ($ETCD_ENDPOINTS): $(tail -n 1 <<<"$out")"
    fi
    for d in $NODE_DIRS; do
        [[ "$d" != "$TARGET_DIR" ]] || continue
        node_vars "$d"
        run_as rm -rf -- "$PGDATA_DIR" || die "cannot empty $PGDATA_DIR"
        make_dirs "$PGDATA_DIR"
    done
    printf '%s: %s restored to %s %s (now at %s) in %s; replicas emptied, Patroni state cleared\n' \
        "$SCRIPT_NAME" "$STANZA" "$RESTORE_TYPE" "${RESTORE_TARGET:-}" "$where" "$(elapsed)"
}

check_inputs
case "${1:-}" in
info) do_info ;;
backup) do_backup ;;
restore) do_restore ;;
*) die "usage: $SCRIPT_NAME info|backup|restore (configuration in the environment)" ;;
esac
