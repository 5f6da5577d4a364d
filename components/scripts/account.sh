#!/usr/bin/env bash
#
# account.sh create|delete - the OS account and data root of a region group.
#
# Environment:
#   ACCOUNT_USER   the group's OS user (runs its PostgreSQL nodes and proxies)
#   DATA_ROOT      absolute directory holding the group's node/proxy dirs
#
# create (idempotent):
#   * as root: if ACCOUNT_USER does not exist, create it as a system user
#     without home directory and login shell, with GECOS "dbfleet managed"
#     (that marker is what allows delete to remove it again; an existing
#     user is used as is and never removed).  As non-root, ACCOUNT_USER must
#     be the current user.
#   * DATA_ROOT: mkdir -p (missing parents 0755), owned by ACCOUNT_USER and
#     its primary group, mode 0700, marked with .dbfleet-root.  An existing
#     non-empty directory without that marker is refused.
# delete (idempotent):
#   * DATA_ROOT is removed only if it holds nothing but what dbfleet made:
#     its marker, node/proxy directories carrying a .dbfleet marker whose
#     postgres/haproxy is not running, and directories holding only such
#     things.  Anything else makes it refuse, listing what it found.
#   * as root, the user is removed (userdel) only if its GECOS is
#     "dbfleet managed" and it runs no processes.
#
# Output: one summary line on stdout; errors on stderr.
set -euo pipefail

# shellcheck source=SCRIPTDIR/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

GECOS="dbfleet managed"

# user_gecos USER : the GECOS field of USER.
user_gecos() { getent passwd -- "$1" | cut -d: -f5; }

check_inputs() {
    require_env ACCOUNT_USER DATA_ROOT
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

do_create() {
    check_inputs
    local done_=()
    if ! getent passwd -- "$ACCOUNT_USER" >/dev/null; then
        ((EUID == 0)) || die "user $ACCOUNT_USER does not exist"
        useradd --system --user-group --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin --comment "$GECOS" -- "$ACCOUNT_USER" ||
            die "useradd $ACCOUNT_USER failed"
        done_+=("user created")
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
    if [[ ! -f "$DATA_ROOT/$DBFLEET_ROOT_MARKER" ]]; then
        RUN_AS=$ACCOUNT_USER
        printf 'dbfleet managed data root\n' | put_file "$DATA_ROOT/$DBFLEET_ROOT_MARKER" || true
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

# foreign_entries DIR TOP : print what under DIR dbfleet did not make, or
# what is still in use.  TOP=1 for DATA_ROOT itself (where the root marker
# may be).
foreign_entries() {
    local dir=$1 top=$2 e pid
    for e in "$dir"/* "$dir"/.*; do
        [[ -e "$e" || -L "$e" ]] || continue
        case "${e##*/}" in . | ..) continue ;; esac
        if ((top)) && [[ "${e##*/}" == "$DBFLEET_ROOT_MARKER" && -f "$e" && ! -L "$e" ]]; then
            continue
        fi
        if [[ -L "$e" || ! -d "$e" ]]; then
            printf '%s\n' "$e"
        elif [[ -f "$e/$DBFLEET_MARKER" ]]; then
            # A node or proxy directory: fine unless its process still runs.
            if [[ -f "$e/pgdata/postmaster.pid" ]]; then
                read -r pid <"$e/pgdata/postmaster.pid" || pid=
                proc_exe_is "$pid" "$PG_BIN/postgres" && printf '%s (postgres pid %s running)\n' "$e" "$pid"
            fi
            if [[ -f "$e/haproxy.pid" ]]; then
                read -r pid <"$e/haproxy.pid" || pid=
                proc_exe_is "$pid" "$HAPROXY_BIN" && printf '%s (haproxy pid %s running)\n' "$e" "$pid"
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
        if [[ "$(user_gecos "$ACCOUNT_USER")" == "$GECOS" ]]; then
            local procs
            procs=$(ps -o pid=,stat=,args= -u "$ACCOUNT_USER" | awk '$2 !~ /^Z/' || true)
            if [[ -n "$procs" ]]; then
                head -n 10 <<<"$procs" >&2
                die "user $ACCOUNT_USER still runs processes (listed above); not removing it"
            fi
            # Processes that just exited may linger as zombies until they
            # are reaped; userdel counts them, so wait for that.
            wait_for 30 "exited processes of $ACCOUNT_USER to be reaped" no_user_procs ||
                die "user $ACCOUNT_USER still has (zombie) processes; not removing it"
            userdel -- "$ACCOUNT_USER" || die "userdel $ACCOUNT_USER failed"
            done_+=("user removed")
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

case "${1:-}" in
create | update) do_create ;;
delete) do_delete ;;
check) do_check ;;
*) die "usage: $SCRIPT_NAME create|delete|check (ACCOUNT_USER, DATA_ROOT in the environment)" ;;
esac
