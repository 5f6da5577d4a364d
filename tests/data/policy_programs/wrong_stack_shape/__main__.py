"""proxies-eu: declares a database (replicas-eu owns those) and a proxy for iad (group us)."""

from caselib import Group

eu = Group()
eu.node(eu.primary)
eu.proxy("iad", eu.proxy_env("iad"))
