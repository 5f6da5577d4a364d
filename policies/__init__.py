"""dbfleet's CrossGuard policy pack (run it with `pulumi preview --policy-pack policies`).

The pack itself is `policies/__main__.py`; the rules live in `policies/rules/`. This
file only makes `policies.rules` importable for the unit tests.
"""
