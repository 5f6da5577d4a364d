#!/usr/bin/env bash
#
# patroni_leader.sh create|update|delete|check - what a region group's
# Patroni cluster is told as a whole: its dynamic configuration, which node
# the fleet file prefers as leader, and the roles and database on it.
#
# Environment (create/update):
#   RUN_AS                   OS user psql runs as (the group's user)
#   SCOPE                    the group's cluster name (`<fleet>-<group>`)
#   MEMBERS                  space-separated name=host:pgport:restport of every node
#   PREFERRED                the member the fleet file's `primary:` names (`fra-0`)
#   DCS_CONFIG               JSON: the dynamic configuration to hold (ttl, loop_wait,
#                            synchronous_mode, postgresql.parameters, ...)
#   APP_DB, APP_USER         application database / owner role
#   PG_SUPERUSER_PASSWORD    password of "postgres" and of the REST user "patroni"
#   PG_REPLICATION_PASSWORD  password of "replicator" (rotated here on the leader)
#   PG_APP_PASSWORD          password of APP_USER
#   TLS_CA                   the group's CA certificate (PEM, base64-encoded):
#                            every REST call is HTTPS and verifies the member
#                            against it (create/update and check)
#
# create/update (idempotent):
#   1. wait until the group has a leader (Patroni's /cluster from any member);
#   2. PATCH /config when the dynamic configuration differs from DCS_CONFIG;
#   3. when the leader is not PREFERRED: a switchover to PREFERRED (Patroni
#      stops the old leader cleanly, so every committed write reaches the
#      candidate first), then wait until PREFERRED leads and runs;
#   4. on the leader: roles replicator and APP_USER with the current passwords
#      (SCRAM verifiers computed here: a clear-text password never reaches the
#      server), APP_DB owned by APP_USER.
# check: drift when the live leader is not PREFERRED, or there is none, or the
# dynamic configuration differs (the reason goes to stderr).
# delete: nothing to undo (the nodes and etcd members go with their resources).
#
# Output: one summary line on stdout; progress/errors on stderr.
set -euo pipefail

# shellcheck source=SCRIPTDIR/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

# The SCRAM helper (components/scram.py); HostScript ships its text in place
# of this line.
SCRAM_PY=$(<"$(dirname -- "${BASH_SOURCE[0]}")/../scram.py")

PYTHON=/usr/bin/python3

# JSON helpers, as program text for `python3 -c` (the input on stdin).
# leader_of: "<leader name> <member>=<state>/<role>/<lag>..." of a /cluster answer.
LEADER_PY='
import json, sys
c = json.load(sys.stdin)
ms = c.get("members", [])
lead = [m["name"] for m in ms if m.get("role") in ("leader", "master", "primary")]
print(lead[0] if lead else "-", *(
    "%s=%s/%s/%s" % (m["name"], m.get("state", "?"), m.get("role", "?"), m.get("lag", 0))
    for m in ms))
'
# config_differs: exit 0 when a key of the wanted config (argv[1]) differs
# from the live one (stdin), comparing values as strings (Patroni keeps some
# numbers as strings).
DIFFERS_PY='
import json, sys
def same(want, have):
    if isinstance(want, dict):
        return isinstance(have, dict) and all(same(v, have.get(k)) for k, v in want.items())
    return str(want).lower() == str(have).lower()
sys.exit(1 if same(json.loads(sys.argv[1]), json.load(sys.stdin)) else 0)
'

declare -A MEMBER_ADDR=() MEMBER_REST=()

parse_members() {
    local m name rest
    for m in $MEMBERS; do
        name=${m%%=*}
        rest=${m#*=}
        [[ "$name" =~ ^[a-z0-9-]+$ && "$rest" =~ ^([0-9.]+):([0-9]+):([0-9]+)$ ]] ||
            die "MEMBERS: '$m' is not name=host:pgport:restport"
        MEMBER_ADDR[$name]="${BASH_REMATCH[1]}:${BASH_REMATCH[2]}"
        MEMBER_REST[$name]="${BASH_REMATCH[1]}:${BASH_REMATCH[3]}"
    done
    [[ -n "${MEMBER_REST[$PREFERRED]+x}" ]] || die "PREFERRED '$PREFERRED' is not one of MEMBERS"
}

# cluster_view : the LEADER_PY line from the first member that answers.
cluster_view() {
    local name body
    for name in "${!MEMBER_REST[@]}"; do
        body=$(curl -sf -m 3 --cacert "$CA_FILE" "https://${MEMBER_REST[$name]}/cluster" 2>/dev/null) ||
            continue
        printf '%s' "$body" | "$PYTHON" -I -c "$LEADER_PY" && return 0
    done
    return 1
}

# leader : sets LEADER (name or "-") and VIEW.
leader() {
    VIEW=$(cluster_view) || {
        LEADER=-
        return 1
    }
    LEADER=${VIEW%% *}
    [[ "$LEADER" != - ]]
}

# rest_change METHOD NAME PATH JSON : an authenticated change on member NAME's
# REST API; the password travels in curl's configuration on stdin, not argv.
rest_change() {
    local esc=${PG_SUPERUSER_PASSWORD//\\/\\\\}
    esc=${esc//\"/\\\"}
    printf 'user = "patroni:%s"\n' "$esc" |
        curl -sS -m 30 --cacert "$CA_FILE" -K - -X "$1" -H 'Content-Type: application/json' \
            --data-binary "$4" "https://${MEMBER_REST[$2]}$3"
}

config_differs() {
    local live
    live=$(curl -sf -m 5 --cacert "$CA_FILE" "https://${MEMBER_REST[$LEADER]}/config") || return 0
    printf '%s' "$live" | "$PYTHON" -I -c "$DIFFERS_PY" "$DCS_CONFIG"
}

preferred_leads_and_runs() {
    leader && [[ "$LEADER" == "$PREFERRED" && " $VIEW " == *" $PREFERRED=running/"* ]]
}

# member_state NAME : "state/role/lag" of NAME in VIEW.
member_state() {
    local w
    for w in $VIEW; do [[ "$w" == "$1="* ]] && printf '%s' "${w#*=}" && return 0; done
    printf 'absent'
}

switchover() {
    local state out
    state=$(member_state "$PREFERRED")
    [[ "$state" == running/* ]] ||
        die "cannot switch the leader of $SCOPE from $LEADER to $PREFERRED: $PREFERRED is ${state%%/*}; bring it up first (or set primary: to the live leader's region in the fleet file)"
    info "switchover of $SCOPE: $LEADER -> $PREFERRED"
    # In synchronous mode Patroni hands over only to the synchronous standby,
    # which it chose itself. For the handover the group goes asynchronous for a
    # moment: a switchover loses no committed write either way (the old leader
    # stops cleanly only once the candidate has all its WAL), and do_create
    # turns synchronous mode back on right after the handover.
    if [[ "$state" != */sync_standby/* && "$DCS_CONFIG" == *'"synchronous_mode": true'* ]]; then
        info "$PREFERRED is not $SCOPE's synchronous standby: synchronous mode off for the handover"
        rest_change PATCH "$LEADER" /config '{"synchronous_mode": false}' >/dev/null ||
            die "Patroni refused to turn synchronous mode off for the switchover to $PREFERRED"
        wait_for 30 "$SCOPE to leave synchronous mode" no_sync_standby ||
            die "$SCOPE is still synchronous 30 s after synchronous mode was turned off"
    fi
    # A candidate that just came back (restarted, rewound) may still be catching
    # up; Patroni then keeps the old leader ("Switched over to X instead of Y").
    # Wait until it streams with little lag, and try again a few times.
    local try
    for try in 1 2 3; do
        wait_for 60 "$PREFERRED to catch up with $LEADER" candidate_ready ||
            warn "$PREFERRED is not caught up with $SCOPE's leader after 60 s: $VIEW"
        out=$(rest_change POST "$LEADER" /switchover "{\"leader\": \"$LEADER\", \"candidate\": \"$PREFERRED\"}" 2>&1) ||
            die "Patroni refused the switchover $LEADER -> $PREFERRED: $out"
        if wait_for 60 "$PREFERRED to lead $SCOPE" preferred_leads_and_runs; then
            break
        fi
        ((try < 3)) || die "$PREFERRED does not lead $SCOPE after 3 switchovers from $LEADER were accepted: $out"
        warn "switchover $LEADER -> $PREFERRED did not take ($out); trying again"
        wait_for 30 "$SCOPE to have a leader" leader || die "$SCOPE has no leader after a switchover"
    done
    # The old leader and the other replicas restart to follow the new one: the
    # run ends with the group whole again, not halfway.
    wait_for 120 "every member of $SCOPE to run again" all_running ||
        warn "not every member of $SCOPE runs 120 s after the switchover: $VIEW"
}

# candidate_ready : PREFERRED runs as a replica whose lag Patroni knows and is
# under 1 MiB (Patroni's own bar for a switchover candidate is the group's
# maximum_lag_on_failover; this keeps well below it).
candidate_ready() {
    leader || return 1
    local st lag
    st=$(member_state "$PREFERRED")
    [[ "$st" == running/replica/* || "$st" == running/sync_standby/* ]] || return 1
    lag=${st##*/}
    [[ "$lag" =~ ^[0-9]+$ ]] && ((lag < 1048576))
}

# no_sync_standby : Patroni's view names no synchronous standby any more.
no_sync_standby() { leader && [[ " $VIEW" != *"/sync_standby/"* ]]; }

# all_running : every member in Patroni's view runs (and there is a leader).
all_running() {
    leader || return 1
    local w
    for w in ${VIEW#* }; do [[ "$w" == *=running/* ]] || return 1; done
}

# leader_psql [ARGS] : psql as postgres on the leader, over TCP.
leader_psql() {
    local addr=${MEMBER_ADDR[$LEADER]}
    PGPASSWORD=$PG_SUPERUSER_PASSWORD PGCONNECT_TIMEOUT=10 \
        run_as "$PG_BIN/psql" -X -q -A -t -v ON_ERROR_STOP=1 -h "${addr%:*}" -p "${addr##*:}" \
        -U postgres -d postgres "$@"
}

# scram_check VAR : stdin = stored verifier (may be empty); prints a new
# verifier for the password in shell variable VAR if it differs.
scram_check() {
    DBFLEET_PW=${!1} "$PYTHON" -I -c "$SCRAM_PY" || die "SCRAM helper failed"
}

# ensure_roles : replicator and APP_USER with the current passwords, APP_DB.
ensure_roles() {
    local state kind name a c
    state=$(leader_psql -F '|' -v app_user="$APP_USER" -v app_db="$APP_DB" -f - <<'SQL'
SELECT 'role', rolname, rolcanlogin, rolreplication, coalesce(rolpassword, '')
  FROM pg_authid WHERE rolname IN ('replicator', :'app_user');
SELECT 'db', datname, pg_get_userbyid(datdba), '', '' FROM pg_database WHERE datname = :'app_db';
SQL
    ) || die "cannot read the roles of $SCOPE's leader $LEADER"
    local -A role_login=() role_pw=()
    local db_owner=
    while IFS='|' read -r kind name a _ c; do
        case $kind in
        role) role_login[$name]=$a role_pw[$name]=$c ;;
        db) db_owner=$a ;;
        esac
    done < <(printf '%s\n' "$state")
    state=
    local sql=() v_repl v_app
    if [[ -z "${role_login[replicator]+x}" ]]; then
        sql+=("CREATE ROLE replicator WITH LOGIN REPLICATION;")
        DONE+=("role replicator created")
    fi
    if [[ -z "${role_login[$APP_USER]+x}" ]]; then
        sql+=("CREATE ROLE :\"app_user\" WITH LOGIN;")
        DONE+=("role $APP_USER created")
    elif [[ "${role_login[$APP_USER]}" != t ]]; then
        sql+=("ALTER ROLE :\"app_user\" WITH LOGIN;")
        DONE+=("role $APP_USER altered")
    fi
    v_repl=$(printf '%s' "${role_pw[replicator]:-}" | scram_check PG_REPLICATION_PASSWORD)
    if [[ -n "$v_repl" ]]; then
        sql+=('\getenv v_repl DBFLEET_V_REPL' "ALTER ROLE replicator PASSWORD :'v_repl';")
        DONE+=("password of replicator set")
    fi
    v_app=$(printf '%s' "${role_pw[$APP_USER]:-}" | scram_check PG_APP_PASSWORD)
    if [[ -n "$v_app" ]]; then
        sql+=('\getenv v_app DBFLEET_V_APP' "ALTER ROLE :\"app_user\" PASSWORD :'v_app';")
        DONE+=("password of $APP_USER set")
    fi
    if [[ -z "$db_owner" ]]; then
        sql+=("CREATE DATABASE :\"app_db\" OWNER :\"app_user\";")
        DONE+=("database $APP_DB created")
    elif [[ "$db_owner" != "$APP_USER" ]]; then
        sql+=("ALTER DATABASE :\"app_db\" OWNER TO :\"app_user\";")
        DONE+=("database $APP_DB owner set")
    fi
    ((${#sql[@]} > 0)) || return 0
    printf '%s\n' "${sql[@]}" |
        DBFLEET_V_REPL=$v_repl DBFLEET_V_APP=$v_app \
            leader_psql -v app_user="$APP_USER" -v app_db="$APP_DB" -f - >/dev/null ||
        die "applying roles/database to $SCOPE's leader $LEADER failed"
}

# pending_restarts : the members whose PostgreSQL waits for a restart to apply a
# parameter of the dynamic configuration (Patroni's /patroni says pending_restart),
# the leader last.
pending_restarts() {
    local name body out=() last=
    for name in "${!MEMBER_REST[@]}"; do
        body=$(curl -sf -m 3 --cacert "$CA_FILE" "https://${MEMBER_REST[$name]}/patroni" 2>/dev/null) || continue
        printf '%s' "$body" | "$PYTHON" -I -c 'import json,sys; sys.exit(0 if json.load(sys.stdin).get("pending_restart") else 1)' ||
            continue
        if [[ "$name" == "$LEADER" ]]; then last=$name; else out+=("$name"); fi
    done
    [[ -z "$last" ]] || out+=("$last")
    printf '%s\n' "${out[@]}"
}

any_pending() { [[ -n "$(pending_restarts)" ]]; }

member_running() { leader && [[ " $VIEW " == *" $1=running/"* ]]; }

# restart_pending : a parameter that only a restart applies (archive_mode when a
# group gets backups, max_connections, ...) is applied by restarting the members
# that wait for it, one at a time, the leader last (Patroni restarts it in place:
# a short pause of writes, no failover).
restart_pending() {
    local name
    # Patroni applies a new dynamic configuration in its next cycles (loop_wait 2 s).
    wait_for 10 "a restart to be pending" any_pending 2>/dev/null || return 0
    for name in $(pending_restarts); do
        rest_change POST "$name" /restart '{"restart_pending": true}' >/dev/null ||
            die "Patroni could not restart $name to apply the dynamic configuration"
        wait_for 120 "$name to run again after its restart" member_running "$name" ||
            die "$name does not run again after its restart (see its patroni.log)"
        DONE+=("$name restarted to apply the configuration")
    done
}

check_inputs() {
    require_env SCOPE MEMBERS PREFERRED DCS_CONFIG TLS_CA
    [[ -x "$PYTHON" ]] || PYTHON=$(command -v python3) || die "python3 is required"
    parse_members
    ca_tempfile
}

do_create() {
    require_env PG_SUPERUSER_PASSWORD PG_REPLICATION_PASSWORD PG_APP_PASSWORD
    check_run_as
    check_inputs
    APP_DB=${APP_DB:-app}
    APP_USER=${APP_USER:-app}
    check_ident APP_DB "$APP_DB"
    check_ident APP_USER "$APP_USER"
    DONE=()
    wait_for 60 "$SCOPE to have a leader" leader ||
        die "$SCOPE has no leader after 60 s (members: ${VIEW:-none answered}); see docs/high-availability.md"
    if config_differs; then
        rest_change PATCH "$LEADER" /config "$DCS_CONFIG" >/dev/null ||
            die "Patroni refused the dynamic configuration of $SCOPE"
        DONE+=("dynamic configuration set")
        restart_pending
    fi
    local before=$LEADER
    if [[ "$LEADER" != "$PREFERRED" ]]; then
        switchover
        DONE+=("switched over from $before")
        # Back to the declared configuration (synchronous mode, if it was lifted).
        if config_differs; then
            rest_change PATCH "$LEADER" /config "$DCS_CONFIG" >/dev/null ||
                die "Patroni refused the dynamic configuration of $SCOPE"
        fi
    fi
    leader || die "$SCOPE lost its leader"
    ensure_roles
    local what="no changes"
    if ((${#DONE[@]} > 0)); then
        what=$(printf '%s, ' "${DONE[@]}")
        what=${what%, }
    fi
    printf '%s: %s led by %s in %s: %s\n' "$SCRIPT_NAME" "$SCOPE" "$LEADER" "$(elapsed)" "$what"
}

do_check() {
    check_inputs
    if ! leader; then
        warn "$SCOPE has no leader"
        exit "$DRIFT_EXIT_CODE"
    fi
    if [[ "$LEADER" != "$PREFERRED" ]]; then
        warn "$SCOPE is led by $LEADER, the fleet file prefers $PREFERRED"
        exit "$DRIFT_EXIT_CODE"
    fi
    if config_differs; then
        warn "$SCOPE's dynamic configuration differs from the fleet file"
        exit "$DRIFT_EXIT_CODE"
    fi
    exit 0
}

protect_secrets

case "${1:-}" in
create | update) do_create ;;
delete) printf '%s: nothing to delete for the leadership of %s\n' "$SCRIPT_NAME" "${SCOPE:-a group}" ;;
check) do_check ;;
*) die "usage: $SCRIPT_NAME create|update|delete|check (configuration in the environment)" ;;
esac
