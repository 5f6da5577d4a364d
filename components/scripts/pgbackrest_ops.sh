#!/usr/bin/env bash
#
# pgbackrest_ops.sh info|backup|restore|restore-fence|restore-stop|restore-node|
#   restore-clear|restore-into - what an operator asks of a region group's
# backups (dbfleet/ops/backup.py, dbfleet status).  pgbackrest.sh (the group's
# GroupBackups/HostBackups resources) made everything this uses: the
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
#   ETCD_ENDPOINTS comma-separated https URLs of the group's etcd members
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
# The same steps one host at a time (the ssh target, where the nodes are on
# different hosts; BACKUP_DIR is then that host's own directory, whose
# configuration reaches the repository host over TLS):
#   restore-fence  step 1 on the leader's host (LEADER_DIR, LEADER_PORT; without
#                  them only the check, e.g. on the repository host)
#   restore-stop   step 2 for NODE_DIRS (this host's nodes), LEADER_DIR last
#   restore-node   steps 3, 4 and the etcd part of 5 on TARGET_DIR's host
#                  (TARGET_DIR, TARGET_PORT, ETCD_ENDPOINTS, SCOPE, RESTORE_*)
#   restore-clear  the rest of 5: NODE_DIRS (this host's) emptied, TARGET_DIR not
#
# Output: the result on stdout; progress/errors on stderr.
set -euo pipefail

# shellcheck source=SCRIPTDIR/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

PGBACKREST_BIN=${PGBACKREST_BIN:-/usr/bin/pgbackrest}
ETCDCTL_BIN=${ETCDCTL_BIN:-/usr/bin/etcdctl}
PATRONI_BIN=${PATRONI_BIN:-/usr/bin/patroni}
RECOVERY_TIMEOUT=${RECOVERY_TIMEOUT:-1800}
BACKUP_LOCK_WAIT=${BACKUP_LOCK_WAIT:-1800}

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

# backup_lock_free : no pgBackRest process holds the stanza's backup lock (it
# takes an flock on the file; absent: never taken).
backup_lock_free() {
    local lock="$BACKUP_DIR/run/$STANZA-backup.lock"
    [[ ! -e "$lock" ]] || run_as flock -n "$lock" true
}

do_backup() {
    require_env BACKUP_TYPE
    [[ "$BACKUP_TYPE" =~ ^(full|diff|incr)$ ]] || die "BACKUP_TYPE '$BACKUP_TYPE' is not full, diff or incr"
    local out attempt
    # A backup already running (the scheduler's) holds the stanza's backup lock:
    # wait for it to end rather than fail, then take ours (again if the scheduler
    # took the lock first in between).
    for attempt in 1 2 3; do
        wait_for "$BACKUP_LOCK_WAIT" "the running backup of $STANZA to end" backup_lock_free ||
            die "another backup of $STANZA has run for more than ${BACKUP_LOCK_WAIT}s; try again later"
        out=$(pgbr --type="$BACKUP_TYPE" backup 2>&1) && break
        [[ "$out" == *"[050]"* && $attempt -lt 3 ]] ||
            die "pgbackrest backup --type=$BACKUP_TYPE of $STANZA failed: $(tail -n 3 <<<"$out" | tr '\n' ' ')"
    done
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
    local f
    for f in "$TARGET_DIR/log/restore-recovery.log" "$TARGET_DIR/log/postgresql.log"; do
        [[ -f "$f" ]] || continue
        # the reasons first (a failed recovery's FATAL is above the shutdown lines)
        grep -E 'FATAL|PANIC|ERROR' -- "$f" | tail -n 3 >&2 || true
        tail -n 4 -- "$f" >&2 || true
    done
}

# target_args : pgBackRest's restore options for RESTORE_TYPE/RESTORE_TARGET.
target_args() {
    case $RESTORE_TYPE in
    time) TARGET_ARGS=(--type=time "--target=$RESTORE_TARGET" --target-action=promote) ;;
    lsn) TARGET_ARGS=(--type=lsn "--target=$RESTORE_TARGET" --target-action=promote) ;;
    latest) TARGET_ARGS=(--type=default) ;;
    *) die "RESTORE_TYPE '$RESTORE_TYPE' is not time, lsn or latest" ;;
    esac
}

# recover DIR PORT WHAT [-c OPTION...] : PostgreSQL in DIR/pgdata (restored by
# pgBackRest) recovers by itself — started by hand, without network — up to the
# target and promotes; the recovery settings are removed and it stops cleanly.
# Prints where it ended (LSN and timeline). WHAT: the state a failure leaves.
recover() {
    local dir=$1 port=$2 what=$3
    shift 3
    node_vars "$dir"
    TARGET_DIR=$dir TARGET_PORT=$port
    # pg_ctl -w returns once the postmaster runs (its pid file written) — with
    # hot_standby off that is before recovery ends; then wait for the promotion, or
    # for the postmaster to give up.
    run_as "$PG_BIN/pg_ctl" start -D "$PGDATA_DIR" -w -t 120 -s -l "$dir/log/restore-recovery.log" \
        -o "-c listen_addresses='' -c port=$port -c unix_socket_directories=$RUN_DIR -c hot_standby=off $*" >&2 ||
        die "PostgreSQL did not start in $PGDATA_DIR ($what): $(recovery_log_tail 2>&1 | tr '\n' ' ')"
    wait_for "$RECOVERY_TIMEOUT" "PostgreSQL in $PGDATA_DIR to recover and promote" promoted_or_gone || true
    if [[ "$(in_recovery)" != f ]]; then
        recovery_log_tail
        postmaster_alive && run_as "$PG_BIN/pg_ctl" stop -D "$PGDATA_DIR" -m fast -w -s >&2
        die "PostgreSQL in $PGDATA_DIR did not reach the recovery target (see $dir/log); $what"
    fi
    node_psql "$dir" "$port" >/dev/null <<'SQL' || die "cannot clear the recovery settings in $PGDATA_DIR"
ALTER SYSTEM RESET restore_command;
ALTER SYSTEM RESET recovery_target_time;
ALTER SYSTEM RESET recovery_target_lsn;
ALTER SYSTEM RESET recovery_target_action;
ALTER SYSTEM RESET default_transaction_read_only;
SQL
    node_psql "$dir" "$port" -c CHECKPOINT >/dev/null || die "CHECKPOINT failed in $PGDATA_DIR"
    node_psql "$dir" "$port" -c "SELECT pg_current_wal_lsn() || ' timeline ' || timeline_id FROM pg_control_checkpoint()"
    # Last: it may change the password this script logs in with.
    [[ -z "${AFTER_RECOVERY_SQL:-}" ]] || node_psql "$dir" "$port" >/dev/null <<<"$AFTER_RECOVERY_SQL" ||
        die "the restored PostgreSQL in $PGDATA_DIR refused the new group's roles"
    run_as "$PG_BIN/pg_ctl" stop -D "$PGDATA_DIR" -m fast -w -t 120 -s >&2 ||
        die "could not stop the restored PostgreSQL in $PGDATA_DIR"
}

# restore_inputs VAR... : the restore's common inputs are sound; every node
# directory named in the given variables is a normalised absolute path.
restore_inputs() {
    local v d
    for v in "$@"; do
        for d in ${!v:-}; do check_abs_path d; done
    done
}

# restore_fence : step 1, on the leader's host (LEADER_DIR/LEADER_PORT; without a
# leader anywhere a check is all there is): no more writes, and everything
# written so far into the archive — or the leader writable again and nothing
# changed.
restore_fence() {
    local out
    fence
    if ! out=$(pgbr check 2>&1); then
        unfence
        die "the leader's WAL does not reach the repository, so the restore could lose more than asked; nothing changed: $(tail -n 2 <<<"$out" | tr '\n' ' ')"
    fi
}

# restore_stop : step 2 for the nodes in NODE_DIRS (one host's on the ssh
# target): Patroni stops on each, LEADER_DIR (when it is one of them) last, so
# that no replica gets promoted meanwhile.
restore_stop() {
    local d
    # shellcheck disable=SC2153  # NODE_DIRS comes from the environment
    for d in $NODE_DIRS; do [[ "$d" == "${LEADER_DIR:-}" ]] || stop_node "$d"; done
    if [[ -n "${LEADER_DIR:-}" && " $NODE_DIRS " == *" $LEADER_DIR "* ]]; then stop_node "$LEADER_DIR"; fi
}

# restore_node : steps 3-5a on the preferred leader's host: `pgbackrest restore
# --delta` into TARGET_DIR/pgdata, PostgreSQL's own recovery to the target
# (no network, no Patroni), then the group's Patroni state removed from etcd.
# Prints where the recovery ended.
restore_node() {
    local out where
    node_vars "$TARGET_DIR"
    out=$(pgbr --pg1-path="$PGDATA_DIR" --delta "${TARGET_ARGS[@]}" restore 2>&1) ||
        die "pgbackrest restore into $PGDATA_DIR failed (the group is stopped; run dbfleet up to start it as it is): $(tail -n 3 <<<"$out" | tr '\n' ' ')"
    info "restored into $PGDATA_DIR ($RESTORE_TYPE ${RESTORE_TARGET:-})"
    where=$(recover "$TARGET_DIR" "$TARGET_PORT" "the group is stopped")
    # Patroni starts afresh: no cluster state.  Patroni keeps its state through
    # etcd's v2 API (docs/high-availability.md), in the v2 store: removed there;
    # a group with no state yet has no key.  etcd admits clients with a
    # certificate from the group's CA: the restored node's own (Patroni's) is one.
    local tls=$TARGET_DIR/tls
    if ! out=$(run_as env -i ETCDCTL_API=2 "$ETCDCTL_BIN" --endpoints="$ETCD_ENDPOINTS" --timeout=2s \
        --total-timeout=10s --ca-file="$tls/ca.crt" --cert-file="$tls/server.crt" --key-file="$tls/server.key" \
        rm --recursive "/dbfleet/$SCOPE" 2>&1) && [[ "$out" != *"Key not found"* ]]; then
        die "cannot remove $SCOPE's Patroni state from etcd ($ETCD_ENDPOINTS): $(tail -n 1 <<<"$out")"
    fi
    printf '%s' "$where"
}

# restore_clear : step 5b for the nodes in NODE_DIRS but TARGET_DIR: their data
# directories emptied, so that Patroni clones them from the restored leader.
restore_clear() {
    local d
    for d in $NODE_DIRS; do
        [[ "$d" != "${TARGET_DIR:-}" ]] || continue
        claim_dir "$d" restore
        node_vars "$d"
        run_as rm -rf -- "$PGDATA_DIR" || die "cannot empty $PGDATA_DIR"
        make_dirs "$PGDATA_DIR"
    done
}

check_target() {
    require_env TARGET_DIR TARGET_PORT ETCD_ENDPOINTS SCOPE RESTORE_TYPE
    check_abs_path TARGET_DIR
    check_port TARGET_PORT "$TARGET_PORT"
    [[ "$SCOPE" =~ ^[a-z0-9-]+$ ]] || die "SCOPE '$SCOPE' is not a cluster name"
    target_args
}

# restore: the whole group on one machine (the local target), every step.
do_restore() {
    require_env NODE_DIRS
    check_target
    restore_inputs NODE_DIRS LEADER_DIR
    [[ " $NODE_DIRS " == *" $TARGET_DIR "* ]] || die "TARGET_DIR $TARGET_DIR is not one of NODE_DIRS"
    restore_fence
    restore_stop
    info "Patroni stopped on every node"
    local where
    where=$(restore_node)
    restore_clear
    printf '%s: %s restored to %s %s (now at %s) in %s; replicas emptied, Patroni state cleared\n' \
        "$SCRIPT_NAME" "$STANZA" "$RESTORE_TYPE" "${RESTORE_TARGET:-}" "$where" "$(elapsed)"
}

# The same steps one host at a time (the ssh target; dbfleet/ops/backup.py
# calls them in order, each on its own host).
do_restore_fence() {
    restore_inputs LEADER_DIR
    restore_fence
    printf '%s: writes stopped%s and the WAL archived in %s\n' "$SCRIPT_NAME" \
        "$([[ -n "${LEADER_DIR:-}" ]] && printf ' on %s' "$LEADER_DIR")" "$(elapsed)"
}

do_restore_stop() {
    require_env NODE_DIRS
    restore_inputs NODE_DIRS LEADER_DIR
    restore_stop
    printf '%s: Patroni stopped on %s in %s\n' "$SCRIPT_NAME" "$NODE_DIRS" "$(elapsed)"
}

do_restore_node() {
    check_target
    local where
    where=$(restore_node)
    printf '%s: %s restored into %s to %s %s (now at %s) in %s; Patroni state cleared\n' \
        "$SCRIPT_NAME" "$STANZA" "$TARGET_DIR" "$RESTORE_TYPE" "${RESTORE_TARGET:-}" "$where" "$(elapsed)"
}

do_restore_clear() {
    require_env NODE_DIRS
    restore_inputs NODE_DIRS TARGET_DIR
    restore_clear
    printf '%s: emptied %s in %s\n' "$SCRIPT_NAME" "$NODE_DIRS" "$(elapsed)"
}

# restore-into: the group's backups restored into the first node of a NEW group
# (same zone), for inspection; the live group is not touched.
#   INTO_NODE_DIR  the new group's preferred leader's node directory (absent or empty)
#   INTO_USER      the new group's OS user (owns INTO_NODE_DIR afterwards)
#   INTO_PORT      a port for the recovering server's socket name (no network)
#   RESTORE_TYPE / RESTORE_TARGET as for restore
#   secret: INTO_ROLES_SQL  the new group's role passwords as SCRAM verifiers
#           (ALTER ROLE ... PASSWORD '<verifier>' lines), so that its Patroni and
#           replicas log in with the new group's passwords
# The live leader's current WAL segment is archived first (`pgbackrest check`:
# a WAL switch). The recovery runs as RUN_AS (who can read the repository) in a staging
# directory under BACKUP_DIR: pgBackRest reads the repository only — no async
# queue, its own log and lock paths — and the server runs with archive_mode=off
# and its own log, so nothing is written to the live group's repository,
# queue, logs or nodes. The result is then moved to INTO_NODE_DIR and given
# to INTO_USER; `dbfleet up NEWGROUP` (the caller) starts Patroni on it.
do_restore_into() {
    require_env INTO_NODE_DIR INTO_USER INTO_PORT RESTORE_TYPE INTO_ROLES_SQL
    export -n INTO_ROLES_SQL # verifiers: for psql's stdin only, never a child's environment
    check_abs_path INTO_NODE_DIR
    check_port INTO_PORT "$INTO_PORT"
    [[ "$INTO_USER" =~ ^[a-z_][a-z0-9_-]{0,31}$ && "$INTO_USER" != root ]] ||
        die "INTO_USER '$INTO_USER' is not a group's user"
    id -u "$INTO_USER" >/dev/null 2>&1 || die "user $INTO_USER does not exist: bring the new group's accounts up first"
    [[ ! -e "$INTO_NODE_DIR" || -z "$(ls -A -- "$INTO_NODE_DIR")" ]] ||
        die "$INTO_NODE_DIR is not empty: restore --into needs a group that was never deployed"
    target_args
    local stage=$BACKUP_DIR/restore-into out where
    # The live leader's current WAL into the archive (a WAL switch, nothing
    # else), so that a point a second ago can be reached.
    out=$(pgbr check 2>&1) ||
        die "the live leader's WAL does not reach the repository; nothing changed: $(tail -n 2 <<<"$out" | tr '\n' ' ')"
    [[ ! -e "$stage" ]] || run_as rm -rf -- "$stage" || die "cannot clear $stage"
    make_dirs "$stage" "$stage/pgdata" "$stage/run" "$stage/log" "$stage/spool"
    # WAL comes synchronously (no queue in the live group's spool; pgBackRest
    # refuses a spool path without archive-async), logs and locks stay in the
    # staging directory, and so does the restore's spool: a restore clears its
    # stanza's spool, which in the live group's is the archiver's push queue.
    local get="$PGBACKREST_BIN --config=$CONF --stanza=$STANZA --pg1-path=$stage/pgdata --no-archive-async --log-path=$stage/log"
    get+=" --lock-path=$stage/run archive-get %f \"%p\""
    out=$(pgbr --pg1-path="$stage/pgdata" --log-path="$stage/log" --lock-path="$stage/run" \
        --spool-path="$stage/spool" \
        "--recovery-option=restore_command=$get" "${TARGET_ARGS[@]}" restore 2>&1) || {
        run_as rm -rf -- "$stage"
        die "pgbackrest restore of $STANZA failed; nothing changed: $(tail -n 3 <<<"$out" | tr '\n' ' ')"
    }
    info "restored $STANZA's backup into a staging directory ($RESTORE_TYPE ${RESTORE_TARGET:-})"
    # (a shell variable, not exported: no child process sees the verifiers)
    AFTER_RECOVERY_SQL=$INTO_ROLES_SQL
    where=$(recover "$stage" "$INTO_PORT" "nothing of the live group changed" \
        -c archive_mode=off -c logging_collector=off) || {
        run_as rm -rf -- "$stage"
        exit 1
    }
    # Patroni caches the dynamic configuration in the data directory and starts
    # PostgreSQL with it while its DCS has none: the live group's (its archive
    # command among it) must not follow the data into the new group.
    run_as rm -f -- "$stage/pgdata/patroni.dynamic.json" || die "cannot remove $stage/pgdata/patroni.dynamic.json"
    # Handed over: the new group's node directory, its user, its dbfleet marker.
    if ! { mkdir -p -- "$INTO_NODE_DIR" && chmod 0700 -- "$INTO_NODE_DIR" &&
        mv -- "$stage/pgdata" "$INTO_NODE_DIR/pgdata" && chown -R -- "$INTO_USER:" "$INTO_NODE_DIR"; }; then
        die "cannot move the restored data into $INTO_NODE_DIR"
    fi
    run_as rm -rf -- "$stage" || warn "could not remove $stage"
    RUN_AS=$INTO_USER mark_dir "$INTO_NODE_DIR" "postgresql node"
    printf '%s: %s restored to %s %s (at %s) into %s in %s\n' \
        "$SCRIPT_NAME" "$STANZA" "$RESTORE_TYPE" "${RESTORE_TARGET:-}" "$where" "$INTO_NODE_DIR" "$(elapsed)"
}

check_inputs
case "${1:-}" in
info) do_info ;;
backup) do_backup ;;
restore) do_restore ;;
restore-fence) do_restore_fence ;;
restore-stop) do_restore_stop ;;
restore-node) do_restore_node ;;
restore-clear) do_restore_clear ;;
restore-into) do_restore_into ;;
*) die "usage: $SCRIPT_NAME info|backup|restore|restore-fence|restore-stop|restore-node|restore-clear|restore-into (configuration in the environment)" ;;
esac
