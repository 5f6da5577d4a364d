"""How the whole test session is split between parallel workers (pytest-xdist).

`scripts/test.sh` runs `pytest -n N`: each worker takes one unit of tests at a time
(UnitScheduling, xdist's scope scheduling with the units defined here), handed out in
collection order. A unit is a whole module, so the module-scoped fleet its tests share,
and the order they rely on (up, prove, ..., down), stay on one worker; the few tests
COST_S names by node id bring up a fleet of their own and are units of their own, and
the modules SHARED names together are one unit: they use one deployed fleet (a session
fixture, so one per worker), in the order given there.
Units are sorted heaviest first, so the long ones start at once and the short ones fill
in at the end: the workers then finish together. (Not `--dist loadgroup` with
`xdist_group` markers: pytest-xdist 3.8 cannot rename the node ids of pytest 9.)

Most of an integration test's time is spent waiting on processes (an `up`, a failover,
a certificate renewal), not on CPU, so more workers than cores still pays. What makes
parallel workers safe is in tests/integration/conftest.py (each worker's own Vault;
loopback ranges claimed machine-wide) and dbfleet.ops.lab.free_lab_network (ssh labs'
/24s claimed the same way).
"""

from __future__ import annotations

from typing import Any

import pytest

# Seconds each unit took in a warm serial run (pytest --durations=0: setup, calls and
# teardown), rounded; only the order they give matters. A module missing here counts
# as light and runs after these; unit tests (seconds in all) come last.
COST_S = {
    "tests/integration/test_reliability.py": 420,
    "tests/integration/test_ha.py": 380,
    "tests/integration/test_ssh_fleet.py": 290,
    "tests/integration/test_backups.py": 260,
    "tests/integration/test_ssh_backups.py": 260,
    "tests/integration/test_tls.py": 220,
    "tests/integration/test_cli_operator.py": 200,
    "tests/integration/test_full_disk.py": 140,
    "tests/integration/test_group_access.py": 130,
    "tests/integration/test_tls.py::test_a_group_deployed_with_plain_http_rest_and_etcd_moves_to_tls_by_up": 125,
    "tests/integration/test_ssh_fleet.py::test_destroy_and_lab_down_leave_nothing_behind": 110,
    "tests/integration/test_policies.py": 110,
    "default fleet": 150,
    "tests/integration/test_pooling.py": 90,
    "tests/integration/test_two_fleets.py": 90,
    "tests/integration/test_vault_server.py": 60,
    "tests/integration/test_ssh_lab.py": 60,
    "tests/integration/test_etcd_script.py": 60,
    "tests/integration/test_two_fleets.py::test_a_fresh_clone_brought_up_leaves_git_status_clean": 45,
    "tests/integration/test_haproxy_checks.py": 40,
}


# Modules that share one deployed fleet (tests/integration/conftest.py `default_fleet`),
# in the order they must run on it: test_fleet.py ends with its `down`.
SHARED = {
    "default fleet": ("tests/integration/test_app_client.py", "tests/integration/test_fleet.py"),
}
_SHARED_UNIT = {module: unit for unit, modules in SHARED.items() for module in modules}


def unit_of(nodeid: str) -> str:
    """The unit a test runs in: itself when COST_S names it, its SHARED unit, else its
    module."""
    if nodeid in COST_S:
        return nodeid
    module = nodeid.split("::", 1)[0]
    return _SHARED_UNIT.get(module, module)


def rank_in_unit(nodeid: str) -> int:
    """A module's place in its SHARED unit (0 for every other test)."""
    module = nodeid.split("::", 1)[0]
    unit = _SHARED_UNIT.get(module)
    return SHARED[unit].index(module) if unit else 0


def cost_of(unit: str) -> int:
    if unit in COST_S:
        return COST_S[unit]
    return 0 if unit.startswith("tests/integration/") else -1  # unit tests last


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    first: dict[str, int] = {}
    for index, item in enumerate(items):
        first.setdefault(unit_of(item.nodeid), index)

    def key(item: pytest.Item) -> tuple[int, int, int]:
        unit = unit_of(item.nodeid)
        return -cost_of(unit), first[unit], rank_in_unit(item.nodeid)

    # Heaviest unit first; within a unit, its modules in SHARED's order, and then (and
    # between units of equal cost) file order (a stable sort keeps the tests of one
    # module in the order their file has them).
    items.sort(key=key)


def pytest_xdist_make_scheduler(config: pytest.Config, log: Any) -> Any:
    from xdist.scheduler import LoadScopeScheduling  # only runs with xdist

    class UnitScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return unit_of(nodeid)

    config.option.loadscopereorder = False  # keep the order sorted above
    return UnitScheduling(config, log)
