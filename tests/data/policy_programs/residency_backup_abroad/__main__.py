"""proxies-eu: fra's proxy lists a node of group us among its read backups."""

from caselib import Group

eu = Group()
port = eu.fleet.network.postgres_port
eu.proxy(
    "fra", eu.proxy_env("fra", READ_BACKUPS=f"{eu.host('lhr')}:{port} {eu.host('iad')}:{port}")
)
