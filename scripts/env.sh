# shellcheck shell=bash
# `source scripts/env.sh` — puts pulumi, bao and dbfleet on PATH and sets the
# backend, passphrase and Vault variables so that plain `pulumi` commands work by
# hand. Safe to source more than once. Nothing here reaches the network but the
# local Vault's loopback address (a token check, see below).
_dbfleet_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
# shellcheck source=scripts/versions.sh
source "$_dbfleet_root/scripts/versions.sh"

# Where this clone keeps its state: Pulumi's file backend, the local secrets
# server, and the fleet's data directories. Tests point it elsewhere.
export DBFLEET_HOME="${DBFLEET_HOME:-$_dbfleet_root/.dbfleet}"
mkdir -p "$DBFLEET_HOME/state"
chmod 0755 "$DBFLEET_HOME"

_dbfleet_pulumi_dir="$PULUMI_BIN_DIR"
[ -f "$PULUMI_TOOL_DIR/use-installed" ] && _dbfleet_pulumi_dir="$(cat "$PULUMI_TOOL_DIR/use-installed")"
case ":$PATH:" in
  *":$_dbfleet_root/.venv/bin:"*) ;;
  *) PATH="$_dbfleet_root/.venv/bin:$PATH" ;;
esac
case ":$PATH:" in
  *":$_dbfleet_pulumi_dir:"*) ;;
  *) PATH="$_dbfleet_pulumi_dir:$PATH" ;;
esac
export PATH

# Offline by construction: no update checks, no plugin downloads, no Pulumi Cloud.
export PULUMI_SKIP_UPDATE_CHECK=true
export PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION=true
export PULUMI_AUTOMATION_API_SKIP_VERSION_CHECK=true
export PULUMI_HOME="${PULUMI_HOME:-$DBFLEET_HOME/pulumi-home}"
export PULUMI_BACKEND_URL="file://$DBFLEET_HOME/state"

# Stack secrets: stacks dbfleet creates are encrypted by their group's Vault Transit
# key (secrets provider hashivault://dbfleet-<fleet>-<group>, dbfleet/ops/access.py),
# which plain `pulumi` reaches through VAULT_ADDR/VAULT_TOKEN below. The passphrase is
# the fallback (no Vault, or DBFLEET_SECRETS_PROVIDER=passphrase) and opens stacks made
# before: made once per clone and kept in a 0600 file (never on a command line).
if [ ! -s "$DBFLEET_HOME/passphrase" ]; then
  (umask 077 && head -c 32 /dev/urandom | base64 >"$DBFLEET_HOME/passphrase")
fi
export PULUMI_CONFIG_PASSPHRASE_FILE="$DBFLEET_HOME/passphrase"
unset PULUMI_CONFIG_PASSPHRASE

# The fleet file this clone deploys when it is not stacks/fleet.yaml: `vault.sh start`
# (run by `make up`) remembers DBFLEET_SPEC in $DBFLEET_HOME/fleet-file, so that a
# new shell does not fall back to the default fleet. An exported DBFLEET_SPEC wins.
if [ -z "${DBFLEET_SPEC:-}" ] && [ -s "$DBFLEET_HOME/fleet-file" ]; then
  IFS= read -r DBFLEET_SPEC <"$DBFLEET_HOME/fleet-file"
  export DBFLEET_SPEC
fi

# The local secrets server (scripts/vault.sh). A user with their own Vault sets
# VAULT_ADDR/VAULT_TOKEN before sourcing this file and keeps them. Otherwise the
# address is this clone's own (remembered by `vault.sh start` in
# $DBFLEET_HOME/vault-addr), never a default that may be another clone's server;
# `vault.sh env` warns in one line when the server there refuses this clone's
# token. That check is the only request this file makes (to loopback).
if [ -z "${VAULT_ADDR:-}" ] || [ -n "${DBFLEET_LOCAL_VAULT:-}" ]; then
  export DBFLEET_LOCAL_VAULT=1
  export BAO_BIN="${BAO_BIN:-$_dbfleet_root/.venv/bin/bao}"
  if [ -f "$DBFLEET_HOME/vault/init.json" ]; then
    eval "$(bash "$_dbfleet_root/scripts/vault.sh" env)"
  elif [ -n "${DBFLEET_VAULT_ADDR:-}" ]; then
    export VAULT_ADDR="$DBFLEET_VAULT_ADDR"
  elif [ -s "$DBFLEET_HOME/vault-addr" ]; then
    IFS= read -r VAULT_ADDR <"$DBFLEET_HOME/vault-addr"
    export VAULT_ADDR
  else
    export VAULT_ADDR=http://127.0.0.1:8200
  fi
fi
# gocloud's hashivault driver prefers VAULT_SERVER_URL/VAULT_SERVER_TOKEN to
# VAULT_ADDR/VAULT_TOKEN: a leftover one (say an admin token) would open every group's
# state behind the group token in VAULT_TOKEN. dbfleet sets them from VAULT_*; here
# they go, so that plain `pulumi` uses VAULT_ADDR/VAULT_TOKEN too.
unset VAULT_SERVER_URL VAULT_SERVER_TOKEN
unset _dbfleet_root _dbfleet_pulumi_dir
