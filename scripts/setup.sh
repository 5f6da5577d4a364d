#!/usr/bin/env bash
# Makes this clone able to run dbfleet offline: the Pulumi CLI and its Python
# language host (built from Go modules when no matching `pulumi` is installed),
# OpenBao, PostgreSQL 15 and HAProxy, and the project's Python environment.
#
# Everything built is cached outside the repo, keyed by version, so a fresh clone
# on the same machine reuses it and a repeated run does nothing. Each step says
# what it does; a failing step stops with one message saying what is missing and
# what the user can do.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/versions.sh
source "$ROOT/scripts/versions.sh"
LOG_DIR="$DBFLEET_CACHE/logs"
mkdir -p "$LOG_DIR"

say() { printf 'setup: %s\n' "$*"; }
fail() {
  printf 'setup: FAILED: %s\n' "$1" >&2
  [ -n "${2:-}" ] && printf 'setup: what you can do: %s\n' "$2" >&2
  [ -n "${3:-}" ] && [ -f "$3" ] && { printf 'setup: last lines of %s:\n' "$3" >&2; tail -n 15 "$3" >&2; }
  exit 1
}

# --- Pulumi CLI + Python language host ---------------------------------------
pulumi_matches() { # $1 = pulumi binary
  [ -x "$1" ] && [ "$("$1" version 2>/dev/null)" = "v$PULUMI_VERSION" ]
}

ensure_pulumi() {
  local sys
  sys="$(PATH="$(printf '%s' "$PATH" | tr ':' '\n' | grep -vF "$PULUMI_BIN_DIR" | paste -sd:)" command -v pulumi || true)"
  if [ -n "$sys" ] && pulumi_matches "$sys" && command -v pulumi-language-python >/dev/null; then
    say "using the installed pulumi v$PULUMI_VERSION at $sys"
    mkdir -p "$PULUMI_TOOL_DIR"
    printf '%s\n' "$(dirname "$sys")" >"$PULUMI_TOOL_DIR/use-installed"
    return
  fi
  rm -f "$PULUMI_TOOL_DIR/use-installed"
  if pulumi_matches "$PULUMI_BIN_DIR/pulumi" && [ -x "$PULUMI_BIN_DIR/pulumi-language-python" ] \
    && [ -x "$PULUMI_BIN_DIR/pulumi-language-python-exec" ]; then
    say "pulumi v$PULUMI_VERSION: cached in $PULUMI_BIN_DIR"
    return
  fi
  command -v go >/dev/null || fail "Go is not installed, and pulumi v$PULUMI_VERSION must be built from source" \
    "install Go (>= 1.21), or install Pulumi v$PULUMI_VERSION with its Python language host yourself and rerun"
  local log="$LOG_DIR/pulumi-build.log" t0=$SECONDS work
  say "building pulumi v$PULUMI_VERSION and its Python language host from Go modules (cold: several minutes)"
  work="$(mktemp -d)"
  cp "$ROOT/tools/pulumi/go.mod" "$ROOT/tools/pulumi/go.sum" "$ROOT/tools/pulumi/tools.go" "$work/"
  # -checklinkname=0: one of the CLI's dependencies links to a Go runtime
  # internal that newer Go toolchains refuse by default.
  local ld="-s -w -checklinkname=0 -X github.com/pulumi/pulumi/pkg/v3/version.Version=v$PULUMI_VERSION"
  ld="$ld -X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=v$PULUMI_VERSION"
  (
    cd "$work"
    # go.sum pins every module's checksum; -mod=mod lets go fill in the
    # indirect requirements of this small wrapper module from it.
    export GOTOOLCHAIN=local CGO_ENABLED=0 GOFLAGS=-mod=mod
    go mod download github.com/pulumi/pulumi/pkg/v3 github.com/pulumi/pulumi/sdk/v3
    go build -trimpath -ldflags "$ld" -o "$work/bin/pulumi" github.com/pulumi/pulumi/pkg/v3/cmd/pulumi
    go build -trimpath -ldflags "$ld" -o "$work/bin/pulumi-language-python" \
      github.com/pulumi/pulumi/sdk/v3/python/cmd/pulumi-language-python
  ) >"$log" 2>&1 || {
    rm -rf "$work"
    if grep -qE 'proxy.golang.org|dial tcp|i/o timeout|403|404' "$log"; then
      fail "could not download Pulumi's Go modules (is the Go module proxy reachable?)" \
        "check GOPROXY and your network, or install Pulumi v$PULUMI_VERSION yourself and rerun" "$log"
    fi
    fail "building pulumi v$PULUMI_VERSION failed (full log: $log)" \
      "install Pulumi v$PULUMI_VERSION with its Python language host yourself and rerun" "$log"
  }
  # The language host runs pulumi-language-python-exec found next to its own
  # executable; dynamic providers and policy packs need the two scripts in dist/.
  local sdk
  sdk="$(cd "$work" && GOFLAGS=-mod=mod go list -m -f '{{.Dir}}' github.com/pulumi/pulumi/sdk/v3)"
  install -m 0755 "$sdk/python/cmd/pulumi-language-python-exec" "$work/bin/"
  install -m 0755 "$sdk/python/dist/pulumi-resource-pulumi-python" "$work/bin/"
  install -m 0755 "$sdk/python/dist/pulumi-analyzer-policy-python" "$work/bin/"
  mkdir -p "$PULUMI_TOOL_DIR"
  rm -rf "$PULUMI_BIN_DIR"
  mv "$work/bin" "$PULUMI_BIN_DIR"
  rm -rf "$work"
  pulumi_matches "$PULUMI_BIN_DIR/pulumi" || fail "the built pulumi does not report v$PULUMI_VERSION" "see $log"
  say "built pulumi v$PULUMI_VERSION in $((SECONDS - t0)) s"
}

# --- PostgreSQL 15 and HAProxy from Debian ------------------------------------
ensure_debs() {
  local missing=()
  [ -x "/usr/lib/postgresql/$PG_MAJOR/bin/postgres" ] || missing+=("postgresql-$PG_MAJOR")
  [ -x /usr/lib/postgresql/$PG_MAJOR/bin/pg_basebackup ] || missing+=("postgresql-client-$PG_MAJOR")
  command -v haproxy >/dev/null || [ -x /usr/sbin/haproxy ] || missing+=(haproxy)
  # One PgBouncer per region pools the applications' connections (docs/pooling.md).
  [ -x /usr/sbin/pgbouncer ] || missing+=(pgbouncer)
  command -v curl >/dev/null || missing+=(curl)
  # High availability (docs/high-availability.md): Patroni runs each node, an etcd
  # cluster per group holds the leader lock.
  [ -x /usr/bin/patroni ] || missing+=(patroni)
  [ -x /usr/bin/etcd ] || missing+=(etcd-server)
  [ -x /usr/bin/etcdctl ] || missing+=(etcd-client)
  # Backups and point-in-time recovery (docs/backups.md).
  [ -x /usr/bin/pgbackrest ] || missing+=(pgbackrest)
  # ssh hosts keep backups going with cron entries; the lab's hosts share this
  # machine's /etc (the daemon itself is never needed here).
  [ -x /usr/sbin/cron ] || missing+=(cron)
  # Graphviz draws `dbfleet graph` pictures (SVG/PNG).
  command -v dot >/dev/null || missing+=(graphviz)
  # `make lint` (part of `make test`) runs shellcheck on every shell script.
  command -v shellcheck >/dev/null || missing+=(shellcheck)
  # The ssh target: the client dbfleet connects with, and for the lab
  # (scripts/lab.sh) an sshd per host, network namespaces (ip) and host firewalls (nft).
  command -v ssh >/dev/null || missing+=(openssh-client)
  [ -x /usr/sbin/sshd ] || missing+=(openssh-server)
  command -v ip >/dev/null || [ -x /usr/sbin/ip ] || [ -x /sbin/ip ] || missing+=(iproute2)
  command -v nft >/dev/null || [ -x /usr/sbin/nft ] || missing+=(nftables)
  if [ "${#missing[@]}" -eq 0 ]; then
    say "postgresql $PG_MAJOR, patroni, etcd, pgbackrest, cron, haproxy, pgbouncer, graphviz, shellcheck, openssh, iproute2, nftables: installed"
    return
  fi
  [ "$(id -u)" -eq 0 ] || fail "missing Debian packages: ${missing[*]}" \
    "run: sudo apt-get install -y ${missing[*]}  (then rerun)"
  local log="$LOG_DIR/apt.log"
  say "installing ${missing[*]} from Debian packages"
  {
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
  } >"$log" 2>&1 || fail "apt-get could not install ${missing[*]}" \
    "check that Debian's package mirror is reachable, or install them yourself and rerun" "$log"
  # Debian's postinst starts a default cluster, haproxy and pgbouncer service; dbfleet runs
  # its own processes, so leave those alone but make sure nothing of ours clashes.
}

# --- actionlint (lints .github/workflows in make lint) ----------------------------
ensure_actionlint() {
  if [ -x "$ACTIONLINT_BIN" ]; then
    say "actionlint v$ACTIONLINT_VERSION: cached"
    return
  fi
  command -v go >/dev/null || fail "Go is not installed, and actionlint v$ACTIONLINT_VERSION must be built from source" \
    "install Go (>= 1.21), or put actionlint v$ACTIONLINT_VERSION at $ACTIONLINT_BIN yourself and rerun"
  local log="$LOG_DIR/actionlint-build.log" t0=$SECONDS dir
  dir="$(dirname "$ACTIONLINT_BIN")"
  say "building actionlint v$ACTIONLINT_VERSION from its Go module"
  mkdir -p "$dir"
  GOTOOLCHAIN=local CGO_ENABLED=0 GOBIN="$dir" \
    go install "github.com/rhysd/actionlint/cmd/actionlint@v$ACTIONLINT_VERSION" >"$log" 2>&1 \
    || fail "building actionlint v$ACTIONLINT_VERSION failed (full log: $log)" \
      "check that the Go module proxy is reachable and rerun" "$log"
  say "built actionlint in $((SECONDS - t0)) s"
}

# --- Python environment --------------------------------------------------------
# Dependencies live in a cached environment keyed by the lock file's hash; each
# clone gets a light .venv that sees them through a .pth file and holds only the
# project itself (an editable install, so `dbfleet` is a real console script).
ensure_python() {
  local py="${PYTHON:-python3}" hash deps log="$LOG_DIR/pip.log"
  command -v "$py" >/dev/null || fail "python3 is not installed" "install Python >= 3.11 and rerun"
  "$py" -c 'import sys; sys.exit(sys.version_info < (3, 11))' \
    || fail "Python >= 3.11 is required ($py is $("$py" -V 2>&1))" "install Python 3.11+ and rerun"
  hash="$( (cat "$ROOT/requirements.lock"; "$py" -V) | sha256sum | cut -c1-12)"
  deps="$DBFLEET_CACHE/pydeps-$hash"
  if [ ! -f "$deps/.complete" ]; then
    say "installing Python dependencies from requirements.lock (PyPI)"
    rm -rf "$deps"
    "$py" -m venv "$deps" >"$log" 2>&1 || fail "could not create a virtualenv" \
      "install the venv module (Debian: apt-get install python3-venv) and rerun" "$log"
    "$deps/bin/pip" install -q --disable-pip-version-check -r "$ROOT/requirements.lock" >>"$log" 2>&1 \
      || fail "pip could not install requirements.lock" "check that PyPI is reachable and rerun" "$log"
    touch "$deps/.complete"
  fi
  local venv="$ROOT/.venv" site
  if [ ! -f "$venv/.dbfleet-deps" ] || [ "$(cat "$venv/.dbfleet-deps")" != "$deps" ]; then
    say "creating .venv (project) on top of $deps"
    rm -rf "$venv"
    "$py" -m venv --without-pip "$venv" >"$log" 2>&1 || fail "could not create .venv" "see $log" "$log"
    site="$("$venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
    "$deps/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])' >"$site/dbfleet-deps.pth"
    "$venv/bin/python" -m pip install -q --disable-pip-version-check --no-deps --no-build-isolation \
      --no-index -e "$ROOT" >>"$log" 2>&1 || fail "could not install the dbfleet package into .venv" "see $log" "$log"
    printf '%s\n' "$deps" >"$venv/.dbfleet-deps"
  fi
  # Tools that live in the dependency environment, on PATH with the project.
  for tool in bao ruff; do
    [ -x "$venv/bin/$tool" ] || ln -sf "$deps/bin/$tool" "$venv/bin/$tool"
  done
  # The project's own modules, compiled ahead of time: every stack operation starts
  # several Pythons that import them (program, dynamic provider, policy pack), and
  # where PYTHONDONTWRITEBYTECODE is set each of them would compile them again
  # (≈ 0.06 s a process). A source edited later is simply recompiled on import.
  "$venv/bin/python" -m compileall -q "$ROOT/dbfleet" "$ROOT/components" "$ROOT/policies" \
    "$ROOT/__main__.py" >>"$log" 2>&1 || say "note: could not precompile the project's modules (see $log)"
  say "python: $venv (dependencies in $deps)"
}

t0=$SECONDS
ensure_debs
ensure_python
ensure_pulumi
ensure_actionlint
# shellcheck source=scripts/env.sh
source "$ROOT/scripts/env.sh"
pulumi version >/dev/null || fail "pulumi does not run" "see the messages above"
say "ready in $((SECONDS - t0)) s — run: source scripts/env.sh"
