"""accounts-eu: the group's outputs name the Vault secret path of group us."""

import getpass

import pulumi
from caselib import Group

eu = Group()
eu.account(getpass.getuser())
pulumi.export("group", eu.name)
pulumi.export("zone", eu.fleet.groups[eu.name].zone)
pulumi.export("secret_mount", "secret")
pulumi.export("secret_path", f"dbfleet/{eu.fleet.name}/us/postgres")
