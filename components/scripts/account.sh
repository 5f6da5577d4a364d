#!/usr/bin/env bash
#
# account.sh create|delete - the OS account and data root of a region group.
#
# Environment:
#   ACCOUNT_USER   the group's OS user (runs its PostgreSQL nodes and proxies)
#   DATA_ROOT      absolute directory holding the group's node/proxy dirs
#   FLEET_NAME     the fleet's name (`name:` of the fleet file); the user and
#                  the data root are marked with it, and only the fleet
#                  they name may take them over or remove them (lib.sh,
#                  may_claim).  Without it (a resource deployed before it was
#                  an input) the markers name no fleet, as they used to.
#   INSTALL_PACKAGES  (ssh target) Debian packages the group's hosts need,
#                  space-separated: the missing ones are installed with apt-get
#                  (as root); installed ones are left alone.
#
# create (idempotent):
#   * as root: if ACCOUNT_USER does not exist, create it as a system user
#     without home directory and login shell, with GECOS
#     "dbfleet managed fleet=<FLEET_NAME>" (that marker is what allows delete
#     to remove it again).  A user marked by another fleet is refused; one
#     with an older marker naming no fleet is re-marked for this fleet if
#     may_claim allows it; any other existing user is used as is and never
#     removed.  As non-root, ACCOUNT_USER must be the current user.
#   * DATA_ROOT: mkdir -p (missing parents 0755), owned by ACCOUNT_USER and
#     its primary group, mode 0700, marked with .dbfleet-root (which names
#     the fleet).  An existing non-empty directory without that marker, or
#     marked by another fleet, is refused.
# delete (idempotent):
#   * first, both are checked: a data root or user marked by another fleet
#     makes delete refuse, in one line, and leave both in place.
#   * DATA_ROOT is removed only if it holds nothing but what this fleet made:
#     its marker, node/proxy directories carrying a .dbfleet marker of this
#     fleet whose postgres/haproxy/pgbouncer is not running, and directories holding
#     only such things.  Anything else makes it refuse, listing what it found.
#   * as root, the user is removed (userdel) only if its GECOS marks it as
#     this fleet's and it runs no processes.
#
# Output: one summary line on stdout; errors on stderr.
set -euo pipefail

# shellcheck source=SCRIPTDIR/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

# The GECOS of the users account.sh creates; " fleet=<name>" follows when
# FLEET_NAME is given.  Markers written before they named a fleet are
# exactly GECOS_PREFIX.
GECOS_PREFIX="dbfleet managed"

# gecos_mark : the GECOS this fleet gives the users it creates.
gecos_mark() { printf '%s' "$GECOS_PREFIX${FLEET_NAME:+ $(fleet_mark)}"; }

# user_gecos USER : the GECOS field of USER.
user_gecos() { getent passwd -- "$1" | cut -d: -f5; }

# user_owner USER : prints the fleet whose marker USER's GECOS carries (""
# for a marker naming no fleet); fails when USER was not made by dbfleet.
user_owner() {
    local gecos
    gecos=$(user_gecos "$1")
    case $gecos in
    "$GECOS_PREFIX") return 0 ;;
    "$GECOS_PREFIX fleet="*) printf '%s' "${gecos#"$GECOS_PREFIX fleet="}" ;;
    *) return 1 ;;
    esac
}

# root_owner : prints the fleet DATA_ROOT's marker names ("" for a marker
# naming no fleet); fails when DATA_ROOT has no marker.
root_owner() {
    [[ -f "$DATA_ROOT/$DBFLEET_ROOT_MARKER" && ! -L "$DATA_ROOT/$DBFLEET_ROOT_MARKER" ]] || return 1
    marker_fleet "$DATA_ROOT/$DBFLEET_ROOT_MARKER"
}

# claim_user VERB : die unless ACCOUNT_USER is not dbfleet's or this fleet may claim it.
claim_user() {
    local owner
    owner=$(user_owner "$ACCOUNT_USER") || return 0
    may_claim "$owner" "$ACCOUNT_USER" ||
        die "user $ACCOUNT_USER $(not_ours "$owner"); refusing to $1 it"
}

# claim_root VERB : die unless DATA_ROOT is unmarked or this fleet may claim it.
claim_root() {
    local owner
    owner=$(root_owner) || return 0
    may_claim "$owner" "${DATA_ROOT##*/}" ||
        die "DATA_ROOT=$DATA_ROOT $(not_ours "$owner"); refusing to $1 it"
}

check_inputs() {
    require_env ACCOUNT_USER DATA_ROOT
    check_fleet
    [[ "$ACCOUNT_USER" =~ ^[a-z_][a-z0-9_-]{0,31}$ ]] ||
        die "ACCOUNT_USER '$ACCOUNT_USER' is not a valid user name"
    check_abs_path DATA_ROOT
    # Refuse the obvious disasters (the marker checks refuse the rest).
    case "$DATA_ROOT" in
    / | /bin | /boot | /dev | /etc | /home | /lib | /lib64 | /opt | /proc | /root | /run | /sbin | \
        /srv | /sys | /tmp | /usr | /var | /var/lib | /var/tmp | /usr/local)
        die "DATA_ROOT=$DATA_ROOT is a system directory"
        ;;
    esac
    if ((EUID != 0)) && [[ "$ACCOUNT_USER" != "$(id -un)" ]]; then
        die "not running as root: ACCOUNT_USER must be the current user ($(id -un)), got '$ACCOUNT_USER'"
    fi
}

# install_packages : the missing INSTALL_PACKAGES, from the host's package manager.
install_packages() {
    local pkg missing=()
    for pkg in ${INSTALL_PACKAGES:-}; do
        [[ "$pkg" =~ ^[a-z0-9][a-z0-9.+-]*$ ]] || die "INSTALL_PACKAGES: '$pkg' is not a package name"
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q 'install ok installed' ||
            missing+=("$pkg")
    done
    ((${#missing[@]})) || return 0
    ((EUID == 0)) || die "packages ${missing[*]} are missing and only root can install them"
    command -v apt-get >/dev/null || die "packages ${missing[*]} are missing and this host has no apt-get (dbfleet needs Debian 12)"
    info "installing ${missing[*]}"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >&2 ||
        die "apt-get could not install ${missing[*]} (is the host's package mirror reachable?)"
    echo "installed ${missing[*]}" >&2
}

do_create() {
    check_inputs
    install_packages
    local done_=() new_root=0
    # Nothing of another fleet is touched: check both before changing either.
    claim_user "take over"
    claim_root "take over"
    if ! getent passwd -- "$ACCOUNT_USER" >/dev/null; then
        ((EUID == 0)) || die "user $ACCOUNT_USER does not exist"
        useradd --system --user-group --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin --comment "$(gecos_mark)" -- "$ACCOUNT_USER" ||
            die "useradd $ACCOUNT_USER failed"
        done_+=("user created")
    elif ((EUID == 0)) && user_owner "$ACCOUNT_USER" >/dev/null &&
        [[ "$(user_gecos "$ACCOUNT_USER")" != "$(gecos_mark)" ]]; then
        # An older marker (claim_user allowed it): name this fleet from now on.
        usermod --comment "$(gecos_mark)" -- "$ACCOUNT_USER" || die "usermod $ACCOUNT_USER failed"
        done_+=("user marked")
    fi
    local group
    group=$(id -gn -- "$ACCOUNT_USER")

    if [[ -e "$DATA_ROOT" ]]; then
        [[ -d "$DATA_ROOT" && ! -L "$DATA_ROOT" ]] || die "DATA_ROOT=$DATA_ROOT exists and is not a directory"
        if [[ ! -f "$DATA_ROOT/$DBFLEET_ROOT_MARKER" && -n "$(ls -A -- "$DATA_ROOT")" ]]; then
            die "DATA_ROOT=$DATA_ROOT exists, is not empty and was not made by dbfleet; refusing to take it over"
        fi
    else
        # Parents must stay traversable by the account whatever our umask is.
        (umask 022 && mkdir -p -- "$DATA_ROOT") || die "cannot create $DATA_ROOT"
        done_+=("data root created")
        new_root=1
    fi
    if ((EUID == 0)); then
        if [[ "$(stat -c %U:%G -- "$DATA_ROOT")" != "$ACCOUNT_USER:$group" ]]; then
            chown -- "$ACCOUNT_USER:$group" "$DATA_ROOT" || die "cannot chown $DATA_ROOT"
            done_+=("owner set")
        fi
    elif [[ "$(stat -c %U -- "$DATA_ROOT")" != "$ACCOUNT_USER" ]]; then
        die "$DATA_ROOT is not owned by $ACCOUNT_USER"
    fi
    if [[ "$(stat -c %a -- "$DATA_ROOT")" != 700 ]]; then
        chmod 0700 -- "$DATA_ROOT" || die "cannot chmod $DATA_ROOT"
        done_+=("mode set")
    fi
    # Written anew when it names no fleet or differs (claim_root allowed it).
    if {
        printf 'dbfleet managed data root\n'
        [[ -z "${FLEET_NAME:-}" ]] || printf '%s\n' "$(fleet_mark)"
    } | RUN_AS=$ACCOUNT_USER put_file "$DATA_ROOT/$DBFLEET_ROOT_MARKER"; then
        ((new_root)) || done_+=("data root marked")
    fi
    # The account must be able to reach it (all parents traversable).
    RUN_AS=$ACCOUNT_USER run_as test -w "$DATA_ROOT" -a -x "$DATA_ROOT" ||
        die "$ACCOUNT_USER cannot use $DATA_ROOT (is a parent directory not traversable?)"

    local what="no changes"
    if ((${#done_[@]} > 0)); then
        what=$(printf '%s, ' "${done_[@]}")
        what=${what%, }
    fi
    printf '%s: account %s, data root %s ready in %s: %s\n' \
        "$SCRIPT_NAME" "$ACCOUNT_USER" "$DATA_ROOT" "$(elapsed)" "$what"
}

# no_user_procs : ACCOUNT_USER has no processes (zombies included).
no_user_procs() { [[ -z "$(ps -o pid= -u "$ACCOUNT_USER" || true)" ]]; }

# no_live_user_procs : ACCOUNT_USER runs nothing but zombies.
no_live_user_procs() { [[ -z "$(ps -o stat= -u "$ACCOUNT_USER" | awk '$1 !~ /^Z/')" ]]; }

# foreign_entries DIR TOP : print what under DIR dbfleet did not make, or
# what is still in use.  TOP=1 for DATA_ROOT itself (where the root marker
# may be).
foreign_entries() {
    local dir=$1 top=$2 e pid owner
    for e in "$dir"/* "$dir"/.*; do
        [[ -e "$e" || -L "$e" ]] || continue
        case "${e##*/}" in . | ..) continue ;; esac
        if ((top)) && [[ "${e##*/}" == "$DBFLEET_ROOT_MARKER" && -f "$e" && ! -L "$e" ]]; then
            continue
        fi
        if [[ -L "$e" || ! -d "$e" ]]; then
            printf '%s\n' "$e"
        elif [[ -f "$e/$DBFLEET_MARKER" ]]; then
            # A node or proxy directory: fine if this fleet's and its process does not run.
            owner=$(marker_fleet "$e/$DBFLEET_MARKER")
            may_claim "$owner" "$(basename -- "$dir")" || printf '%s (%s)\n' "$e" "$(not_ours "$owner")"
            if [[ -f "$e/pgdata/postmaster.pid" ]]; then
                read -r pid <"$e/pgdata/postmaster.pid" || pid=
                proc_exe_is "$pid" "$PG_BIN/postgres" && printf '%s (postgres pid %s running)\n' "$e" "$pid"
            fi
            if [[ -f "$e/haproxy.pid" ]]; then
                read -r pid <"$e/haproxy.pid" || pid=
                proc_exe_is "$pid" "$HAPROXY_BIN" && printf '%s (haproxy pid %s running)\n' "$e" "$pid"
            fi
            if [[ -f "$e/pgbouncer.pid" ]]; then
                read -r pid <"$e/pgbouncer.pid" || pid=
                proc_exe_is "$pid" "$PGBOUNCER_BIN" && printf '%s (pgbouncer pid %s running)\n' "$e" "$pid"
            fi
        else
            foreign_entries "$e" 0
        fi
    done
    return 0
}

do_delete() {
    check_inputs
    local done_=() bad
    # Another fleet's user or data root: refuse before removing anything.
    if ((EUID == 0)); then claim_user remove; fi
    claim_root remove
    if [[ -e "$DATA_ROOT" ]]; then
        [[ -d "$DATA_ROOT" && ! -L "$DATA_ROOT" ]] || die "DATA_ROOT=$DATA_ROOT is not a directory; refusing to remove it"
        bad=$(foreign_entries "$DATA_ROOT" 1)
        if [[ -n "$bad" ]]; then
            head -n 20 <<<"$bad" >&2
            die "DATA_ROOT=$DATA_ROOT contains things dbfleet did not make or that are still running (listed above); refusing to remove it"
        fi
        rm -rf -- "$DATA_ROOT" || die "cannot remove $DATA_ROOT"
        done_+=("data root removed")
    fi
    if ((EUID == 0)) && getent passwd -- "$ACCOUNT_USER" >/dev/null; then
        if user_owner "$ACCOUNT_USER" >/dev/null; then
            local procs
            # Short-lived helpers of the group's services (pgBackRest's archive
            # workers after PostgreSQL's last archive) end by themselves: a
            # moment's grace before anything still running stops the delete.
            wait_for 30 "processes of $ACCOUNT_USER to exit" no_live_user_procs || true
            procs=$(ps -o pid=,stat=,args= -u "$ACCOUNT_USER" | awk '$2 !~ /^Z/' || true)
            if [[ -n "$procs" ]]; then
                head -n 10 <<<"$procs" >&2
                die "user $ACCOUNT_USER still runs processes (listed above); not removing it"
            fi
            # Processes that just exited may linger as zombies until they
            # are reaped; userdel counts them, so wait for that.
            wait_for 30 "exited processes of $ACCOUNT_USER to be reaped" no_user_procs ||
                die "user $ACCOUNT_USER still has (zombie) processes; not removing it"
            # Hosts that share /etc/passwd (the lab; an NFS-backed one) remove the
            # group's user from each of them at once: gone is what was asked.
            if userdel -- "$ACCOUNT_USER"; then
                done_+=("user removed")
            elif getent passwd -- "$ACCOUNT_USER" >/dev/null; then
                die "userdel $ACCOUNT_USER failed"
            else
                done_+=("user already removed")
            fi
        else
            info "user $ACCOUNT_USER was not created by dbfleet; leaving it"
        fi
    fi
    local what="nothing to do"
    if ((${#done_[@]} > 0)); then
        what=$(printf '%s, ' "${done_[@]}")
        what=${what%, }
    fi
    printf '%s: account %s, data root %s deleted in %s: %s\n' \
        "$SCRIPT_NAME" "$ACCOUNT_USER" "$DATA_ROOT" "$(elapsed)" "$what"
}

# do_check : read-only drift probe run by every `pulumi preview`/`up`. Exit 0
# when the host matches what was declared, DRIFT_EXIT_CODE (lib.sh) when it
# does not - the engine then plans an update, and `create|update` repairs it.
# Changes nothing.
do_check() {
    require_env ACCOUNT_USER DATA_ROOT
    getent passwd -- "$ACCOUNT_USER" >/dev/null || exit "$DRIFT_EXIT_CODE"
    [[ -d "$DATA_ROOT" ]] || exit "$DRIFT_EXIT_CODE"
    exit 0
}

# account_lock : one account.sh create/delete at a time on this machine. Hosts
# that share a filesystem (the lab; an NFS-backed /var/lib) would otherwise race
# on the shared data root and user: one sees the other's half-made directory.
account_lock() {
    local dir=/run/lock
    [[ -d "$dir" && -w "$dir" ]] || dir=${TMPDIR:-/tmp}
    exec 8>>"$dir/dbfleet-account.lock" || die "cannot open $dir/dbfleet-account.lock"
    flock -w 120 8 || die "another account.sh holds $dir/dbfleet-account.lock (waited 120 s)"
}

case "${1:-}" in
create | update)
    account_lock
    do_create
    ;;
delete)
    account_lock
    do_delete
    ;;
check) do_check ;;
*) die "usage: $SCRIPT_NAME create|delete|check (ACCOUNT_USER, DATA_ROOT in the environment)" ;;
esac
