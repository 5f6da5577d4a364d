"""replicas-eu: a correct primary, but the stack exports a libpq URI with the application
password in plaintext, and a plain copy of the superuser password its node holds as a secret."""

import pulumi
from caselib import PASSWORDS, Group

eu = Group()
eu.node(eu.primary)
pulumi.export(
    "connection_uri",
    f"postgresql://app:{PASSWORDS['PG_APP_PASSWORD']}@{eu.host(eu.primary)}:6433/app",
)
pulumi.export("debug", f"superuser password is {PASSWORDS['PG_SUPERUSER_PASSWORD']}")
