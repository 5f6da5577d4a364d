# shellcheck shell=bash
# These variables are for the scripts that source this file.
# shellcheck disable=SC2034
# The one place that pins dbfleet's toolchain. Sourced by setup.sh and env.sh.
#
# Why Pulumi v3.79.0: the Python language host (pulumi-language-python) must be
# built from Go modules. From v3.80 on it lives in a module of its own that has
# no tags, so it can only be required at a pseudo-version, and the Go module proxy
# this project can reach serves no pseudo-version of it. Up to v3.79 the language
# host is a package of github.com/pulumi/pulumi/sdk/v3 itself, which is tagged and
# served. CLI, language host and the PyPI package `pulumi` are all pinned to the
# same version so they speak the same protocol.
PULUMI_VERSION="3.79.0"
DBFLEET_CACHE="${DBFLEET_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/dbfleet}"
PULUMI_TOOL_DIR="$DBFLEET_CACHE/pulumi-v$PULUMI_VERSION"
PULUMI_BIN_DIR="$PULUMI_TOOL_DIR/bin"
PG_MAJOR=15
# actionlint checks the CI workflow (make lint); built from its Go module.
ACTIONLINT_VERSION="1.7.12"
ACTIONLINT_BIN="$DBFLEET_CACHE/actionlint-v$ACTIONLINT_VERSION/actionlint"
