"""accounts-eu: the account's host script gets a password through its plain environment.

If a policy let this through, account.sh would create the group's data root under
$DBFLEET_CASE_DATA: the test checks that `up` is refused before that happens.
"""

import getpass

from caselib import PASSWORDS, Group

eu = Group()
eu.account(
    getpass.getuser(),
    {
        "ACCOUNT_USER": getpass.getuser(),
        "DATA_ROOT": eu.data_root,
        "PG_SUPERUSER_PASSWORD": PASSWORDS["PG_SUPERUSER_PASSWORD"],
    },
)
