"""replicas-eu: two nodes and the group's leadership, each weakening authentication in one way."""

from caselib import Group

eu = Group()
fra, lhr, arn = eu.regions
eu.node(fra, eu.node_env(fra, PG_AUTH_METHOD="md5"))
eu.node(lhr, eu.node_env(lhr, ALLOWED_HOSTS=f"{eu.allowed_hosts()} 203.0.113.7"))
eu.node(arn)
eu.leader(eu.leader_env(APP_USER="replicator"))
