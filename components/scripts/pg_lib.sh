# shellcheck shell=bash
# Variables defined here are used by the scripts that source this file:
# shellcheck disable=SC2034
#
# pg_lib.sh - PostgreSQL helpers of patroni.sh (and of any script that
# handles a node's directory): a node's paths, its processes, a clean stop,
# and delete.  Source it after lib.sh,
# whose conventions (see there) it follows:
#
#     . "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"
#     . "$(dirname -- "${BASH_SOURCE[0]}")/pg_lib.sh"
#
# HostScript ships a script as one program: it inlines both files in place of
# these lines (components/hostcmd.py).


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
    check_bind PG_HOST "$PG_HOST"
    check_port PG_PORT "$PG_PORT"
    local a
    for a in ${ALLOWED_HOSTS:-}; do check_ipv4 ALLOWED_HOSTS "${a%/[0-9]*}"; done
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

# pg_stop : fast shutdown if running (waits up to 120 s).
pg_stop() {
    pg_running || return 0
    run_as "$PG_BIN/pg_ctl" stop -D "$PGDATA_DIR" -m fast -w -t 120 -s >&2 ||
        die "could not stop PostgreSQL in $NODE_DIR"
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
