"""Where a Pulumi project keeps things on disk: the file backend's directory (from
`PULUMI_BACKEND_URL`) and the stack config files (Pulumi.yaml's `stackConfigDir`).

The one reader of both, for the planned previews, the lock repair and the
workspace's stack files.
"""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

import yaml

BACKEND_ENV = "PULUMI_BACKEND_URL"


def file_backend_dir(url: str | None = None) -> Path | None:
    """The directory of a `file://` backend URL (default: $PULUMI_BACKEND_URL); None
    for any other backend."""
    url = os.environ.get(BACKEND_ENV, "") if url is None else url
    if not url.startswith("file://"):
        return None
    # file://dir?no_checksum=... — keep only the path; `~` is the user's home, as
    # for the CLI.
    path = url[len("file://") :].split("?", 1)[0] if urlparse(url).query else url[len("file://") :]
    return Path(os.path.expanduser(path) if path.startswith("~") else path)


def stack_config_dir(project: Path) -> str:
    """`stackConfigDir` of the project's Pulumi.yaml ('' when stack files sit beside it)."""
    try:
        settings = yaml.safe_load((project / "Pulumi.yaml").read_text()) or {}
    except (OSError, yaml.YAMLError):
        settings = {}
    value = (
        str(settings.get("stackConfigDir") or "").strip("/") if isinstance(settings, dict) else ""
    )
    return "" if value in ("", ".") else value


def stack_config_file(project: Path, stack: str) -> Path:
    """Where `stack`'s config file is."""
    return project / (stack_config_dir(project) or ".") / f"Pulumi.{stack}.yaml"
