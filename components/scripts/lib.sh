# shellcheck shell=bash
# Variables defined here are used by the scripts that source this file:
# shellcheck disable=SC2034
#
# lib.sh - helpers shared by every dbfleet host script (account.sh,
# haproxy.sh and the PostgreSQL scripts, which also source pg_lib.sh):
# messages, input checks, secrets, acting as RUN_AS, files, markers, locks
# and processes.  Source it, do not run it:
#
#     . "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"
#
# HostScript (components/hostcmd.py) ships a script to its host as one
# program on standard input: it replaces such a line by the file itself, so
# only files sourced exactly this way travel with a script.
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
PGBOUNCER_BIN=${PGBOUNCER_BIN:-/usr/sbin/pgbouncer}
# Marker file placed in every directory dbfleet creates under DATA_ROOT
# (node and proxy directories).  account.sh delete and the scripts' delete
# actions refuse to remove directories without it.
DBFLEET_MARKER=.dbfleet
# Marker placed in DATA_ROOT itself by account.sh create.
DBFLEET_ROOT_MARKER=.dbfleet-root
# Every marker (those files, and the GECOS of the OS users account.sh
# creates) names the fleet that made the thing when FLEET_NAME is given (the
# `name:` of the fleet file): "fleet=<name>".  Fleets on one host may use the
# same group names; a fleet takes over or removes only what its own name
# marks (see may_claim).
# Exit code of a script's `check` action when the host has drifted from what
# was declared (a stopped database, a missing proxy): the engine then plans
# an update, and create|update repairs it.  The one definition: HostScript
# (components/hostcmd.py) reads the number from this line.
DRIFT_EXIT_CODE=3
# Names of environment variables that carry secrets.
SECRET_VARS=(PG_SUPERUSER_PASSWORD PG_REPLICATION_PASSWORD PG_APP_PASSWORD TLS_KEY)

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

# check_bind NAME VALUE : an address this host may listen on: a loopback
# address on the local target; any IPv4 address of the host on the ssh target
# (TARGET=ssh), whose firewall (firewall.sh) decides who may connect.
check_bind() {
    if [[ "${TARGET:-local}" == ssh ]]; then
        check_ipv4 "$1" "$2"
    else
        check_loopback "$1" "$2"
    fi
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

# write_tls DIR : a server's certificate, private key and its group's CA from
# TLS_CERT, TLS_KEY (secret) and TLS_CA (PEM, base64-encoded: one printable
# line each) to DIR/server.crt, DIR/server.key and DIR/ca.crt (DIR 0700, files
# 0600, as RUN_AS).  Returns 0 when a file changed, 1 when all were current.
write_tls() {
    local dir=$1 changed=1 name var pem
    make_dirs "$dir"
    for name in server.crt:TLS_CERT server.key:TLS_KEY ca.crt:TLS_CA; do
        var=${name#*:}
        [[ -n "${!var:-}" ]] || die "$var is not set (the server's TLS material)"
        pem=$(base64 -d <<<"${!var}" 2>/dev/null) || die "$var is not base64-encoded PEM"
        [[ "$pem" == "-----BEGIN "* ]] || die "$var is not a PEM certificate or key"
        if printf '%s\n' "$pem" | put_file "$dir/${name%%:*}"; then changed=0; fi
    done
    return "$changed"
}

# ca_pem : the group's CA certificate from TLS_CA (PEM, base64-encoded).
ca_pem() {
    local pem
    [[ -n "${TLS_CA:-}" ]] || die "TLS_CA is not set (the group's CA certificate)"
    pem=$(base64 -d <<<"$TLS_CA" 2>/dev/null) || die "TLS_CA is not base64-encoded PEM"
    [[ "$pem" == "-----BEGIN CERTIFICATE-----"* ]] || die "TLS_CA is not a PEM certificate"
    printf '%s\n' "$pem"
}

# write_ca DIR : the group's CA (TLS_CA) to DIR/ca.crt (DIR 0700, the file
# 0600, as RUN_AS), for a client that verifies the group's servers.  Returns 0
# when the file changed, 1 when it was current.
write_ca() {
    local pem
    pem=$(ca_pem) || exit 1
    make_dirs "$1"
    printf '%s\n' "$pem" | put_file "$1/ca.crt"
}

# ca_tempfile : the group's CA (TLS_CA) in a private temporary file that is
# removed when the script exits, for curl's --cacert; sets CA_FILE.
ca_tempfile() {
    local pem
    pem=$(ca_pem) || exit 1
    CA_FILE=$(mktemp "${TMPDIR:-/tmp}/dbfleet-ca.XXXXXX") || die "cannot create a temporary file"
    # shellcheck disable=SC2064  # the name is fixed now
    trap "rm -f -- '$CA_FILE'" EXIT
    printf '%s\n' "$pem" >"$CA_FILE"
}

# make_dirs DIR... : create directories (and parents) as RUN_AS, mode 0700.
make_dirs() {
    run_as mkdir -p -m 0700 -- "$@" ||
        die "cannot create $* as user $RUN_AS (does its parent exist and belong to $RUN_AS?)"
}

# check_fleet : FLEET_NAME, when given, is a fleet name (a DNS label).
check_fleet() {
    [[ -z "${FLEET_NAME:-}" || "$FLEET_NAME" =~ ^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$ ]] ||
        die "FLEET_NAME '$FLEET_NAME' is not a fleet name"
}

# fleet_mark : the "fleet=<name>" part of a marker ("" without FLEET_NAME).
fleet_mark() { if [[ -n "${FLEET_NAME:-}" ]]; then printf 'fleet=%s' "$FLEET_NAME"; fi; }

# marker_fleet FILE : the fleet a marker file names; "" for a marker
# written before markers named their fleet.
marker_fleet() { sed -n 's/^fleet=//p' -- "$1" | head -n 1; }

# may_claim OWNER NAME : this fleet may take over or remove a thing marked
# by fleet OWNER and named NAME (a user name; the last component of a data
# root, or of the data root holding a node or proxy directory).  Only its
# own marks, with one exception for markers made before they named a fleet
# (OWNER ""): those stay usable by the fleet that made them, recognised by
# the names a fleet gives what it makes ("<fleet>-<group>", see
# dbfleet/program/layers/context.py), or by the absence of FLEET_NAME (a
# resource deployed before FLEET_NAME was an input; its next update passes
# it and rewrites the marker).
may_claim() {
    local owner=$1 name=$2
    if [[ -n "$owner" ]]; then
        [[ "$owner" == "${FLEET_NAME:-}" ]]
    else
        [[ -z "${FLEET_NAME:-}" || "$name" == "$FLEET_NAME"-* ]]
    fi
}

# not_ours OWNER : why may_claim refused, for a message.
not_ours() {
    if [[ -z "$1" ]]; then
        printf 'has a marker naming no fleet and is not named like what fleet %s makes' "$FLEET_NAME"
    elif [[ -z "${FLEET_NAME:-}" ]]; then
        printf 'belongs to fleet %s (and this resource names no fleet)' "$1"
    else
        printf 'belongs to fleet %s, not to fleet %s' "$1" "$FLEET_NAME"
    fi
}

# mark_dir DIR KIND : write the dbfleet marker into DIR (idempotent; an
# older marker is rewritten to name this fleet).
mark_dir() {
    {
        printf 'dbfleet managed %s\n' "$2"
        [[ -z "${FLEET_NAME:-}" ]] || printf '%s\n' "$(fleet_mark)"
    } | put_file "$1/$DBFLEET_MARKER" || true
}

# claim_dir DIR VERB : DIR (a node or proxy directory in a data root) is
# absent, empty, or carries a dbfleet marker of this fleet (may_claim);
# otherwise die, naming its owner ("refusing to VERB it").
claim_dir() {
    local dir=$1 verb=$2 owner
    [[ -e "$dir" ]] || return 0
    [[ -d "$dir" && ! -L "$dir" ]] || die "$dir is not a directory; refusing to $verb it"
    if [[ -f "$dir/$DBFLEET_MARKER" ]]; then
        owner=$(marker_fleet "$dir/$DBFLEET_MARKER")
        may_claim "$owner" "$(basename -- "$(dirname -- "$dir")")" ||
            die "$dir $(not_ours "$owner"); refusing to $verb it"
    elif [[ -n "$(ls -A -- "$dir")" ]]; then
        die "$dir exists, is not empty and was not created by dbfleet; refusing to $verb it"
    fi
}

# safe_remove_dir DIR : rm -rf DIR, but only if claim_dir allows it.
safe_remove_dir() {
    claim_dir "$1" remove
    [[ -e "$1" ]] || return 0
    rm -rf -- "$1" || die "cannot remove $1"
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
