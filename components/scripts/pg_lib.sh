# shellcheck shell=bash
# Variables defined here are used by the scripts that source this file:
# shellcheck disable=SC2034
#
# pg_lib.sh - PostgreSQL helpers shared by pg_primary.sh, pg_replica.sh and
# pg_fence.sh: a node's paths, its processes, start/stop/reload, its
# configuration files, delete and the drift probe.  Source it after lib.sh,
# whose conventions (see there) it follows:
#
#     . "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"
#     . "$(dirname -- "${BASH_SOURCE[0]}")/pg_lib.sh"
#
# HostScript ships a script as one program: it inlines both files in place of
# these lines (components/hostcmd.py).


# Settings that must be identical on a primary and its standbys (a hot
# standby refuses to run with max_wal_senders lower than its primary's),
# so they are constants rather than inputs.
PG_MAX_WAL_SENDERS=16
PG_MAX_REPLICATION_SLOTS=16
PG_WAL_KEEP_SIZE=256MB

# pg_init_vars : derive the per-node paths from NODE_DIR.
pg_init_vars() {
    PGDATA_DIR=$NODE_DIR/pgdata
    RUN_DIR=$NODE_DIR/run
    LOG_DIR=$NODE_DIR/log
    LOG_FILE=$LOG_DIR/postgresql.log
    STARTUP_LOG=$LOG_DIR/startup.log
    SLOTS_STATE=$NODE_DIR/dbfleet-slots
    REPL_PASSFILE=$NODE_DIR/replication.pgpass
}

# pg_check_common : validation shared by primary and replica.
pg_check_common() {
    check_run_as
    check_fleet
    [[ "$RUN_AS" != root ]] || die "RUN_AS must not be root: PostgreSQL refuses to run as root"
    require_env NODE_DIR PG_HOST PG_PORT
    check_abs_path NODE_DIR
    check_loopback PG_HOST "$PG_HOST"
    check_port PG_PORT "$PG_PORT"
    local a
    for a in ${ALLOWED_HOSTS:-}; do check_ipv4 ALLOWED_HOSTS "$a"; done
    [[ -x "$PG_BIN/postgres" ]] || die "PostgreSQL binaries not found in $PG_BIN"
}

# pg_procs : pids of postgres processes (postmaster or children) whose
# working directory is this node's PGDATA.  Postgres chdirs into its data
# directory, which identifies a node's processes without trusting pid
# files.  (As non-root we can only see our own processes - which are the
# only ones that can use our data directory anyway.)
pg_procs() {
    local p
    [[ -d "$PGDATA_DIR" ]] || return 0
    # [[ A -ef B ]] compares device and inode after following symlinks:
    # no process is forked per /proc entry.
    for p in /proc/[0-9]*; do
        if [[ "$p/cwd" -ef "$PGDATA_DIR" && "$p/exe" -ef "$PG_BIN/postgres" ]]; then
            printf '%s\n' "${p#/proc/}"
        fi
    done
}

# pg_postmaster_pid : the pid recorded in postmaster.pid (empty if none).
pg_postmaster_pid() {
    local pid=
    [[ -f "$PGDATA_DIR/postmaster.pid" ]] && read -r pid <"$PGDATA_DIR/postmaster.pid"
    printf '%s' "$pid"
}

# pg_running : the postmaster recorded in postmaster.pid is alive and is a
# postgres process working in our PGDATA.
pg_running() {
    local pid procs
    pid=$(pg_postmaster_pid)
    [[ -n "$pid" ]] || return 1
    procs=$(pg_procs)
    [[ $'\n'"$procs"$'\n' == *$'\n'"$pid"$'\n'* ]]
}

# pg_no_procs : no postgres process is using our PGDATA.
pg_no_procs() { [[ -z "$(pg_procs)" ]]; }

# pg_pidfile_field N : line N of postmaster.pid (4 = port, 5 = socket dir).
pg_pidfile_field() { sed -n "${1}p" "$PGDATA_DIR/postmaster.pid" 2>/dev/null; }

# pg_psql [PSQL ARGS...] : psql as postgres over this node's unix socket,
# using the port/socket of the *running* server (they may differ from the
# configuration until a restart).  The superuser password is passed in the
# environment of psql only.  Unaligned, tuples-only, stop on error.
pg_psql() {
    local port sockdir
    port=$(pg_pidfile_field 4)
    sockdir=$(pg_pidfile_field 5)
    PGPASSWORD=$PG_SUPERUSER_PASSWORD PGCONNECT_TIMEOUT=10 \
        run_as "$PG_BIN/psql" -X -q -A -t -v ON_ERROR_STOP=1 \
        -h "${sockdir:-$RUN_DIR}" -p "${port:-$PG_PORT}" -U postgres -d postgres "$@"
}

# pg_sql_true SQL : the query returns exactly "t".
pg_sql_true() { [[ "$(pg_psql -c "$1" 2>/dev/null)" == t ]]; }

# pg_start : start the node unless it is running.  A postmaster.pid left
# by a killed postmaster is only removed once no postgres process uses the
# data directory any more (surviving children of a killed postmaster exit
# by themselves within moments; starting before that would be unsafe).
# Returns 0 if it started the server, 1 if it was already running.
pg_start() {
    pg_running && return 1
    local lock
    if [[ -e "$PGDATA_DIR/postmaster.pid" ]]; then
        wait_for 30 "orphaned postgres processes in $PGDATA_DIR to exit" pg_no_procs ||
            die "postgres processes still use $PGDATA_DIR but the postmaster is gone; not starting"
        info "removing stale $PGDATA_DIR/postmaster.pid (pid $(pg_postmaster_pid) is not a running postgres)"
        rm -f -- "$PGDATA_DIR/postmaster.pid"
    fi
    # Same for the socket lock files in our private socket directory.
    # (postgres would do it itself, except when the recorded pid still
    # exists - e.g. as a zombie not yet reaped, or reused by another
    # process - and then it refuses to start.)
    for lock in "$RUN_DIR"/.s.PGSQL.*.lock; do
        [[ -e "$lock" ]] || continue
        pg_no_procs || break
        rm -f -- "$lock"
    done
    if ! run_as "$PG_BIN/pg_ctl" start -D "$PGDATA_DIR" -w -t 120 -s -l "$STARTUP_LOG" >&2; then
        tail -n 20 "$STARTUP_LOG" "$LOG_FILE" >&2 2>/dev/null || true
        die "PostgreSQL in $NODE_DIR did not start (see $LOG_FILE)"
    fi
    return 0
}

# pg_stop : fast shutdown if running (waits up to 120 s).
pg_stop() {
    pg_running || return 0
    run_as "$PG_BIN/pg_ctl" stop -D "$PGDATA_DIR" -m fast -w -t 120 -s >&2 ||
        die "could not stop PostgreSQL in $NODE_DIR"
}

# pg_restart : fast restart (for settings that need one).
pg_restart() {
    run_as "$PG_BIN/pg_ctl" restart -D "$PGDATA_DIR" -m fast -w -t 120 -s -l "$STARTUP_LOG" >&2 ||
        die "could not restart PostgreSQL in $NODE_DIR (see $LOG_FILE)"
}

# pg_reloaded_since TIME : pg_conf_load_time() differs from TIME.
pg_reloaded_since() { [[ "$(pg_psql -c "SELECT pg_conf_load_time()" 2>/dev/null)" != "$1" ]]; }

# pg_apply_config CONF_CHANGED : bring a running server in line with its
# files.  CONF_CHANGED=1 -> reload; if a changed setting needs a restart
# (pending_restart), restart.  Prints "reloaded"/"restarted"/"unchanged".
pg_apply_config() {
    if [[ "$1" != 1 ]]; then
        echo unchanged
        return 0
    fi
    # Reload, then wait until a new session sees the new configuration
    # (new backends inherit the postmaster's load time), and ask whether
    # any changed setting only takes effect after a restart.
    local before pending
    before=$(pg_psql -c "SELECT pg_conf_load_time()")
    run_as "$PG_BIN/pg_ctl" reload -D "$PGDATA_DIR" -s >&2 || die "reload of $NODE_DIR failed"
    wait_for 30 "PostgreSQL in $NODE_DIR to reload its configuration" \
        pg_reloaded_since "$before" || die "PostgreSQL in $NODE_DIR did not reload"
    pending=$(pg_psql -c "SELECT string_agg(name, ',') FROM pg_settings WHERE pending_restart")
    if [[ -n "$pending" ]]; then
        info "restarting $NODE_DIR for: $pending"
        pg_restart
        echo restarted
    else
        echo reloaded
    fi
}

# pg_ensure_include : postgresql.conf includes conf.d/dbfleet.conf (the
# include comes last, so dbfleet's settings win over the initdb defaults).
pg_ensure_include() {
    local line="include = 'conf.d/dbfleet.conf'	# dbfleet managed, keep last"
    make_dirs "$PGDATA_DIR/conf.d"
    if ! grep -qxF -- "$line" "$PGDATA_DIR/postgresql.conf"; then
        # shellcheck disable=SC2016
        printf '%s\n' "$line" |
            run_as bash -c 'cat >>"$1"' append "$PGDATA_DIR/postgresql.conf" ||
            die "cannot edit $PGDATA_DIR/postgresql.conf"
        return 0
    fi
    return 1
}

# pg_render_conf [EXTRA LINES] : the dbfleet include file for this node.
pg_render_conf() {
    cat <<EOF
# Managed by dbfleet ($SCRIPT_NAME); rewritten on every run - do not edit.
# Connections: this node's loopback address only, and a private socket
# directory (nodes of different regions share port numbers; a shared socket
# directory would make their .s.PGSQL.<port>.lock files collide).
listen_addresses = '$PG_HOST'
port = $PG_PORT
unix_socket_directories = '$RUN_DIR'
unix_socket_permissions = 0700
password_encryption = 'scram-sha-256'

# Replication (identical on primaries and standbys, see pg_lib.sh).
wal_level = replica
wal_log_hints = on
max_wal_senders = $PG_MAX_WAL_SENDERS
max_replication_slots = $PG_MAX_REPLICATION_SLOTS
wal_keep_size = '$PG_WAL_KEEP_SIZE'
hot_standby = on

# Logging: one file under NODE_DIR/log, private; never log statement text
# (dbfleet never sends clear-text passwords, but applications might).
logging_collector = on
log_destination = 'stderr'
log_directory = '$LOG_DIR'
log_filename = 'postgresql.log'
log_file_mode = 0600
log_rotation_age = 0
log_rotation_size = 0
log_truncate_on_rotation = off
log_line_prefix = '%m [%p] %q%u@%d '
log_statement = 'none'
log_min_duration_statement = -1
EOF
    if (($# > 0)); then
        printf '\n# Standby settings.\n'
        printf '%s\n' "$@"
    fi
}

# pg_render_hba : pg_hba.conf - the superuser over the local socket, and
# from each ALLOWED_HOSTS address (/32) any role to any database plus the
# replicator role for replication.  SCRAM everywhere; nothing else.
pg_render_hba() {
    local a
    cat <<'EOF'
# Managed by dbfleet; rewritten on every run - do not edit.
# TYPE  DATABASE     USER        ADDRESS              METHOD
local   all          postgres                         scram-sha-256
EOF
    for a in ${ALLOWED_HOSTS:-}; do
        printf 'host    all          all         %-20s scram-sha-256\n' "$a/32"
        printf 'host    replication  replicator  %-20s scram-sha-256\n' "$a/32"
    done
}

# pgpass_escape VALUE : escape ":" and "\" for a .pgpass field.
pgpass_escape() {
    local v=${1//\\/\\\\}
    printf '%s' "${v//:/\\:}"
}

# pg_write_node_files [STANDBY LINES] : ensure include line, dbfleet.conf
# and pg_hba.conf.  Sets CONF_CHANGED=1 when anything changed.
pg_write_node_files() {
    CONF_CHANGED=0
    if pg_ensure_include; then CONF_CHANGED=1; fi
    if pg_render_conf "$@" | put_file "$PGDATA_DIR/conf.d/dbfleet.conf"; then CONF_CHANGED=1; fi
    if pg_render_hba | put_file "$PGDATA_DIR/pg_hba.conf"; then CONF_CHANGED=1; fi
}

# pg_prepare_node_dir KIND : NODE_DIR and its run/log directories exist
# (0700, owned by RUN_AS) and carry the marker; take the node lock.
pg_prepare_node_dir() {
    claim_dir "$NODE_DIR" use
    make_dirs "$NODE_DIR" "$RUN_DIR" "$LOG_DIR"
    mark_dir "$NODE_DIR" "postgresql node"
    lock_dir "$NODE_DIR"
}

# pg_delete_node : stop the node if running, remove NODE_DIR.
pg_delete_node() {
    check_fleet
    pg_init_vars
    if [[ -d "$NODE_DIR" ]]; then
        claim_dir "$NODE_DIR" delete
        lock_dir "$NODE_DIR"
        if [[ -f "$PGDATA_DIR/PG_VERSION" ]]; then pg_stop; fi
        wait_for 30 "postgres processes in $PGDATA_DIR to exit" pg_no_procs ||
            die "postgres processes still use $PGDATA_DIR; not removing it"
        safe_remove_dir "$NODE_DIR"
    fi
    printf '%s: deleted %s in %s\n' "$SCRIPT_NAME" "$NODE_DIR" "$(elapsed)"
}

# pg_drift_check primary|standby : read-only drift probe of a node, run by
# every `pulumi preview`/`up` (action `check`). Exits 0 when the node runs in
# the declared role, DRIFT_EXIT_CODE when it is missing, stopped, or in the
# other role (a standby promoted by hand, a primary that is still a standby) -
# the engine then plans an update, and `create|update` repairs it.
pg_drift_check() {
    local want=$1
    require_env NODE_DIR
    pg_init_vars
    [[ -f "$PGDATA_DIR/PG_VERSION" ]] || exit "$DRIFT_EXIT_CODE"
    pg_running || exit "$DRIFT_EXIT_CODE"
    if [[ -f "$PGDATA_DIR/standby.signal" ]]; then
        [[ "$want" == standby ]] || exit "$DRIFT_EXIT_CODE"
    else
        [[ "$want" == primary ]] || exit "$DRIFT_EXIT_CODE"
    fi
    exit 0
}
