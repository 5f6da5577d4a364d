#!/usr/bin/env bash
#
# pg_primary.sh create|update|delete - a PostgreSQL 15 primary node.
#
# Environment (create/update):
#   RUN_AS                   OS user owning and running the node (not root)
#   NODE_DIR                 absolute node directory; the script uses
#                              $NODE_DIR/pgdata          PGDATA
#                              $NODE_DIR/run             unix socket directory
#                              $NODE_DIR/log/postgresql.log   server log
#                              $NODE_DIR/dbfleet-slots   slots dbfleet created
#   PG_HOST, PG_PORT         the only address/port the node listens on
#                            (a 127.0.0.0/8 address)
#   ALLOWED_HOSTS            space-separated IPv4 addresses allowed in
#                            pg_hba.conf (may be empty: socket access only)
#   REPLICA_SLOTS            space-separated physical slot names to keep
#   APP_DB, APP_USER         application database / owner role (default app)
#   PG_SUPERUSER_PASSWORD    password of "postgres" (set by initdb; changing
#                            it later is not supported - see below)
#   PG_REPLICATION_PASSWORD  password of role "replicator"
#   PG_APP_PASSWORD          password of APP_USER
# delete needs only RUN_AS and NODE_DIR.
#
# create and update are the same idempotent operation:
#   1. initdb when $NODE_DIR/pgdata has no PG_VERSION (scram-sha-256,
#      superuser postgres, data checksums, UTF8, C locale); the password
#      goes through a 0600 file that is removed right after.
#   2. write conf.d/dbfleet.conf (included last from postgresql.conf) and
#      pg_hba.conf; only files whose content differs are rewritten.
#   3. start the server if it is not running (a stale postmaster.pid of a
#      killed postmaster is handled), otherwise reload if a file changed,
#      and restart if a changed setting requires it.
#   4. if the data directory is a STANDBY (standby.signal present), it is
#      PROMOTED (pg_ctl promote, then wait until pg_is_in_recovery() is
#      false): running pg_primary.sh against a replica's NODE_DIR is the
#      supported way to move a group's primary.  The script does not fence
#      the old primary - stop it first, or expect a split brain.
#   5. roles "replicator" (LOGIN REPLICATION) and APP_USER (LOGIN) exist and
#      have the current passwords, APP_DB exists and is owned by APP_USER,
#      the REPLICA_SLOTS physical slots exist, and inactive slots dbfleet
#      created earlier but no longer listed are dropped.
#   Passwords are compared with the stored SCRAM verifiers client-side and
#   only changed when they differ (so a second run changes nothing, and
#   changing a password and re-running rotates it).  New verifiers are
#   computed here and sent as SCRAM-SHA-256$... strings, so a clear-text
#   password never reaches the server (nor its logs or pg_stat_activity).
#   The superuser password cannot be rotated this way: the script logs in
#   with it, so a changed PG_SUPERUSER_PASSWORD fails with a clear error.
#
# Output: one summary line on stdout; progress/errors on stderr.
set -euo pipefail

# shellcheck source=SCRIPTDIR/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"
# shellcheck source=SCRIPTDIR/pg_lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/pg_lib.sh"

# The SCRAM helper, components/scram.py, as program text for `python3 -c`:
# it checks a password (read from DBFLEET_PW in its environment, never argv)
# against a stored SCRAM-SHA-256 verifier (stdin) and prints a fresh verifier
# when they do not match.  HostScript ships the file's text in place of this
# line, so it travels with the script to any host.
SCRAM_PY=$(<"$(dirname -- "${BASH_SOURCE[0]}")/../scram.py")

# scram_check VAR : stdin = stored verifier (may be empty); prints a new
# verifier for the password held in shell variable VAR if it differs.
scram_check() {
    DBFLEET_PW=${!1} "$PYTHON" -I -c "$SCRAM_PY" || die "SCRAM helper failed"
}

# initdb_node : create the cluster in a scratch directory, then rename it
# to pgdata, so an interrupted initdb never leaves a half-made PGDATA.
initdb_node() {
    local scratch=$NODE_DIR/pgdata.initdb pwfile=$RUN_DIR/.initdb.pw
    if [[ -d "$PGDATA_DIR" ]]; then
        [[ -z "$(ls -A -- "$PGDATA_DIR")" ]] ||
            die "$PGDATA_DIR exists without PG_VERSION and is not empty; refusing to initdb over it"
        rmdir -- "$PGDATA_DIR"
    fi
    rm -rf -- "$scratch"
    trap 'rm -f -- "$RUN_DIR/.initdb.pw"' EXIT
    printf '%s\n' "$PG_SUPERUSER_PASSWORD" | put_file "$pwfile" || true
    if ! run_as_logged "$LOG_DIR/initdb.log" "$PG_BIN/initdb" -D "$scratch" -U postgres \
        --auth=scram-sha-256 --pwfile="$pwfile" --data-checksums \
        --encoding=UTF8 --no-locale --no-instructions; then
        rm -f -- "$pwfile"
        tail -n 20 "$LOG_DIR/initdb.log" >&2
        die "initdb failed for $NODE_DIR (see $LOG_DIR/initdb.log)"
    fi
    rm -f -- "$pwfile"
    trap - EXIT
    run_as mv -- "$scratch" "$PGDATA_DIR"
}

# slot_is_listed NAME : NAME is in REPLICA_SLOTS.
slot_is_listed() { [[ " ${REPLICA_SLOTS:-} " == *" $1 "* ]]; }

do_create() {
    require_env PG_SUPERUSER_PASSWORD PG_REPLICATION_PASSWORD PG_APP_PASSWORD
    pg_check_common
    APP_DB=${APP_DB:-app}
    APP_USER=${APP_USER:-app}
    check_ident APP_DB "$APP_DB"
    check_ident APP_USER "$APP_USER"
    [[ "$APP_USER" != postgres && "$APP_USER" != replicator ]] ||
        die "APP_USER must not be postgres or replicator"
    local s slots=()
    for s in ${REPLICA_SLOTS:-}; do
        check_ident REPLICA_SLOTS "$s"
        [[ " ${slots[*]} " == *" $s "* ]] || slots+=("$s")
    done
    ((${#slots[@]} <= PG_MAX_REPLICATION_SLOTS)) ||
        die "at most $PG_MAX_REPLICATION_SLOTS REPLICA_SLOTS are supported"
    PYTHON=/usr/bin/python3
    [[ -x "$PYTHON" ]] || PYTHON=$(command -v python3) || die "python3 is required"

    pg_init_vars
    pg_prepare_node_dir "postgresql node"

    local done_=()
    # 1. Data directory.
    if [[ ! -f "$PGDATA_DIR/PG_VERSION" ]]; then
        initdb_node
        done_+=(initdb)
    fi
    local standby=0
    [[ -f "$PGDATA_DIR/standby.signal" ]] && standby=1

    # 2. Configuration (a former standby loses its primary_conninfo here).
    # shellcheck disable=SC2119  # no standby lines for a primary
    pg_write_node_files

    # 3. Running, with the current configuration.
    local r
    if pg_start; then
        done_+=(started)
    else
        r=$(pg_apply_config "$CONF_CHANGED")
        [[ "$r" == unchanged ]] || done_+=("$r")
    fi
    pg_psql -c "SELECT 1" >/dev/null 2>&1 ||
        die "cannot log in as postgres over $RUN_DIR (PG_SUPERUSER_PASSWORD differs from the one set at initdb? rotating it is not supported)"

    # 4. A standby becomes the primary.
    if ((standby)); then
        info "$PGDATA_DIR is a standby: promoting it"
        run_as "$PG_BIN/pg_ctl" promote -D "$PGDATA_DIR" -w -t 120 -s >&2 ||
            die "pg_ctl promote failed for $NODE_DIR"
        wait_for 60 "$NODE_DIR to leave recovery" pg_sql_true "SELECT NOT pg_is_in_recovery()" ||
            die "$NODE_DIR is still in recovery after promotion"
        # Record the new timeline in the control file now: pg_rewind of the
        # old primary and of other standbys reads it from there.
        pg_psql -c CHECKPOINT >/dev/null || die "checkpoint after promoting $NODE_DIR failed"
        rm -f -- "$REPL_PASSFILE"
        done_+=(promoted)
    elif ! pg_sql_true "SELECT NOT pg_is_in_recovery()"; then
        die "$NODE_DIR is in recovery but has no standby.signal; refusing to touch it"
    fi

    # 5. Roles, database, slots.  Read the state in one session ...
    local state kind name a b c
    state=$(pg_psql -F '|' -v app_user="$APP_USER" -v app_db="$APP_DB" -f - <<'SQL'
SELECT 'role', rolname, rolcanlogin, rolreplication, coalesce(rolpassword, '')
  FROM pg_authid WHERE rolname IN ('replicator', :'app_user');
SELECT 'db', datname, pg_get_userbyid(datdba), '', '' FROM pg_database WHERE datname = :'app_db';
SELECT 'slot', slot_name, active, '', '' FROM pg_replication_slots
 WHERE slot_type = 'physical' AND NOT temporary;
SQL
    ) || die "cannot read roles/databases/slots of $NODE_DIR"
    local -A role_login=() role_repl=() role_pw=() slot_active=()
    local db_owner=
    while IFS='|' read -r kind name a b c; do
        case $kind in
        role) role_login[$name]=$a role_repl[$name]=$b role_pw[$name]=$c ;;
        db) db_owner=$a ;;
        slot) slot_active[$name]=$a ;;
        esac
    done < <(printf '%s\n' "$state")
    state=

    # ... decide what to change (SQL lines only reference psql variables;
    # new verifiers travel in the environment of psql and are read with
    # \getenv) ...
    local sql=() v_repl v_app
    if [[ -z "${role_login[replicator]+x}" ]]; then
        sql+=("CREATE ROLE replicator WITH LOGIN REPLICATION;")
        done_+=("role replicator created")
    elif [[ "${role_login[replicator]}${role_repl[replicator]}" != tt ]]; then
        sql+=("ALTER ROLE replicator WITH LOGIN REPLICATION;")
        done_+=("role replicator altered")
    fi
    if [[ -z "${role_login[$APP_USER]+x}" ]]; then
        sql+=("CREATE ROLE :\"app_user\" WITH LOGIN;")
        done_+=("role $APP_USER created")
    elif [[ "${role_login[$APP_USER]}" != t ]]; then
        sql+=("ALTER ROLE :\"app_user\" WITH LOGIN;")
        done_+=("role $APP_USER altered")
    fi
    v_repl=$(printf '%s' "${role_pw[replicator]:-}" | scram_check PG_REPLICATION_PASSWORD)
    if [[ -n "$v_repl" ]]; then
        sql+=('\getenv v_repl DBFLEET_V_REPL' "ALTER ROLE replicator PASSWORD :'v_repl';")
        done_+=("password of replicator set")
    fi
    v_app=$(printf '%s' "${role_pw[$APP_USER]:-}" | scram_check PG_APP_PASSWORD)
    if [[ -n "$v_app" ]]; then
        sql+=('\getenv v_app DBFLEET_V_APP' "ALTER ROLE :\"app_user\" PASSWORD :'v_app';")
        done_+=("password of $APP_USER set")
    fi
    if [[ -z "$db_owner" ]]; then
        sql+=("CREATE DATABASE :\"app_db\" OWNER :\"app_user\";")
        done_+=("database $APP_DB created")
    elif [[ "$db_owner" != "$APP_USER" ]]; then
        sql+=("ALTER DATABASE :\"app_db\" OWNER TO :\"app_user\";")
        done_+=("database $APP_DB owner set")
    fi

    # Slots: create the listed ones that are missing (WAL reserved right
    # away, so a base backup can start from them); drop the ones dbfleet
    # created (recorded in $SLOTS_STATE) that are no longer listed, unless
    # a standby is using them.
    local managed=() keep=()
    [[ -f "$SLOTS_STATE" ]] && mapfile -t managed <"$SLOTS_STATE"
    for s in "${slots[@]}"; do
        if [[ -z "${slot_active[$s]+x}" ]]; then
            sql+=("SELECT pg_create_physical_replication_slot('$s', true);")
            done_+=("slot $s created")
        fi
        keep+=("$s")
    done
    for s in "${managed[@]}"; do
        if [[ -z "$s" ]] || slot_is_listed "$s"; then continue; fi
        if [[ -z "${slot_active[$s]+x}" ]]; then
            continue
        elif [[ "${slot_active[$s]}" == t ]]; then
            warn "slot $s is no longer listed but is active; keeping it for now"
            keep+=("$s")
        else
            sql+=("SELECT pg_drop_replication_slot('$s');")
            done_+=("slot $s dropped")
        fi
    done

    # ... and apply it in a second session (only if there is anything).
    if ((${#sql[@]} > 0)); then
        printf '%s\n' "${sql[@]}" |
            DBFLEET_V_REPL=$v_repl DBFLEET_V_APP=$v_app \
                pg_psql -v app_user="$APP_USER" -v app_db="$APP_DB" -f - >/dev/null ||
            die "applying roles/database/slots to $NODE_DIR failed"
    fi
    if ((${#keep[@]} > 0)); then
        printf '%s\n' "${keep[@]}" | put_file "$SLOTS_STATE" || true
    else
        rm -f -- "$SLOTS_STATE"
    fi

    local what="no changes"
    if ((${#done_[@]} > 0)); then
        what=$(printf '%s, ' "${done_[@]}")
        what=${what%, }
    fi
    printf '%s: primary %s:%s (%s) ready in %s: %s\n' \
        "$SCRIPT_NAME" "$PG_HOST" "$PG_PORT" "$NODE_DIR" "$(elapsed)" "$what"
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
check) pg_drift_check primary ;;
*) die "usage: $SCRIPT_NAME create|update|delete|check (configuration in the environment)" ;;
esac
