"""replicas-eu: the primary listens on 0.0.0.0 instead of its region's loopback address."""

from caselib import Group

eu = Group()
eu.node(eu.primary, eu.node_env(eu.primary, PG_HOST="0.0.0.0"))
