"""proxies-eu: a correct proxy, but the stack exports connection URIs that do not verify
the server (no sslmode: libpq's `prefer`)."""

import pulumi
from caselib import PASSWORDS, Group

eu = Group()
eu.proxy(eu.primary)
uri = f"postgresql://app:{PASSWORDS['PG_APP_PASSWORD']}@{eu.host(eu.primary)}:6433/app"
pulumi.export("connection_uris", pulumi.Output.secret({eu.primary: {"read": uri, "write": uri}}))
