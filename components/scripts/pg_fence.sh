#!/usr/bin/env bash
#
# pg_fence.sh create|update|delete|check - keeps a group to one primary.
#
# Environment:
#   RUN_AS        OS user owning the group's nodes
#   FENCED_NODES  space-separated node directories that are declared
#                 replicas (every node of the group but the primary)
#
# create|update: every fenced node that is running as a primary (not in
# recovery: no standby.signal) is shut down cleanly ("fast" mode). A clean
# shutdown makes the primary send all of its WAL, up to the shutdown
# checkpoint, to its connected standbys before it exits, so the node promoted
# next has every committed write. This is what runs first when a group's
# primary moves (planned switchover, or `dbfleet failover`): the old primary
# stops taking writes before the new one is promoted, so there is never a
# moment with two primaries. The node's own update then rejoins it as a
# standby of the new primary (pg_rewind if it had diverged).
#
# check: exit DRIFT_EXIT_CODE (lib.sh) when a fenced node runs as a primary - a split brain
# that `pulumi preview` then reports and `up` ends.
# delete: nothing to undo.
set -euo pipefail

# shellcheck source=SCRIPTDIR/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=SCRIPTDIR/pg_lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/pg_lib.sh"

# running_primary DIR : the node in DIR runs and is not a standby.
running_primary() {
    NODE_DIR=$1
    pg_init_vars
    [[ -f "$PGDATA_DIR/PG_VERSION" ]] || return 1
    pg_running || return 1
    [[ ! -f "$PGDATA_DIR/standby.signal" ]]
}

do_create() {
    check_run_as
    local dir stopped=()
    for dir in ${FENCED_NODES:-}; do
        NODE_DIR=$dir
        check_abs_path NODE_DIR
        if running_primary "$dir"; then
            info "fencing $dir: it runs as a primary but is declared a replica; clean shutdown"
            pg_stop
            stopped+=("$(basename -- "$dir")")
        fi
    done
    if ((${#stopped[@]})); then
        echo "fenced ${stopped[*]}"
    else
        echo "no changes: one primary"
    fi
}

do_check() {
    local dir
    for dir in ${FENCED_NODES:-}; do
        if running_primary "$dir"; then exit "$DRIFT_EXIT_CODE"; fi
    done
    exit 0
}

case "${1:-}" in
create | update) do_create ;;
delete) echo "nothing to undo" ;;
check) do_check ;;
*) die "usage: $SCRIPT_NAME create|update|delete|check (RUN_AS, FENCED_NODES in the environment)" ;;
esac
