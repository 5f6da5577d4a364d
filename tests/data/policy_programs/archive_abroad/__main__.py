"""replicas-eu: the primary's archive command pushes its WAL to group us's stanza and
repository: the group's data would leave its zone through the backups."""

import json

from caselib import Group

from components import backup

eu = Group()
us = f"{eu.fleet.name}-us"
dcs = json.loads(eu.dcs())
dcs["postgresql"]["parameters"]["archive_command"] = backup.archive_command(
    f"{eu.data_root.rsplit('/', 1)[0]}/{us}", us
)
eu.node(eu.primary, eu.node_env(eu.primary, DCS_CONFIG=json.dumps(dcs, sort_keys=True)))
