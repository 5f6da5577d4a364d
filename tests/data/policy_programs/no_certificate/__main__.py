"""replicas-eu: the primary has no CA certificate (TLS_CA): it would take plain TCP."""

from caselib import Group

eu = Group()
eu.node(eu.primary, eu.node_env(eu.primary, TLS_CA=None))
