#!/usr/bin/env bash
#
# pg_replica.sh create|update|delete - a PostgreSQL 15 streaming standby.
#
# Environment (create/update):
#   RUN_AS                   OS user owning and running the node (not root)
#   NODE_DIR                 absolute node directory (same layout as
#                            pg_primary.sh: pgdata/, run/, log/postgresql.log)
#                            plus $NODE_DIR/replication.pgpass (0600), the
#                            passfile named in primary_conninfo
#   PG_HOST, PG_PORT         this node's listen address (127.0.0.0/8) / port
#   PRIMARY_HOST, PRIMARY_PORT   the primary to follow
#   SLOT                     physical replication slot on the primary (must
#                            exist: list it in the primary's REPLICA_SLOTS)
#   ALLOWED_HOSTS            space-separated IPv4 addresses for pg_hba.conf
#                            (same rules as the primary, so a promoted
#                            standby is immediately usable)
#   PG_REPLICATION_PASSWORD  password of role "replicator" on the primary
#   PG_SUPERUSER_PASSWORD    password of "postgres" (local checks, pg_rewind)
# delete needs only RUN_AS and NODE_DIR.
#
# create and update are the same idempotent operation, by state of PGDATA:
#   * missing: pg_basebackup from the primary as replicator through the
#     passfile (-S SLOT -X stream --checkpoint=fast) into a scratch
#     directory, then standby.signal and rename to pgdata.  -R is not used:
#     it would write primary_conninfo into postgresql.auto.conf, which
#     overrides our include file; the standby settings live in the dbfleet
#     include instead, with passfile= and never a password.
#   * a standby (standby.signal): started if it is down (a killed
#     postmaster comes back; its stale postmaster.pid is handled).  If SLOT
#     changed, primary_slot_name is updated with a reload.  If PRIMARY_*
#     changed (the group's primary moved), the standby is stopped, passed
#     through pg_rewind (which does nothing unless this standby had
#     received WAL the new primary never got - then it could not follow
#     without it) and started against the new primary.
#   * a data directory that is NOT a standby (typically the old primary
#     after its group's primary moved): it is stopped and rewound with
#     pg_rewind --source-server (as postgres; the data checksums initdb
#     enabled make that possible), then configured as a standby.  No data
#     is ever deleted here: if pg_rewind fails the script dies, naming
#     NODE_DIR, and leaves the directory as it is.  Inactive slots this node
#     had created as a primary are dropped afterwards.
#   Finally it waits (30 s) until the node is in recovery and its WAL
#   receiver is streaming from PRIMARY_HOST:PRIMARY_PORT.
#
# Output: one summary line on stdout; progress/errors on stderr.
set -euo pipefail

# shellcheck source=SCRIPTDIR/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=SCRIPTDIR/pg_lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/pg_lib.sh"

# base_backup : clone the primary into a scratch directory, then rename, so
# an interrupted run never leaves a half-copied PGDATA behind.
base_backup() {
    local scratch=$NODE_DIR/pgdata.partial
    if [[ -d "$PGDATA_DIR" ]]; then
        [[ -z "$(ls -A -- "$PGDATA_DIR")" ]] ||
            die "$PGDATA_DIR exists without PG_VERSION and is not empty; refusing to overwrite it"
        rmdir -- "$PGDATA_DIR"
    fi
    rm -rf -- "$scratch"
    info "base backup of $PRIMARY_HOST:$PRIMARY_PORT (slot $SLOT) into $PGDATA_DIR"
    if ! PGPASSFILE=$REPL_PASSFILE PGCONNECT_TIMEOUT=10 run_as_logged "$LOG_DIR/basebackup.log" \
        "$PG_BIN/pg_basebackup" -h "$PRIMARY_HOST" -p "$PRIMARY_PORT" -U replicator --no-password \
        -D "$scratch" -S "$SLOT" -X stream --checkpoint=fast; then
        rm -rf -- "$scratch"
        tail -n 5 "$LOG_DIR/basebackup.log" >&2
        # Name the cause (a full disk, a refused connection...) in the error itself.
        local cause avail_kb
        cause=$(grep -m1 -E 'error:|FATAL:' "$LOG_DIR/basebackup.log" 2>/dev/null |
            sed 's/^pg_basebackup: error: //' | cut -c1-300 || true)
        # A full disk may not even leave room for the log to say so.
        avail_kb=$(df -Pk -- "$NODE_DIR" 2>/dev/null | awk 'NR == 2 { print $4 }' || true)
        if [[ "$avail_kb" =~ ^[0-9]+$ ]] && ((avail_kb < 32768)); then
            cause="not enough space left on device: ${avail_kb} KiB free on the file system of $NODE_DIR${cause:+; $cause}"
        fi
        die "pg_basebackup from $PRIMARY_HOST:$PRIMARY_PORT into $NODE_DIR failed: ${cause:-unknown cause} (see $LOG_DIR/basebackup.log)"
    fi
    run_as touch -- "$scratch/standby.signal"
    run_as mv -- "$scratch" "$PGDATA_DIR"
}

# rewind WHY : stop the node and pg_rewind it from PRIMARY_HOST:PORT, then
# mark it as a standby.  pg_rewind is a no-op ("no rewind required") when
# the node's WAL has not diverged from the source's history.  Sets REWOUND
# to "rewound" or "no rewind needed".
rewind() {
    info "$PGDATA_DIR $1: stopping it and rewinding it from $PRIMARY_HOST:$PRIMARY_PORT"
    # pg_rewind needs a cleanly stopped target.  It can finish crash
    # recovery of a crashed primary itself, but not of a standby (single-
    # user mode has no standby mode): bring a crashed standby up and down.
    local state
    if [[ -f "$PGDATA_DIR/standby.signal" ]] && ! pg_running; then
        state=$(run_as "$PG_BIN/pg_controldata" -D "$PGDATA_DIR" |
            sed -n 's/^Database cluster state: *//p')
        if [[ "$state" != "shut down" && "$state" != "shut down in recovery" ]]; then
            info "$PGDATA_DIR was not shut down cleanly ($state): starting it once"
            pg_start || true
        fi
    fi
    pg_stop
    wait_for 30 "postgres processes in $PGDATA_DIR to exit" pg_no_procs ||
        die "postgres processes still use $PGDATA_DIR; cannot rewind $NODE_DIR"
    # A freshly promoted source writes its new timeline to its control file
    # only at its next checkpoint; pg_rewind reads the timeline from there, so
    # without this checkpoint the rewound node cannot follow the new timeline
    # ("requested timeline N does not contain minimum recovery point").
    PGPASSWORD=$PG_SUPERUSER_PASSWORD PGCONNECT_TIMEOUT=10 run_as "$PG_BIN/psql" -X -q -w \
        -h "$PRIMARY_HOST" -p "$PRIMARY_PORT" -U postgres -d postgres -c CHECKPOINT >&2 ||
        die "could not reach the primary $PRIMARY_HOST:$PRIMARY_PORT to rewind $NODE_DIR from it"
    # A crashed (not cleanly stopped) target is first brought to a
    # consistent state by pg_rewind itself (single-user crash recovery).
    if ! PGPASSWORD=$PG_SUPERUSER_PASSWORD PGCONNECT_TIMEOUT=10 run_as_logged "$LOG_DIR/pg_rewind.log" \
        "$PG_BIN/pg_rewind" --target-pgdata="$PGDATA_DIR" \
        --source-server="host=$PRIMARY_HOST port=$PRIMARY_PORT user=postgres dbname=postgres"; then
        tail -n 5 "$LOG_DIR/pg_rewind.log" >&2
        die "pg_rewind of $NODE_DIR from $PRIMARY_HOST:$PRIMARY_PORT failed; its data was left in place (see $LOG_DIR/pg_rewind.log). To re-clone it instead, remove $PGDATA_DIR and rerun."
    fi
    if grep -q 'no rewind required' "$LOG_DIR/pg_rewind.log"; then
        REWOUND="no rewind needed"
    else
        REWOUND=rewound
    fi
    # pg_rewind copied the source's configuration files (ours are rewritten
    # below) and may have dropped standby.signal: mark it as a standby.
    run_as touch -- "$PGDATA_DIR/standby.signal"
}

# current_upstream : "host:port" from the primary_conninfo in our include
# file (empty if there is none).
current_upstream() {
    local line
    line=$(grep -m1 '^primary_conninfo' "$PGDATA_DIR/conf.d/dbfleet.conf" 2>/dev/null) || return 0
    [[ "$line" =~ host=([0-9.]+)\ port=([0-9]+) ]] &&
        printf '%s:%s' "${BASH_REMATCH[1]}" "${BASH_REMATCH[2]}"
    return 0
}

# drop_old_primary_slots : slots this node created while it was a primary
# would pin WAL on the standby forever; drop the inactive ones.
drop_old_primary_slots() {
    [[ -f "$SLOTS_STATE" ]] || return 0
    local s
    while read -r s; do
        [[ "$s" =~ ^[a-z0-9_]+$ ]] || continue
        pg_psql -c "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
                     WHERE slot_name = '$s' AND NOT active" >/dev/null ||
            warn "could not drop old slot $s on $NODE_DIR"
    done <"$SLOTS_STATE"
    rm -f -- "$SLOTS_STATE"
}

streaming_sql() {
    printf '%s' "SELECT pg_is_in_recovery() AND EXISTS (SELECT 1 FROM pg_stat_wal_receiver
        WHERE status = 'streaming' AND sender_host = '$PRIMARY_HOST' AND sender_port = $PRIMARY_PORT)"
}

do_create() {
    require_env PG_REPLICATION_PASSWORD PG_SUPERUSER_PASSWORD PRIMARY_HOST PRIMARY_PORT SLOT
    pg_check_common
    check_loopback PRIMARY_HOST "$PRIMARY_HOST"
    check_port PRIMARY_PORT "$PRIMARY_PORT"
    check_ident SLOT "$SLOT"
    [[ "$PRIMARY_HOST:$PRIMARY_PORT" != "$PG_HOST:$PG_PORT" ]] ||
        die "PRIMARY_HOST:PRIMARY_PORT is this node's own address"

    pg_init_vars
    pg_prepare_node_dir "postgresql node"
    local done_=()

    # Passfile used by pg_basebackup and by the WAL receiver (primary_conninfo
    # names it).  Rewritten when the replication password changes.
    if printf '*:*:replication:replicator:%s\n' "$(pgpass_escape "$PG_REPLICATION_PASSWORD")" |
        put_file "$REPL_PASSFILE"; then
        [[ -f "$PGDATA_DIR/PG_VERSION" ]] && done_+=("passfile updated")
    fi

    # 1. Data directory.
    local upstream
    if [[ ! -f "$PGDATA_DIR/PG_VERSION" ]]; then
        base_backup
        done_+=("base backup")
    elif [[ ! -f "$PGDATA_DIR/standby.signal" ]]; then
        rewind "is not a standby (a former primary?)"
        done_+=("$REWOUND")
    else
        # A standby that is to follow a different server: the group's
        # primary moved.  If this standby had received WAL the new primary
        # never got, it cannot follow it without a rewind; pg_rewind finds
        # out (and does nothing otherwise).  Costs one restart.
        upstream=$(current_upstream)
        if [[ "$upstream" != "$PRIMARY_HOST:$PRIMARY_PORT" ]]; then
            rewind "follows ${upstream:-nothing}, is to follow $PRIMARY_HOST:$PRIMARY_PORT"
            done_+=("re-pointed from ${upstream:-nothing} ($REWOUND)")
        fi
    fi

    # 2. Configuration, including where to stream from.
    pg_write_node_files \
        "primary_conninfo = 'host=$PRIMARY_HOST port=$PRIMARY_PORT user=replicator passfile=$REPL_PASSFILE application_name=$SLOT connect_timeout=5'" \
        "primary_slot_name = '$SLOT'"

    # 3. Running, with the current configuration.
    local r
    if pg_start; then
        done_+=(started)
    else
        r=$(pg_apply_config "$CONF_CHANGED")
        [[ "$r" == unchanged ]] || done_+=("$r")
    fi
    pg_psql -c "SELECT 1" >/dev/null 2>&1 ||
        die "cannot log in as postgres over $RUN_DIR (wrong PG_SUPERUSER_PASSWORD?)"
    drop_old_primary_slots

    # 4. Streaming from the right primary.
    if ! wait_for 30 "$NODE_DIR to stream from $PRIMARY_HOST:$PRIMARY_PORT" \
        pg_sql_true "$(streaming_sql)"; then
        tail -n 5 "$LOG_FILE" >&2 || true
        die "$NODE_DIR is not streaming from $PRIMARY_HOST:$PRIMARY_PORT (slot $SLOT) after 30 s (see $LOG_FILE)"
    fi

    local what="no changes"
    if ((${#done_[@]} > 0)); then
        what=$(printf '%s, ' "${done_[@]}")
        what=${what%, }
    fi
    printf '%s: replica %s:%s (%s) streaming from %s:%s slot %s, ready in %s: %s\n' \
        "$SCRIPT_NAME" "$PG_HOST" "$PG_PORT" "$NODE_DIR" "$PRIMARY_HOST" "$PRIMARY_PORT" \
        "$SLOT" "$(elapsed)" "$what"
}

do_delete() {
    check_run_as
    require_env NODE_DIR
    check_abs_path NODE_DIR
    pg_delete_node
}

protect_secrets

case "${1:-}" in
create | update) do_create ;;
delete) do_delete ;;
check) pg_drift_check standby ;;
*) die "usage: $SCRIPT_NAME create|update|delete|check (configuration in the environment)" ;;
esac
