#!/usr/bin/env bash
#
# firewall.sh create|update|delete|check - a region group's host firewall
# (nftables) on one host of the ssh target.
#
# Environment:
#   FW_TABLE          nftables table of the group (inet family), e.g.
#                     dbfleet_prod_eu; one per group, so groups and fleets on
#                     a host never touch each other's rules
#   HOST_ADDRESS      this host's address (the one its services listen on)
#   NODE_PORTS        PostgreSQL ports of the group on this host
#   STATS_PORT        the proxy's stats port
#   CLIENT_PORTS      the ports applications use: the proxy's read and write
#                     ports and the pooler's port
#   GROUP_SOURCES     IPv4 addresses of every host of the group
#   CLIENT_SOURCES    CIDRs that may also reach CLIENT_PORTS (applications)
#   OPERATOR_SOURCES  CIDRs that may reach every port above (dbfleet status)
#   BACKUP_PORT       optional: pgBackRest's TLS server, which admits the
#                     group's hosts only (not the operators, not the clients)
#   PEERS             address:port of the group's other hosts' sshd: each
#                     must be reachable from here (proves the routes)
#
# create|update: checks the peers, then replaces the table atomically (one
# `nft -f` transaction): the node and stats ports admit only the group and the
# operators, the client ports also the clients; everything else on those ports
# is dropped. Other ports (ssh included) are left to the host's own rules.
# check: exit DRIFT_EXIT_CODE (lib.sh) when the table is missing or differs.
# delete: removes the table.
set -euo pipefail

# shellcheck source=SCRIPTDIR/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

check_inputs() {
    require_env FW_TABLE HOST_ADDRESS
    [[ "$FW_TABLE" =~ ^[a-z][a-z0-9_]{0,40}$ ]] || die "FW_TABLE: '$FW_TABLE' is not a table name"
    check_ipv4 HOST_ADDRESS "$HOST_ADDRESS"
    local p a
    for p in ${NODE_PORTS:-} ${STATS_PORT:-} ${CLIENT_PORTS:-} ${BACKUP_PORT:-}; do check_port PORT "$p"; done
    for a in ${GROUP_SOURCES:-}; do check_ipv4 GROUP_SOURCES "$a"; done
    for a in ${CLIENT_SOURCES:-} ${OPERATOR_SOURCES:-}; do
        [[ "$a" =~ ^[0-9]{1,3}(\.[0-9]{1,3}){3}(/[0-9]{1,2})?$ ]] || die "'$a' is not an IPv4 address or CIDR"
    done
    command -v nft >/dev/null || die "nft is not installed on this host (package nftables)"
}

# joined WORDS... : "a,b" (an empty anonymous set is not allowed in nft, so
# render skips the rules with no elements).
joined() { local IFS=,; printf '%s' "$*"; }

render() {
    local admin clients inner outer
    read -ra admin <<<"${GROUP_SOURCES:-} ${OPERATOR_SOURCES:-}"
    read -ra clients <<<"${GROUP_SOURCES:-} ${OPERATOR_SOURCES:-} ${CLIENT_SOURCES:-}"
    read -ra inner <<<"${NODE_PORTS:-} ${STATS_PORT:-}"
    read -ra outer <<<"${CLIENT_PORTS:-}"
    printf 'table inet %s {\n' "$FW_TABLE"
    printf '  chain input {\n    type filter hook input priority 0; policy accept;\n'
    if ((${#inner[@]})); then
        if ((${#admin[@]})); then
            printf '    ip daddr %s tcp dport { %s } ip saddr { %s } accept\n' \
                "$HOST_ADDRESS" "$(joined "${inner[@]}")" "$(joined "${admin[@]}")"
        fi
        printf '    ip daddr %s tcp dport { %s } drop\n' "$HOST_ADDRESS" "$(joined "${inner[@]}")"
    fi
    if ((${#outer[@]})); then
        if ((${#clients[@]})); then
            printf '    ip daddr %s tcp dport { %s } ip saddr { %s } accept\n' \
                "$HOST_ADDRESS" "$(joined "${outer[@]}")" "$(joined "${clients[@]}")"
        fi
        printf '    ip daddr %s tcp dport { %s } drop\n' "$HOST_ADDRESS" "$(joined "${outer[@]}")"
    fi
    if [[ -n "${BACKUP_PORT:-}" ]]; then
        if [[ -n "${GROUP_SOURCES:-}" ]]; then
            read -ra admin <<<"${GROUP_SOURCES:-}"
            printf '    ip daddr %s tcp dport %s ip saddr { %s } accept\n' \
                "$HOST_ADDRESS" "$BACKUP_PORT" "$(joined "${admin[@]}")"
        fi
        printf '    ip daddr %s tcp dport %s drop\n' "$HOST_ADDRESS" "$BACKUP_PORT"
    fi
    printf '  }\n}\n'
}

fingerprint() { render | sha256sum | cut -c1-16; }

check_peers() {
    local peer host port
    for peer in ${PEERS:-}; do
        host=${peer%:*} port=${peer##*:}
        timeout 5 bash -c "exec 3<>/dev/tcp/$host/$port" 2>/dev/null ||
            die "host $HOST_ADDRESS cannot reach $host:$port (a host of the same group): check the route between them"
    done
}

installed_fingerprint() {
    nft list table inet "$FW_TABLE" 2>/dev/null | sed -n 's/.*comment "dbfleet \([0-9a-f]*\)".*/\1/p' | head -n 1
}

do_create() {
    check_inputs
    check_peers
    local fp rules
    fp=$(fingerprint)
    if [[ "$(installed_fingerprint)" == "$fp" ]]; then
        echo "no changes: firewall $FW_TABLE"
        return
    fi
    # Declare, flush-by-delete and define in one transaction: no moment without rules.
    rules=$(render | sed "s/^  chain input {/  chain input {\n    comment \"dbfleet $fp\"/")
    printf 'table inet %s\ndelete table inet %s\n%s\n' "$FW_TABLE" "$FW_TABLE" "$rules" | nft -f - ||
        die "nft could not load the rules of table $FW_TABLE"
    local ports
    read -ra ports <<<"${NODE_PORTS:-} ${STATS_PORT:-} ${CLIENT_PORTS:-} ${BACKUP_PORT:-}"
    echo "firewall $FW_TABLE: ports $(joined "${ports[@]}") guarded"
}

do_check() {
    check_inputs
    [[ "$(installed_fingerprint)" == "$(fingerprint)" ]] || exit "$DRIFT_EXIT_CODE"
    exit 0
}

do_delete() {
    require_env FW_TABLE
    if nft list table inet "$FW_TABLE" >/dev/null 2>&1; then
        nft delete table inet "$FW_TABLE" || die "nft could not delete table $FW_TABLE"
        echo "firewall $FW_TABLE removed"
    else
        echo "no changes: no table $FW_TABLE"
    fi
}

case "${1:-}" in
create | update) do_create ;;
delete) do_delete ;;
check) do_check ;;
*) die "usage: $SCRIPT_NAME create|update|delete|check (FW_TABLE, HOST_ADDRESS, ... in the environment)" ;;
esac
