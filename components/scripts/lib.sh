# shellcheck shell=bash
# Variables defined here are used by the scripts that source this file:
# shellcheck disable=SC2034
#
# lib.sh - helpers shared by the dbfleet host scripts (account.sh,
# pg_primary.sh, pg_replica.sh, haproxy.sh).  Source it, do not run it:
#
#     . "$(dirname "${BASH_SOURCE[0]}")/lib.sh"
#
# Conventions used by every script:
#   * all input comes from environment variables; secrets (PG_*_PASSWORD)
#     are never put on a command line, never echoed, and are un-exported as
#     soon as the script starts so that long-running children (postgres,
#     haproxy) do not inherit them.  They are handed to the one command that
#     needs them through a per-command environment assignment
#     (PGPASSWORD=... cmd) or through a 0600 file.
#   * progress and errors go to stderr; the only stdout output is a one-line
#     summary at the end (no secrets in it).
#   * every file a script creates is owned by RUN_AS and created with umask
#     077; directories are 0700.
#   * paths must be absolute and made of "safe" characters
#     ([A-Za-z0-9._/-]); that keeps quoting in postgresql.conf, conninfo
#     strings and haproxy.cfg trivial and safe.

# Deterministic messages/collation in tools; [[:print:]] means ASCII.
export LC_ALL=C
umask 077

SCRIPT_NAME=$(basename -- "$0")
# PostgreSQL 15 server binaries (Debian/Ubuntu layout); overridable for tests.
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
HAPROXY_BIN=${HAPROXY_BIN:-/usr/sbin/haproxy}
# Marker file placed in every directory dbfleet creates under DATA_ROOT
# (node and proxy directories).  account.sh delete and the scripts' delete
# actions refuse to remove directories without it.
DBFLEET_MARKER=.dbfleet
# Marker placed in DATA_ROOT itself by account.sh create.
DBFLEET_ROOT_MARKER=.dbfleet-root
# Names of environment variables that carry secrets.
SECRET_VARS=(PG_SUPERUSER_PASSWORD PG_REPLICATION_PASSWORD PG_APP_PASSWORD)

# Libpq reads these from the environment; a stray value inherited from the
# caller (PGHOST, PGPASSWORD, ...) must not change whom we connect to or
# which password we send.
unset PGHOST PGHOSTADDR PGPORT PGUSER PGDATABASE PGPASSWORD PGPASSFILE \
    PGSERVICE PGSERVICEFILE PGOPTIONS PGTARGETSESSIONATTRS PGAPPNAME \
    PGCONNECT_TIMEOUT PGDATA

# Start time for the summary line, in microseconds.
_T0=${EPOCHREALTIME//[!0-9]/}

# die MESSAGE... : one line on stderr, exit 1.
die() {
    printf '%s: error: %s\n' "$SCRIPT_NAME" "$*" >&2
    exit 1
}

# warn/info MESSAGE... : one line on stderr.
warn() { printf '%s: warning: %s\n' "$SCRIPT_NAME" "$*" >&2; }
info() { printf '%s: %s\n' "$SCRIPT_NAME" "$*" >&2; }

# elapsed : seconds since the script started, e.g. "1.23s".
elapsed() {
    local now=${EPOCHREALTIME//[!0-9]/}
    local cs=$(((now - _T0) / 10000))
    printf '%d.%02ds' $((cs / 100)) $((cs % 100))
}

# require_env VAR... : die unless every VAR is set and non-empty.
require_env() {
    local v
    for v in "$@"; do
        [[ -n "${!v:-}" ]] || die "required environment variable $v is not set"
    done
}

# protect_secrets : stop exporting the secret variables (their values stay
# available to this shell) and check they are single-line printable ASCII,
# which is what the SCRAM helper and the pgpass format below rely on.
protect_secrets() {
    local v
    for v in "${SECRET_VARS[@]}"; do
        if [[ -n "${!v+x}" ]]; then
            export -n "${v?}"
            if [[ "${!v}" == *[![:print:]]* ]]; then
                die "$v must contain printable ASCII characters only"
            fi
        fi
    done
}

# check_abs_path NAME : the variable NAME holds an absolute, safe path that
# is not the root directory.
check_abs_path() {
    local name=$1 val=${!1}
    [[ "$val" == /* ]] || die "$name must be an absolute path (got '$val')"
    [[ "$val" =~ ^[A-Za-z0-9._/-]+$ ]] ||
        die "$name may only contain letters, digits and . _ / - (got '$val')"
    [[ "$val" != *//* && "$val" != */ && "/$val/" != */../* && "/$val/" != */./* ]] ||
        die "$name must be a normalised path without //, trailing /, . or .. (got '$val')"
}

# check_ipv4 NAME VALUE : VALUE is a dotted-quad IPv4 address.
check_ipv4() {
    local name=$1 val=$2 o
    [[ "$val" =~ ^([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})\.([0-9]{1,3})$ ]] ||
        die "$name: '$val' is not an IPv4 address"
    for o in "${BASH_REMATCH[@]:1}"; do
        ((10#$o <= 255)) || die "$name: '$val' is not an IPv4 address"
    done
}

# check_loopback NAME VALUE : VALUE is an address in 127.0.0.0/8 (dbfleet
# only ever binds loopback addresses; every region is one such address).
check_loopback() {
    check_ipv4 "$1" "$2"
    [[ "$2" == 127.* ]] || die "$1: '$2' is not a loopback (127.0.0.0/8) address"
}

# check_port NAME VALUE : VALUE is a TCP port number 1..65535.
check_port() {
    if ! [[ "$2" =~ ^[0-9]{1,5}$ ]] || ((10#$2 < 1 || 10#$2 > 65535)); then
        die "$1: '$2' is not a TCP port number"
    fi
}

# check_hostport NAME VALUE : VALUE is "ipv4:port".
check_hostport() {
    [[ "$2" == *:* ]] || die "$1: '$2' is not host:port"
    check_ipv4 "$1" "${2%:*}"
    check_port "$1" "${2##*:}"
}

# check_ident NAME VALUE : a plain lower-case SQL identifier (role, database
# or replication slot name) that needs no quoting anywhere.
check_ident() {
    [[ "$2" =~ ^[a-z_][a-z0-9_]{0,62}$ ]] ||
        die "$1: '$2' must match [a-z_][a-z0-9_]* (max 63 characters)"
}

# check_run_as : RUN_AS is set, exists, and we are able to act as it (we
# are root, or we already are that user).
check_run_as() {
    require_env RUN_AS
    id -u -- "$RUN_AS" >/dev/null 2>&1 || die "RUN_AS user '$RUN_AS' does not exist"
    if ((EUID != 0)) && [[ "$RUN_AS" != "$(id -un)" ]]; then
        die "running as '$(id -un)', cannot act as RUN_AS='$RUN_AS' (run as root or as $RUN_AS)"
    fi
}

# run_as CMD [ARGS...] : run a command as $RUN_AS.  When we are root and
# RUN_AS is another user this goes through runuser(1), which keeps the
# environment (so per-command assignments like PGPASSWORD=... survive) but
# resets HOME/SHELL/USER/LOGNAME.  The command runs from "/" so that tools
# do not complain about an unreadable current directory.
#
# File descriptor 9 (the node/proxy lock, see lock_dir) is closed for the
# command: a postgres or haproxy started while we hold the lock must not
# inherit it, or it would hold the lock for as long as it runs.
run_as() {
    if ((EUID == 0)) && [[ "${RUN_AS:-root}" != root ]]; then
        (cd / && exec runuser -u "$RUN_AS" -- "$@" 9<&-)
    else
        "$@" 9<&-
    fi
}

# run_as_logged LOGFILE CMD [ARGS...] : run_as with stdout and stderr
# written to LOGFILE (created by RUN_AS, so it belongs to RUN_AS).
run_as_logged() {
    local log=$1
    shift
    # shellcheck disable=SC2016  # expanded by the inner shell
    run_as bash -c 'log=$1; shift; exec "$@" >"$log" 2>&1' run_as_logged "$log" "$@"
}

# wait_for TIMEOUT DESCRIPTION CMD [ARGS...] : run CMD every 0.2 s until it
# succeeds (return 0) or TIMEOUT seconds have passed (warn, return 1).
wait_for() {
    local timeout=$1 desc=$2
    shift 2
    local now deadline
    now=${EPOCHREALTIME//[!0-9]/}
    deadline=$((now + timeout * 1000000))
    while :; do
        if "$@"; then
            return 0
        fi
        now=${EPOCHREALTIME//[!0-9]/}
        if ((now >= deadline)); then
            warn "timed out after ${timeout}s waiting for $desc"
            return 1
        fi
        sleep 0.2
    done
}

# put_file DEST : replace DEST with stdin (as RUN_AS, mode 0600, atomically
# via a temporary file and rename) unless it already has exactly that
# content.  Returns 0 when the file was written, 1 when it was up to date.
# Used for secrets too: the content travels through a pipe only.
put_file() {
    local dest=$1 content current
    content=$(
        cat
        printf x
    )
    content=${content%x}
    if [[ -f "$dest" ]]; then
        current=$(
            cat -- "$dest"
            printf x
        )
        [[ "${current%x}" == "$content" ]] && return 1
    fi
    # shellcheck disable=SC2016  # $1/$$ are expanded by the inner shell
    printf '%s' "$content" |
        run_as bash -c 'umask 077 && cat >"$1.tmp.$$" && mv -f -- "$1.tmp.$$" "$1"' \
            put_file "$dest" ||
        die "cannot write $dest"
    return 0
}

# make_dirs DIR... : create directories (and parents) as RUN_AS, mode 0700.
make_dirs() {
    run_as mkdir -p -m 0700 -- "$@" ||
        die "cannot create $* as user $RUN_AS (does its parent exist and belong to $RUN_AS?)"
}

# mark_dir DIR KIND : write the dbfleet marker into DIR (idempotent).
mark_dir() {
    printf 'dbfleet managed %s\n' "$2" | put_file "$1/$DBFLEET_MARKER" || true
}

# safe_remove_dir DIR : rm -rf DIR, but only if it carries the dbfleet
# marker or is empty; refuse loudly otherwise.
safe_remove_dir() {
    local dir=$1
    [[ -e "$dir" ]] || return 0
    [[ -d "$dir" && ! -L "$dir" ]] || die "$dir is not a directory; refusing to remove it"
    if [[ -f "$dir/$DBFLEET_MARKER" ]] || [[ -z "$(ls -A -- "$dir")" ]]; then
        rm -rf -- "$dir" || die "cannot remove $dir"
    else
        die "$dir has no $DBFLEET_MARKER marker and is not empty; refusing to remove it"
    fi
}

# lock_dir DIR : take an exclusive lock for the rest of the script so that
# two runs against the same node/proxy never interleave (120 s deadline).
lock_dir() {
    local lock=$1/.dbfleet.lock
    [[ -e "$lock" ]] || run_as touch -- "$lock" || die "cannot create $lock"
    exec 9<"$lock"
    flock -w 120 9 || die "another dbfleet run holds $lock (waited 120 s)"
}

# proc_exe_is PID BINARY : PID is alive and is running BINARY.
proc_exe_is() {
    [[ "$1" =~ ^[0-9]+$ && "/proc/$1/exe" -ef "$2" ]]
}

# ---------------------------------------------------------------------
# PostgreSQL helpers (pg_primary.sh, pg_replica.sh)
# ---------------------------------------------------------------------

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

# Replication (identical on primaries and standbys, see lib.sh).
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
    if [[ -e "$NODE_DIR" && ! -f "$NODE_DIR/$DBFLEET_MARKER" && -n "$(ls -A -- "$NODE_DIR")" ]]; then
        die "$NODE_DIR exists, is not empty and was not created by dbfleet; refusing to use it"
    fi
    make_dirs "$NODE_DIR" "$RUN_DIR" "$LOG_DIR"
    mark_dir "$NODE_DIR" "postgresql node"
    lock_dir "$NODE_DIR"
}

# pg_delete_node : stop the node if running, remove NODE_DIR.
pg_delete_node() {
    pg_init_vars
    if [[ -d "$NODE_DIR" ]]; then
        [[ -f "$NODE_DIR/$DBFLEET_MARKER" || -z "$(ls -A -- "$NODE_DIR")" ]] ||
            die "$NODE_DIR was not created by dbfleet; refusing to delete it"
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
# the declared role, 3 (drift) when it is missing, stopped, or in the other
# role (a standby promoted by hand, a primary that is still a standby) - the
# engine then plans an update, and `create|update` repairs it.
pg_drift_check() {
    local want=$1 drift=3
    require_env NODE_DIR
    pg_init_vars
    [[ -f "$PGDATA_DIR/PG_VERSION" ]] || exit "$drift"
    pg_running || exit "$drift"
    if [[ -f "$PGDATA_DIR/standby.signal" ]]; then
        [[ "$want" == standby ]] || exit "$drift"
    else
        [[ "$want" == primary ]] || exit "$drift"
    fi
    exit 0
}
