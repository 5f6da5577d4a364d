#!/usr/bin/env bash
#
# etcd.sh create|update|delete|check - one member of a region group's etcd
# cluster (the consensus store Patroni keeps the group's leader key in).
# One member per region of the group; a group's cluster never spans another
# group.  etcd 3.4, API v3, on the region's own address.  Clients speak
# HTTPS: the member presents its certificate from the group's CA and admits
# only clients whose certificate that CA signed (--client-cert-auth), so
# neither a stranger nor another group's Patroni can read or write the
# group's keys.  Peers (raft) speak HTTPS too, with the same certificate
# both ways (--peer-client-cert-auth): a member admits only peers whose
# certificate the group's CA signed.
#
# Environment:
#   RUN_AS            OS user running etcd (the group's user)
#   ETCD_DIR          absolute directory (0700, dbfleet marker): data/ (etcd's
#                     data dir), etcd.log, etcd.pid, etcd.flags (the flags the
#                     running member was started with)
#   MEMBER_NAME       this member's name, the region code (e.g. fra)
#   ETCD_HOST         address etcd listens on (clients and peers): loopback on
#                     the local target, the host's own address with TARGET=ssh;
#                     never 0.0.0.0
#   ETCD_CLIENT_PORT  client port (https://ETCD_HOST:ETCD_CLIENT_PORT)
#   ETCD_PEER_PORT    peer port (https://ETCD_HOST:ETCD_PEER_PORT)
#   ETCD_CLUSTER      every member of the group, this one included, in etcd's
#                     --initial-cluster form: name=https://host:peerport,...
#   ETCD_CLIENTS      space-separated host:clientport of every member (this
#                     one included), in the order of ETCD_CLUSTER
#   ETCD_TOKEN        --initial-cluster-token (<fleet>-<group>): two groups
#                     started alike can never merge into one cluster
#   TLS_CERT, TLS_KEY the member's certificate (naming ETCD_HOST) and key from
#                     the group's CA (PEM, base64-encoded, one line each; TLS_KEY
#                     is secret), written to ETCD_DIR/tls 0600; etcd reads them
#                     again at every handshake, so a renewal needs no restart.
#                     The member's etcdctl calls present them as its client
#                     certificate (delete and check use the files already there)
#   TLS_CA            the group's CA certificate (PEM, base64-encoded): the only
#                     CA whose client and peer certificates etcd accepts
#   FLEET_NAME        optional: the fleet named in the directory's marker
#   TARGET            optional: "ssh" lets ETCD_HOST be any IPv4 address
#
# create/update (idempotent):
#   * running (pid file, /proc/PID/exe is etcd) with the recorded flags:
#     nothing happens ("unchanged"); with other flags: stopped and started
#     again ("restarted"), then waited for until it serves linearizable
#     reads (it is back in a cluster with a leader).  A member that ran its
#     peers on plain http (an older dbfleet) first moves its peer URL to
#     https in the cluster (member update), then restarts with peer TLS
#     ("restarted (peers moved to https)"); see "Moving peers to https".  The bootstrap flags (--initial-*) are not among
#     the recorded ones: etcd reads them only once, so a region added to the
#     group (a longer ETCD_CLUSTER) restarts no running member.
#   * not running, data present: started ("started").  If the other members
#     answer and no longer list this one (it was removed while it was down),
#     its data is useless (etcd would refuse to start with it): it is wiped
#     and the member joins afresh ("rejoined").
#   * not running, no data: the OTHER members are asked (short timeouts) for
#     their member list.  No answer: start as a member of a new cluster made
#     of ETCD_CLUSTER ("started").  In a brand-new group the first members
#     (started one after another by the replicas layer, or all at once) find
#     nobody with a quorum, so nobody answers (etcd 3.4 serves no client
#     request before it has joined a quorum), and they start "new", which is
#     what bootstraps the cluster; once a quorum of them runs, the rest find
#     it and join.  An answer: the cluster exists, so
#     this member is added to it (etcdctl member add, unless it is listed as
#     not yet started) and joins it with --initial-cluster-state existing
#     ("joined").  A listed, started member without data lost its data: it is
#     removed and added again.
#   The script waits (deadline) until the member listens on its client port,
#   not for quorum (the first member of a new group alone has none); a
#   joining member is also waited for until it serves its client port, since
#   a failed join makes etcd exit after it opened its ports.
# delete: if the other members answer and list this one, it is removed from
#   the cluster first (member remove: the group's quorum is then counted
#   without it), then the process is stopped (TERM, deadline, KILL) and
#   ETCD_DIR removed (only with this fleet's marker).  Removal that would
#   cost the rest of the group its quorum (a member down or just restarted)
#   is refused by etcd; the script then stops with that reason.  Idempotent.
# check: read-only; exits DRIFT_EXIT_CODE (lib.sh) when the member is not
#   running, not listening on its client port, or runs without peer TLS
#   (its peers still on plain http), 0 otherwise.
#
# Moving peers to https: the members of a group deployed with http peers are
# updated one after another (the replicas layer chains them), each in one
# run: member update to its https peer URL through the cluster, restart with
# peer TLS, wait until it serves again.  Only that member is ever down.  A
# member still on http holds no peer certificate and cannot verify https
# peers, so it cannot dial the members already moved; those dial it (http)
# and carry the traffic both ways over their own connections (etcd's
# streams are bidirectional once dialled), so the group keeps its quorum.
#
# Output: one summary line on stdout; progress/errors on stderr.  etcd logs
# (zap, JSON lines) to ETCD_DIR/etcd.log.
set -euo pipefail

# shellcheck source=SCRIPTDIR/lib.sh
. "$(dirname -- "${BASH_SOURCE[0]}")/lib.sh"

ETCD_BIN=${ETCD_BIN:-/usr/bin/etcd}
ETCDCTL_BIN=${ETCDCTL_BIN:-/usr/bin/etcdctl}
# Patroni keeps a handful of keys per group; 256 MiB is far more than it
# needs and small enough that a runaway writer hits the quota (and an alarm)
# long before the disk is full.
QUOTA_BACKEND_BYTES=268435456
# etcd.log is moved to etcd.log.1 when a start finds it larger than this.
LOG_ROTATE_BYTES=16777216

# start_failure : why etcd did not start, for the error line: a full disk
# (which may not even leave room for etcd to log it), else etcd's last
# error-level log line.
start_failure() {
    local avail_kb cause
    # shellcheck disable=SC2153  # ETCD_DIR is an input (environment)
    avail_kb=$(df -Pk -- "$ETCD_DIR" 2>/dev/null | awk 'NR == 2 { print $4 }' || true)
    if [[ "$avail_kb" =~ ^[0-9]+$ ]] && ((avail_kb < 32768)); then
        printf 'not enough space left on device: %s KiB free on the file system of %s' \
            "$avail_kb" "$ETCD_DIR"
        return 0
    fi
    cause=$(grep -E '"level":"(fatal|error|panic)"' "$LOGFILE" 2>/dev/null | tail -n 1 |
        sed -n 's/.*"msg":"\([^"]*\)".*"error":"\([^"]*\)".*/\1: \2/p' | cut -c1-300 || true)
    printf '%s' "${cause:-no error in its log}"
}

# Deadlines (seconds).
LISTEN_TIMEOUT=15
JOIN_TIMEOUT=20
# member add/remove are refused as "unhealthy cluster" while any member has
# been connected for less than 5 s (etcd's HealthInterval); retried this long.
RECONFIG_TIMEOUT=15
STOP_TIMEOUT=15

init_vars() {
    # shellcheck disable=SC2153  # ETCD_DIR comes from the environment
    DATA=$ETCD_DIR/data
    LOGFILE=$ETCD_DIR/etcd.log
    PIDFILE=$ETCD_DIR/etcd.pid
    FLAGSFILE=$ETCD_DIR/etcd.flags
    TLS_DIR=$ETCD_DIR/tls
    CLIENT_URL=https://$ETCD_HOST:$ETCD_CLIENT_PORT
    PEER_URL=https://$ETCD_HOST:$ETCD_PEER_PORT
    # This member's peer URL as an older dbfleet advertised it (plain http).
    HTTP_PEER_URL=http://$ETCD_HOST:$ETCD_PEER_PORT
}

# check_member_name NAME VALUE : an etcd member name (a region code: a DNS
# label), which needs no quoting in --initial-cluster.
check_member_name() {
    [[ "$2" =~ ^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$ ]] ||
        die "$1: '$2' is not a member name (lower-case letters, digits, -)"
}

# parse_cluster : check ETCD_CLUSTER and ETCD_CLIENTS; set CLUSTER_NAMES,
# CLUSTER_URLS (parallel arrays) and OTHERS (the other members' client
# endpoints, comma-separated; "" for a group of one).
parse_cluster() {
    local entry name url hostport seen_names=" " seen_urls=" " own=0 entries=()
    CLUSTER_NAMES=()
    CLUSTER_URLS=()
    IFS=',' read -r -a entries <<<"$ETCD_CLUSTER"
    for entry in "${entries[@]}"; do
        [[ "$entry" == *=https://* ]] || die "ETCD_CLUSTER: '$entry' is not name=https://host:port"
        name=${entry%%=*}
        url=${entry#*=}
        check_member_name ETCD_CLUSTER "$name"
        hostport=${url#https://}
        check_hostport ETCD_CLUSTER "$hostport"
        check_bind ETCD_CLUSTER "${hostport%:*}"
        [[ "$seen_names" != *" $name "* ]] || die "ETCD_CLUSTER: member $name is listed twice"
        [[ "$seen_urls" != *" $url "* ]] || die "ETCD_CLUSTER: peer URL $url is listed twice"
        seen_names+="$name "
        seen_urls+="$url "
        CLUSTER_NAMES+=("$name")
        CLUSTER_URLS+=("$url")
        if [[ "$name" == "$MEMBER_NAME" ]]; then
            [[ "$url" == "$PEER_URL" ]] ||
                die "ETCD_CLUSTER gives member $MEMBER_NAME the peer URL $url, not $PEER_URL"
            own=1
        elif [[ "$url" == "$PEER_URL" ]]; then
            die "ETCD_CLUSTER gives this member's peer URL $PEER_URL to member $name"
        fi
    done
    ((own)) || die "ETCD_CLUSTER does not list this member ($MEMBER_NAME=$PEER_URL)"

    local clients=() seen=" " others=()
    read -r -a clients <<<"$ETCD_CLIENTS"
    ((${#clients[@]} == ${#CLUSTER_NAMES[@]})) ||
        die "ETCD_CLIENTS has ${#clients[@]} endpoints, ETCD_CLUSTER ${#CLUSTER_NAMES[@]} members"
    own=0
    for hostport in "${clients[@]}"; do
        check_hostport ETCD_CLIENTS "$hostport"
        check_bind ETCD_CLIENTS "${hostport%:*}"
        [[ "$seen" != *" $hostport "* ]] || die "ETCD_CLIENTS: $hostport is listed twice"
        seen+="$hostport "
        if [[ "$hostport" == "$ETCD_HOST:$ETCD_CLIENT_PORT" ]]; then
            own=1
        else
            others+=("$hostport")
        fi
    done
    ((own)) || die "ETCD_CLIENTS does not list this member ($ETCD_HOST:$ETCD_CLIENT_PORT)"
    OTHERS=$(
        IFS=,
        printf '%s' "${others[*]}"
    )
}

check_inputs() {
    check_run_as
    check_fleet
    require_env ETCD_DIR MEMBER_NAME ETCD_HOST ETCD_CLIENT_PORT ETCD_PEER_PORT ETCD_CLUSTER \
        ETCD_CLIENTS ETCD_TOKEN
    check_abs_path ETCD_DIR
    check_member_name MEMBER_NAME "$MEMBER_NAME"
    check_bind ETCD_HOST "$ETCD_HOST"
    check_port ETCD_CLIENT_PORT "$ETCD_CLIENT_PORT"
    check_port ETCD_PEER_PORT "$ETCD_PEER_PORT"
    [[ "$ETCD_CLIENT_PORT" != "$ETCD_PEER_PORT" ]] ||
        die "ETCD_CLIENT_PORT and ETCD_PEER_PORT are both $ETCD_PEER_PORT"
    [[ "$ETCD_TOKEN" =~ ^[A-Za-z0-9._-]{1,128}$ ]] ||
        die "ETCD_TOKEN: '$ETCD_TOKEN' may only contain letters, digits and . _ - (1..128)"
    init_vars
    parse_cluster
}

# ctl ENDPOINTS ARGS... : etcdctl (API v3) against ENDPOINTS (comma-separated
# host:port), as RUN_AS, with short timeouts and a clean environment: an
# inherited ETCDCTL_* (endpoints, credentials) must not change whom we ask.
# HTTPS, verifying the members against the group's CA, with this member's
# certificate as the client certificate.  With PLAIN_CLIENTS=1: plain http
# and no certificate, for members an older dbfleet started without client TLS
# (only while they move to TLS).
ctl() {
    local scheme=https tls=(--cacert="$TLS_DIR/ca.crt" --cert="$TLS_DIR/server.crt"
        --key="$TLS_DIR/server.key")
    if [[ -n "${PLAIN_CLIENTS:-}" ]]; then
        scheme=http
        tls=()
    fi
    local endpoints=$scheme://${1//,/,$scheme://}
    shift
    run_as env -i ETCDCTL_API=3 "$ETCDCTL_BIN" --endpoints="$endpoints" "${tls[@]}" \
        --dial-timeout=1s --command-timeout=3s "$@"
}

# cluster_members : the other members' `member list` (etcdctl's simple
# format: "id, status, name, peer-urls, client-urls, is-learner" per line);
# fails when none of them answers.
cluster_members() {
    [[ -n "$OTHERS" ]] || return 1
    ctl "$OTHERS" member list -w simple 2>/dev/null
}

# member_field LINE INDEX : field INDEX (0 id, 1 status, 2 name, 3 peer URLs)
# of a `member list` line; fields are separated by ", ", URLs by ",".
member_field() {
    local rest=$1 i
    for ((i = 0; i < $2; i++)); do rest=${rest#*, }; done
    printf '%s' "${rest%%, *}"
}

# own_member LIST : the line of LIST whose peer URLs include PEER_URL, or
# HTTP_PEER_URL (this member before its peers moved to https).
own_member() {
    local line urls
    while IFS= read -r line; do
        urls=",$(member_field "$line" 3),"
        if [[ "$urls" == *",$PEER_URL,"* || "$urls" == *",$HTTP_PEER_URL,"* ]]; then
            printf '%s\n' "$line"
            return 0
        fi
    done <<<"$1"
    return 1
}

# move_peer_url LIST : if LIST (a `member list`) gives this member a peer URL
# other than PEER_URL (plain http, from an older dbfleet), move it to PEER_URL
# (member update, through the cluster).  Prints nothing; dies on refusal.
move_peer_url() {
    local line why
    line=$(own_member "$1") || return 0
    [[ "$(member_field "$line" 3)" != "$PEER_URL" ]] || return 0
    info "moving member $MEMBER_NAME's peer URL $(member_field "$line" 3) to $PEER_URL"
    # Through this member too: a group of one has nobody else to ask.
    why=$(VIA="$ETCD_HOST:$ETCD_CLIENT_PORT${OTHERS:+,$OTHERS}" reconfigure "member update" member update "$(member_field "$line" 0)" \
        --peer-urls="$PEER_URL") ||
        die "cannot move member $MEMBER_NAME's peer URL to $PEER_URL: $why"
}

# reconfigure WHAT ARGS... : a member add/remove/update through the other
# members (VIA instead, when set);
# "unhealthy cluster" (a member connected less than 5 s ago) is retried until
# RECONFIG_TIMEOUT.  On failure prints etcdctl's reason and returns 1.
reconfigure() {
    local what=$1 out now deadline
    shift
    now=${EPOCHREALTIME//[!0-9]/}
    deadline=$((now + RECONFIG_TIMEOUT * 1000000))
    while :; do
        if out=$(ctl "${VIA:-$OTHERS}" "$@" 2>&1); then
            return 0
        fi
        now=${EPOCHREALTIME//[!0-9]/}
        if [[ "$out" != *"unhealthy cluster"* ]] || ((now >= deadline)); then
            out=$(grep '^Error:' <<<"$out" | tail -n 1)
            printf '%s\n' "${out:-etcdctl $what failed without a reason}"
            return 1
        fi
        sleep 0.5
    done
}

# initial_cluster_from LIST : --initial-cluster for joining the cluster of
# LIST: every listed member and peer URL.  Members that have not started yet
# have no name in the list; they get theirs from ETCD_CLUSTER (etcd matches
# members by peer URL, and needs only this member's own name).
initial_cluster_from() {
    local line id name url out=() i urls=()
    while IFS= read -r line; do
        [[ -n "$line" ]] || continue
        id=$(member_field "$line" 0)
        name=$(member_field "$line" 2)
        if [[ -n "$(own_member "$line")" ]]; then
            name=$MEMBER_NAME
        elif [[ -z "$name" ]]; then
            name=member-$id
            for i in "${!CLUSTER_URLS[@]}"; do
                [[ ",$(member_field "$line" 3)," == *",${CLUSTER_URLS[i]},"* ]] &&
                    name=${CLUSTER_NAMES[i]}
            done
        fi
        IFS=',' read -r -a urls <<<"$(member_field "$line" 3)"
        for url in "${urls[@]}"; do out+=("$name=$url"); done
    done <<<"$1"
    (
        IFS=,
        printf '%s' "${out[*]}"
    )
}

# join_cluster LIST : make this member a member of the cluster of LIST (it
# answered), so that it can start with --initial-cluster-state existing; sets
# INITIAL_CLUSTER.
join_cluster() {
    local list=$1 line id why other
    # This region's old identity under another peer URL (its address or peer
    # port changed): it would count as a dead member forever.
    while IFS= read -r other; do
        [[ -n "$other" && "$(member_field "$other" 2)" == "$MEMBER_NAME" ]] || continue
        own_member "$other" >/dev/null && continue
        id=$(member_field "$other" 0)
        info "removing member $MEMBER_NAME's old identity $id ($(member_field "$other" 3))"
        why=$(reconfigure "member remove" member remove "$id") ||
            die "cannot remove member $MEMBER_NAME's old identity $id: $why"
    done <<<"$list"
    if line=$(own_member "$list"); then
        id=$(member_field "$line" 0)
        if [[ "$(member_field "$line" 1)" == started ]]; then
            # Listed and started, yet no data here: its data was lost.  The old
            # identity goes, a new one is added.
            info "member $MEMBER_NAME ($id) is in the cluster but has no data here: re-adding it"
            why=$(reconfigure "member remove" member remove "$id") ||
                die "cannot remove the stale member $MEMBER_NAME ($id): $why"
            line=
        fi
    fi
    if [[ -n "$line" ]]; then
        # Added by an older dbfleet (http peers) but never started.
        move_peer_url "$list"
    else
        why=$(reconfigure "member add" member add "$MEMBER_NAME" --peer-urls="$PEER_URL") ||
            die "cannot add member $MEMBER_NAME to the group's etcd cluster ($OTHERS): $why"
    fi
    list=$(cluster_members) || die "the group's etcd cluster ($OTHERS) stopped answering"
    own_member "$list" >/dev/null || die "member $MEMBER_NAME is not listed after member add"
    INITIAL_CLUSTER=$(initial_cluster_from "$list")
}

# etcd_pid : the pid in the pid file if it is a running etcd.
etcd_pid() {
    local pid=
    [[ -f "$PIDFILE" ]] && read -r pid <"$PIDFILE"
    if proc_exe_is "$pid" "$ETCD_BIN"; then printf '%s' "$pid"; fi
}

# has_data : etcd's data dir holds this member's write-ahead log, i.e. the
# member has been created (bootstrapped or joined) here before.
has_data() { compgen -G "$DATA/member/wal/*.wal" >/dev/null; }

# render_flags : the flags of a running member, one per line (recorded in
# etcd.flags; a change restarts the member).
# A peer proves itself by its certificate from the group's CA.  etcd would
# also match the certificate's addresses against the connection's source
# address, which a member cannot choose: on the local target every loopback
# connection leaves from 127.0.0.1, on hosts with several addresses (or behind
# NAT) from whichever the route picks.  That check is turned off; the CA
# check, which keeps every other group and every stranger out, stays.
# Heartbeat 200 ms, election 1.5 s (docs/high-availability.md, "Timings"):
# a group's members sit in different regions, and etcd wants the heartbeat
# near the round trip between them and the election at ten round trips; an
# election, at most twice 1.5 s, stays within Patroni's retry_timeout (4 s).
render_flags() {
    cat <<EOF
--name=$MEMBER_NAME
--data-dir=$DATA
--listen-client-urls=$CLIENT_URL
--advertise-client-urls=$CLIENT_URL
--cert-file=$TLS_DIR/server.crt
--key-file=$TLS_DIR/server.key
--trusted-ca-file=$TLS_DIR/ca.crt
--client-cert-auth=true
--peer-cert-file=$TLS_DIR/server.crt
--peer-key-file=$TLS_DIR/server.key
--peer-trusted-ca-file=$TLS_DIR/ca.crt
--peer-client-cert-auth=true
--experimental-peer-skip-client-san-verification=true
--listen-peer-urls=$PEER_URL
--initial-advertise-peer-urls=$PEER_URL
--heartbeat-interval=200
--election-timeout=1500
--auto-compaction-mode=periodic
--auto-compaction-retention=1
--quota-backend-bytes=$QUOTA_BACKEND_BYTES
--snapshot-count=10000
--strict-reconfig-check=true
--enable-v2=true
--logger=zap
--log-outputs=stderr
EOF
}

listening() { (exec 3<>"/dev/tcp/$ETCD_HOST/$ETCD_CLIENT_PORT") 2>/dev/null; }

# up PID : PID still runs etcd and the client port accepts connections.
up() { proc_exe_is "$1" "$ETCD_BIN" && listening; }

# serving PID : PID still runs etcd and answers on its client port (it has
# joined its cluster).
serving() { proc_exe_is "$1" "$ETCD_BIN" && ctl "$ETCD_HOST:$ETCD_CLIENT_PORT" endpoint status >/dev/null 2>&1; }

# healthy PID : PID still runs etcd and serves a linearizable read (etcdctl
# endpoint health): it is in a cluster that has a leader and a quorum.
healthy() { proc_exe_is "$1" "$ETCD_BIN" && ctl "$ETCD_HOST:$ETCD_CLIENT_PORT" endpoint health >/dev/null 2>&1; }

# start_etcd [BOOTSTRAP_FLAGS...] : start etcd detached (its own session,
# stdin /dev/null, stdout/stderr appended to etcd.log) as RUN_AS, with a
# clean environment (etcd reads any ETCD_* variable as a flag); record its
# pid and wait until it listens.  Sets PID.
start_etcd() {
    local flags=()
    mapfile -t flags < <(render_flags)
    if [[ -f "$LOGFILE" ]] && (($(stat -c %s -- "$LOGFILE") > LOG_ROTATE_BYTES)); then
        run_as mv -f -- "$LOGFILE" "$LOGFILE.1" || die "cannot rotate $LOGFILE"
    fi
    [[ -e "$PIDFILE" ]] && rm -f -- "$PIDFILE"
    # setsid execs without forking (the background job is no process group
    # leader), so $! is etcd's pid.
    # shellcheck disable=SC2016  # expanded by the inner shell
    PID=$(run_as bash -c 'log=$1; shift; setsid "$@" </dev/null >>"$log" 2>&1 & printf "%s" "$!"' \
        start_etcd "$LOGFILE" env -i "$ETCD_BIN" "${flags[@]}" "$@") ||
        die "cannot start $ETCD_BIN as $RUN_AS"
    printf '%s\n' "$PID" | put_file "$PIDFILE" || true
    wait_for "$LISTEN_TIMEOUT" "etcd to listen on $CLIENT_URL" up "$PID" ||
        die "etcd $MEMBER_NAME did not come up on $CLIENT_URL: $(start_failure) (see $LOGFILE)"
}

gone() { ! proc_exe_is "$1" "$ETCD_BIN"; }

# stop_etcd PID : TERM (a leader first hands its leadership over), then KILL
# after STOP_TIMEOUT.
stop_etcd() {
    local pid=$1
    kill -TERM "$pid" 2>/dev/null || true
    if ! wait_for "$STOP_TIMEOUT" "etcd $pid to exit" gone "$pid"; then
        warn "etcd $pid ignored SIGTERM; sending SIGKILL"
        kill -KILL "$pid" 2>/dev/null || true
        wait_for 5 "etcd $pid to die" gone "$pid" || die "etcd $pid is still running"
    fi
}

# failed_join : the member was added to the cluster but did not start (a full
# disk, say). Undo the add - a member that never runs would count against the
# group's quorum - and the half-made data, then stop with the cause.
failed_join() {
    local cause list line
    cause=$(start_failure)
    [[ -n "${PID:-}" ]] && stop_etcd "$PID"
    if list=$(cluster_members) && line=$(own_member "$list"); then
        reconfigure "member remove" member remove "$(member_field "$line" 0)" >/dev/null ||
            warn "could not take member $MEMBER_NAME back out of the cluster"
    fi
    run_as rm -rf -- "$DATA" || true
    die "etcd $MEMBER_NAME did not join its cluster: $cause (see $LOGFILE)"
}

# join_and_start LIST : add this member to the running cluster (LIST: its
# `member list`), start it as an existing member and wait until it serves.
join_and_start() {
    join_cluster "$1"
    start_etcd --initial-cluster="$INITIAL_CLUSTER" --initial-cluster-state=existing \
        --initial-cluster-token="$ETCD_TOKEN"
    wait_for "$JOIN_TIMEOUT" "etcd $MEMBER_NAME to join its cluster" serving "$PID" ||
        failed_join
}

do_create() {
    check_inputs
    [[ -x "$ETCD_BIN" ]] || die "etcd not found at $ETCD_BIN (package etcd-server)"
    [[ -x "$ETCDCTL_BIN" ]] || die "etcdctl not found at $ETCDCTL_BIN (package etcd-client)"
    claim_dir "$ETCD_DIR" use
    make_dirs "$ETCD_DIR"
    mark_dir "$ETCD_DIR" "etcd member"
    lock_dir "$ETCD_DIR"

    local what flags_changed=0 list line was_healthy tls_note=
    # New files under the same names: etcd reads them at the next handshake.
    if write_tls "$TLS_DIR" && [[ -n "$(etcd_pid)" ]]; then tls_note=", certificate renewed"; fi
    render_flags | put_file "$FLAGSFILE" && flags_changed=1
    PID=$(etcd_pid)
    if [[ -n "$PID" ]]; then
        if ((!flags_changed)); then
            what=unchanged
        else
            what="restarted (flags changed)"
            # A member of a working cluster must be back in it before the next
            # member restarts (the replicas layer updates them one by one).
            # Its clients may still be on plain http too (a group from before
            # etcd used TLS at all): then it is asked that way.
            local all="$ETCD_HOST:$ETCD_CLIENT_PORT${OTHERS:+,$OTHERS}" plain=
            was_healthy=0
            if healthy "$PID"; then
                was_healthy=1
            elif PLAIN_CLIENTS=1 healthy "$PID"; then
                was_healthy=1
                plain=1
            fi
            if ! list=$(PLAIN_CLIENTS=$plain ctl "$all" member list -w simple 2>/dev/null); then
                list=$(PLAIN_CLIENTS=1 ctl "$all" member list -w simple 2>/dev/null) && plain=1
            fi
            if [[ -n "$list" ]] && line=$(own_member "$list") &&
                [[ "$(member_field "$line" 3)" != "$PEER_URL" ]]; then
                PLAIN_CLIENTS=$plain move_peer_url "$list"
                what="restarted (peers moved to https)"
            fi
            stop_etcd "$PID"
            start_etcd
            if ((was_healthy)); then
                wait_for "$JOIN_TIMEOUT" "etcd $MEMBER_NAME to serve in its cluster again" healthy "$PID" ||
                    die "etcd $MEMBER_NAME restarted but does not serve in its cluster again: $(start_failure) (see $LOGFILE)"
            fi
        fi
    elif has_data; then
        what=started
        if list=$(cluster_members) && ! own_member "$list" >/dev/null; then
            info "the group's etcd cluster no longer lists member $MEMBER_NAME: wiping its data, joining again"
            run_as rm -rf -- "$DATA" || die "cannot remove $DATA"
            join_and_start "$list"
            what=rejoined
        else
            # Stopped while the others moved their peers to https: its own
            # peer URL moves too before it starts with peer TLS.
            [[ -z "${list:-}" ]] || move_peer_url "$list"
            start_etcd
        fi
    elif list=$(cluster_members); then
        join_and_start "$list"
        what=joined
    else
        start_etcd --initial-cluster="$ETCD_CLUSTER" --initial-cluster-state=new \
            --initial-cluster-token="$ETCD_TOKEN"
        what=started
    fi
    printf '%s: member %s %s (pid %s) %s%s in %s\n' \
        "$SCRIPT_NAME" "$MEMBER_NAME" "$CLIENT_URL" "$PID" "$what" "$tls_note" "$(elapsed)"
}

# client_tls : the files ctl presents are this member's (ETCD_DIR/tls); when
# they are gone (a delete after the directory went), the same material from
# the environment in a private temporary directory of RUN_AS's, removed on exit.
client_tls() {
    [[ ! -f "$TLS_DIR/server.crt" && -n "${TLS_CERT:-}" && -n "${TLS_KEY:-}" && -n "${TLS_CA:-}" ]] ||
        return 0
    local tmp
    tmp=$(run_as mktemp -d "${TMPDIR:-/tmp}/dbfleet-etcd.XXXXXX") || return 0
    # shellcheck disable=SC2064  # the name is fixed now
    trap "rm -rf -- '$tmp'" EXIT
    TLS_DIR=$tmp
    write_tls "$TLS_DIR" || true
}

do_delete() {
    check_inputs
    local removed="not removed from the cluster (no other member answered)" list line id why
    if [[ -d "$ETCD_DIR" ]]; then
        # Another fleet's directory: refuse before touching any cluster.
        claim_dir "$ETCD_DIR" delete
        lock_dir "$ETCD_DIR"
    fi
    client_tls
    # Leave the cluster first, so that the rest of the group counts its quorum
    # without this member; etcd refuses if that would cost them their quorum.
    # When a whole group is deleted, every member leaves at the same time: etcd
    # then refuses some removals for a moment (membership is changing), and the
    # last members find nobody left to ask; both end the loop below.
    local now deadline first_count=""
    now=${EPOCHREALTIME//[!0-9]/}
    deadline=$((now + RECONFIG_TIMEOUT * 1000000))
    while list=$(cluster_members); do
        removed="not a member of the cluster"
        line=$(own_member "$list") || break
        first_count=${first_count:-$(wc -l <<<"$list")}
        id=$(member_field "$line" 0)
        if why=$(ctl "$OTHERS" member remove "$id" 2>&1); then
            removed="removed from the cluster"
            break
        fi
        why=$(grep '^Error:' <<<"$why" | tail -n 1)
        if [[ "$why" != *"unhealthy cluster"* && "$why" != *"not enough started members"* ]]; then
            # No quorum at all (the group is going away member by member):
            # stopping this member cannot make that worse.
            warn "cannot remove member $MEMBER_NAME from the cluster (${why:-no reason given}); stopping it anyway"
            removed="not removed from the cluster (no quorum)"
            break
        fi
        now=${EPOCHREALTIME//[!0-9]/}
        if ((now >= deadline)); then
            if (($(wc -l <<<"$list") < first_count)); then
                # Other members left meanwhile: the group is being taken
                # down as a whole, and nobody is left to protect.
                warn "cannot remove member $MEMBER_NAME from the cluster ($why) while the rest of the group leaves; stopping it anyway"
                removed="not removed from the cluster (the group is leaving)"
                break
            fi
            die "etcd refuses to remove member $MEMBER_NAME ($why): the other members would lose their quorum; bring the group's other members back up, then run again"
        fi
        sleep 0.5
    done
    if [[ -d "$ETCD_DIR" ]]; then
        local pid
        pid=$(etcd_pid)
        [[ -z "$pid" ]] || stop_etcd "$pid"
        safe_remove_dir "$ETCD_DIR"
    fi
    printf '%s: member %s %s, deleted %s in %s\n' \
        "$SCRIPT_NAME" "$MEMBER_NAME" "$removed" "$ETCD_DIR" "$(elapsed)"
}

# do_check : read-only drift probe.
do_check() {
    require_env ETCD_DIR ETCD_HOST ETCD_CLIENT_PORT ETCD_PEER_PORT
    init_vars
    local pid cmdline
    pid=$(etcd_pid)
    [[ -n "$pid" ]] || exit "$DRIFT_EXIT_CODE"
    listening || exit "$DRIFT_EXIT_CODE"
    # Peers still on plain http (started by an older dbfleet): drift.
    cmdline=$(tr '\0' '\n' <"/proc/$pid/cmdline" 2>/dev/null) || exit "$DRIFT_EXIT_CODE"
    grep -qxF -- "--listen-peer-urls=$PEER_URL" <<<"$cmdline" || exit "$DRIFT_EXIT_CODE"
    grep -qxF -- "--peer-client-cert-auth=true" <<<"$cmdline" || exit "$DRIFT_EXIT_CODE"
    exit 0
}

protect_secrets

case "${1:-}" in
create | update) do_create ;;
delete) do_delete ;;
check) do_check ;;
*) die "usage: $SCRIPT_NAME create|update|delete|check (configuration in the environment)" ;;
esac
