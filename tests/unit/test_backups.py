"""Backups (issue 15) with mocks only: the fleet file's backup keys, the archive settings in
Patroni's dynamic configuration, the component's arguments, the restore command's parsing
and refusals, the status section, and the backup policies."""

from __future__ import annotations

import datetime as dt
import io
import json

import pulumi
import pytest

from components import backup
from components.hostcmd import Connection
from components.patroni import dcs_config
from dbfleet.model.spec import FleetError, parse_fleet
from dbfleet.ops import backup as ops
from dbfleet.ops import status
from dbfleet.ops.cli import build_parser
from dbfleet.ops.commands import Abort
from policies.rules.backup import backup_residency, backups_configured
from tests.unit.policy_support import (
    host_scripts,
    messages,
    program_resources,
    run_stack_policy,
    with_env,
)

FLEET = """
name: demo
target: {target}
groups:
  eu:
    zone: EU
    primary: fra
    regions: {{fra: {{}}, lhr: {{}}, arn: {{}}}}
{extra}"""


def fleet(target: str = "local", extra: str = ""):
    return parse_fleet(FLEET.format(target=target, extra=extra))


# -- fleet file ------------------------------------------------------------------------------
def test_a_group_without_backup_keys_gets_the_documented_defaults():
    b = fleet().groups["eu"].backups
    assert (b.schedule_hours, b.full_every_days, b.full_keep) == (24, 7, 2)


def test_backup_keys_are_read_and_bounded():
    g = fleet(extra="    backup: {schedule_hours: 6, full_keep: 4}\n").groups["eu"]
    assert (g.backups.schedule_hours, g.backups.full_keep, g.backups.full_every_days) == (6, 4, 7)
    with pytest.raises(FleetError) as err:
        fleet(extra="    backup: {schedule_hours: 0, fulls: 3}\n")
    text = "\n".join(str(p) for p in err.value.problems)
    assert "groups.eu.backup.schedule_hours: must be at least 1" in text
    assert "groups.eu.backup.fulls: unknown key (allowed: schedule_hours" in text


def test_repo_region_on_the_local_target_is_refused_in_one_line():
    with pytest.raises(FleetError) as err:
        fleet(extra="    backup: {repo_region: lhr}\n")
    lines = [str(p) for p in err.value.problems if "backup" in str(p)]
    assert len(lines) == 1 and "repo_region is for the ssh target" in lines[0]


SSH_FLEET = """
name: demo
target: ssh
ssh: {{user: root, key: dbfleet/demo/ssh}}
{network}groups:
  eu:
    zone: EU
    primary: fra
    regions:
      fra: {{nodes: 1, hosts: [{{address: 10.1.0.1}}]}}
      lhr: {{nodes: 1, hosts: [{{address: 10.1.0.2}}]}}
      arn: {{nodes: 1, hosts: [{{address: 10.1.0.3}}]}}
{extra}"""


def ssh_fleet(extra: str = "", network: str = ""):
    return parse_fleet(SSH_FLEET.format(extra=extra, network=network))


def test_on_the_ssh_target_backups_are_opt_in_and_the_repository_region_defaults():
    assert ssh_fleet().groups["eu"].backup is None
    g = ssh_fleet("    backup: {full_keep: 3}\n").groups["eu"]
    # the first region that is not the primary: a repository beside the primary shares its fate
    assert g.backups.full_keep == 3 and g.backup_repo_region == "lhr"
    assert ssh_fleet("    backup: {repo_region: arn}\n").groups["eu"].backup_repo_region == "arn"


def test_a_repository_region_outside_the_group_is_refused():
    with pytest.raises(FleetError) as err:
        ssh_fleet("    backup: {repo_region: iad}\n")
    lines = [str(p) for p in err.value.problems if "repo_region" in str(p)]
    assert len(lines) == 1 and "iad is not a region of group eu" in lines[0]


def test_the_backup_port_is_validated_like_the_other_ports():
    assert ssh_fleet().network.backup_port == 8432
    with pytest.raises(FleetError) as err:
        ssh_fleet(network="network: {backup_port: 6433}\n")
    assert "network.backup_port: port 6433 is already the write_port" in "\n".join(
        str(p) for p in err.value.problems
    )
    with pytest.raises(FleetError) as err:
        ssh_fleet(network="network: {backup_port: 5433}\n")
    assert "overlaps the PostgreSQL node ports" in "\n".join(str(p) for p in err.value.problems)


# -- archive settings and the component ------------------------------------------------------
def test_archiving_is_in_the_dynamic_configuration_only_when_asked():
    plain = dcs_config("async", 1 << 20, 100)["postgresql"]["parameters"]
    assert "archive_command" not in plain and "archive_mode" not in plain
    cmd = backup.archive_command("/d/demo-eu", "demo-eu")
    params = dcs_config("async", 1 << 20, 100, archive_command=cmd)["postgresql"]["parameters"]
    assert params["archive_mode"] == "on" and params["archive_timeout"] == "60s"
    assert params["archive_command"] == (
        "pgbackrest --config=/d/demo-eu/pgbackrest/pgbackrest.conf --stanza=demo-eu "
        '--pg1-path="$PWD" archive-push %p'
    )


def args(**changes) -> backup.GroupBackupsArgs:
    base = {
        "connection": Connection(),
        "run_as": "demo-eu",
        "data_root": "/d/demo-eu",
        "stanza": "demo-eu",
        "nodes": (backup.Node("/d/demo-eu/fra-0/pgdata", 5432, "/d/demo-eu/fra-0/run"),),
        "schedule_hours": 24,
        "full_every_days": 7,
        "full_keep": 2,
        "secrets": None,
    }
    return backup.GroupBackupsArgs(**{**base, **changes})


def test_the_components_environment_names_every_node_and_no_secret():
    env = args().environment()
    assert env["BACKUP_DIR"] == "/d/demo-eu/pgbackrest"
    assert env["NODES"] == "/d/demo-eu/fra-0/pgdata:5432:/d/demo-eu/fra-0/run"
    assert not [k for k in env if "PASS" in k]


@pytest.mark.parametrize(
    "changes",
    [
        {"connection": Connection(kind="ssh", host="db1", user="root")},
        {"stanza": "Demo EU"},
        {"data_root": "relative/path"},
        {"full_keep": 0},
        {"nodes": ()},
    ],
)
def test_the_component_refuses_what_it_cannot_declare(changes):
    with pytest.raises(ValueError):
        args(**changes)


def test_secret_environment_stays_secret():
    out = backup.secret_environment(
        pulumi.Output.from_input({"superuser_password": "s", "backup_passphrase": "p"})
    )
    assert isinstance(out, pulumi.Output)


# -- the commands ----------------------------------------------------------------------------
def test_restore_needs_exactly_one_point():
    parser = build_parser()
    with pytest.raises(SystemExit):
        parser.parse_args(["restore", "eu"])
    with pytest.raises(SystemExit):
        parser.parse_args(["restore", "eu", "--latest", "--to-lsn", "0/1"])
    a = parser.parse_args(["restore", "eu", "--to", "2024-05-01T12:00:00Z", "--yes"])
    assert (a.group, a.to, a.yes) == ("eu", "2024-05-01T12:00:00Z", True)
    assert parser.parse_args(["backup", "eu"]).type == "full"
    with pytest.raises(SystemExit):
        parser.parse_args(["backup", "eu", "--type", "weekly"])


def test_targets_are_parsed_and_a_time_without_zone_is_refused():
    t = ops.parse_target("2024-05-01T12:00:00Z", None, False)
    assert t.kind == "time" and t.value == "2024-05-01 12:00:00+00:00"
    assert ops.parse_target(None, "0/3000060", False).lsn == 0x3000060
    assert ops.parse_target(None, None, True).kind == "latest"
    with pytest.raises(Abort, match="no time zone"):
        ops.parse_target("2024-05-01T12:00:00", None, False)
    with pytest.raises(Abort, match="not an LSN"):
        ops.parse_target(None, "3000060", False)


INFO = {
    "info": [
        {
            "status": {"code": 0, "message": "ok"},
            "backup": [
                {"label": "F2", "type": "full", "timestamp": {"stop": 2000}, "lsn": {"stop": "0/5000000"},
                 "info": {"repository": {"delta": 10}}},
                {"label": "F1", "type": "full", "timestamp": {"stop": 1000}, "lsn": {"stop": "0/3000000"},
                 "info": {"repository": {"delta": 10}}},
                {"label": "D1", "type": "diff", "timestamp": {"stop": 3000}, "lsn": {"stop": "0/6000000"},
                 "info": {"repository": {"delta": 1}}},
            ],
        }
    ],
    "repo_bytes": 4096,
}  # fmt: skip
NOW = dt.datetime.fromtimestamp(5000, tz=dt.UTC)


def test_a_point_before_the_oldest_backup_is_refused_naming_the_earliest_time():
    early = ops.parse_target(dt.datetime.fromtimestamp(500, tz=dt.UTC).isoformat(), None, False)
    why = ops.refusal(early, INFO, NOW)
    assert why and "earliest possible time is 1970-01-01T00:16:40+00:00" in why
    assert ops.refusal(ops.parse_target(None, "0/2000000", False), INFO, NOW)
    later = ops.parse_target(dt.datetime.fromtimestamp(1500, tz=dt.UTC).isoformat(), None, False)
    assert ops.refusal(later, INFO, NOW) is None
    future = ops.parse_target(dt.datetime.fromtimestamp(9000, tz=dt.UTC).isoformat(), None, False)
    assert "future" in ops.refusal(future, INFO, NOW)
    assert "no backup" in ops.refusal(later, {"info": [{"backup": []}]}, NOW)


def test_restore_refuses_without_yes_when_stdin_is_not_a_terminal():
    with pytest.raises(Abort, match="--yes"):
        ops.confirm("eu", False, io.StringIO("eu\n"))
    ops.confirm("eu", True, io.StringIO(""))


def test_restore_environment_restores_into_the_preferred_leaders_node():
    reps = {
        "primary_region": "lhr",
        "nodes": {
            "fra": {"members": [{"port": 5001}]},
            "lhr": {"members": [{"port": 5002}, {"port": 5003}]},
        },
        "etcd": {"fra": "127.0.0.1:2379", "lhr": "127.0.0.2:2379"},
    }
    facts = {"stanza": "demo-eu", "dir": "/d/x/pgbackrest", "data_root": "/d/x", "user": "u"}
    env = ops.restore_env(facts, reps, "demo", ops.Target("latest"))
    assert env["TARGET_DIR"] == "/d/x/lhr-0" and env["TARGET_PORT"] == "5002"
    assert env["NODE_DIRS"].split() == ["/d/x/lhr-0", "/d/x/lhr-1", "/d/x/fra-0"]
    assert env["ETCD_ENDPOINTS"] == "https://127.0.0.1:2379,https://127.0.0.2:2379"
    assert "thrown away" in "\n".join(ops.loss_text(ops.Target("latest"), "eu", ["fra", "lhr"]))


def test_a_group_without_backups_is_named_as_such():
    with pytest.raises(Abort, match="needs `backup:` in the fleet file"):
        ops.facts_of("eu", {"nodes": {"fra": {}}})
    with pytest.raises(Abort, match="not deployed"):
        ops.facts_of("eu", None)


# -- status ----------------------------------------------------------------------------------
def test_status_reads_the_newest_full_and_diff_and_judges_the_schedule():
    b = status.BackupStatus("demo-eu", schedule_hours=1)
    status.apply_backup_info(b, INFO, now=5000)
    assert (b.last_full, b.last_diff, b.repo_bytes) == ("F2", "D1", 4096)
    assert b.newest_age_s == 2000 and b.problems == []
    status.apply_backup_info(b, INFO, now=3000 + 3600 + status.BACKUP_GRACE_S + 1)
    assert "allows 1 h" in b.problems[0]
    empty = status.BackupStatus("demo-eu", 24)
    status.apply_backup_info(empty, {"info": [{"status": {"code": 2}, "backup": []}]}, now=0)
    assert "no backup yet" in empty.problems[0]


def test_archiver_lag_and_failures():
    b = status.BackupStatus("demo-eu", 24)
    status.apply_archiver(
        b,
        {"last_archived_wal": "000000010000000000000005", "current_wal": "000000010000000100000002",
         "failed_count": 0, "last_archived_time": 1, "last_failed_time": None,
         "archived_age_s": 3.0},
    )  # fmt: skip
    assert b.archive_lag_segments == 0x100 + 2 - 5 - 1 and not b.failing
    status.apply_archiver(
        b,
        {"last_archived_wal": "000000010000000000000005", "current_wal": "000000010000000000000009",
         "failed_count": 4, "last_failed_wal": "000000010000000000000006",
         "last_archived_time": 1, "last_failed_time": 2},
    )  # fmt: skip
    assert b.failing and any("archiving fails" in p for p in b.problems)


def test_a_failing_archive_makes_the_group_degraded_and_is_rendered():
    g = status.GroupStatus("eu", backup=status.BackupStatus("demo-eu", 24))
    status.apply_backup_info(g.backup, INFO, now=3100)
    assert g.healthy
    g.backup.failing, g.backup.failed_count, g.backup.failed_wal = (
        True,
        2,
        "0000000100000000000000AA",
    )
    assert not g.healthy
    text = status.render([g])
    assert "DEGRADED" in text and "last full F2" in text and "FAILING" in text
    assert json.loads(json.dumps(g.to_json()))["backup"]["failing"] is True


# -- policies --------------------------------------------------------------------------------


@pytest.mark.usefixtures("unit_fleet")
def test_the_program_passes_both_backup_policies():
    resources = program_resources("replicas-eu")
    assert any(r.name == "backups-stanza" for r in resources)
    assert run_stack_policy(backup_residency, "replicas-eu", resources, {}) == []
    assert run_stack_policy(backups_configured, "replicas-eu", resources, {}) == []


@pytest.mark.usefixtures("unit_fleet")
def test_a_repository_outside_the_groups_data_root_is_refused():
    scripts = host_scripts("replicas-eu")
    repo = scripts["backups-stanza"]
    other = repo.props["environment"]["DATA_ROOT"].replace("-eu", "-us")
    moved = with_env(repo, BACKUP_DIR=f"{other}/pgbackrest", STANZA="demo-us")
    resources = [
        moved if r.name == "backups-stanza" else r for r in program_resources("replicas-eu")
    ]
    text = messages(run_stack_policy(backup_residency, "replicas-eu", resources, {}))
    assert "outside the data root" in text and "is not the group's" in text


@pytest.mark.usefixtures("unit_fleet")
def test_an_archive_command_naming_another_stanza_is_refused():
    node = host_scripts("replicas-eu")["fra-0-server"]
    dcs = json.loads(node.props["environment"]["DCS_CONFIG"])
    cmd = dcs["postgresql"]["parameters"]["archive_command"]
    dcs["postgresql"]["parameters"]["archive_command"] = cmd.replace("-eu ", "-us ")
    bad = with_env(node, DCS_CONFIG=json.dumps(dcs))
    resources = [bad if r.name == "fra-0-server" else r for r in program_resources("replicas-eu")]
    assert "not only to the group's" in messages(
        run_stack_policy(backup_residency, "replicas-eu", resources, {})
    )


@pytest.mark.usefixtures("unit_fleet")
def test_a_group_without_backups_or_with_one_full_warns():
    everything = program_resources("replicas-eu")
    without = [r for r in everything if r.name != "backups-stanza"]
    assert "has no backups" in messages(
        run_stack_policy(backups_configured, "replicas-eu", without, {})
    )
    one = [with_env(r, FULL_KEEP="1") if r.name == "backups-stanza" else r for r in everything]
    assert "only one full" in messages(run_stack_policy(backups_configured, "replicas-eu", one, {}))


# -- restore --into ----------------------------------------------------------------------------
INTO_GROUPS = """  eu2:
    zone: EU
    primary: cdg
    regions: {cdg: {}}
  us:
    zone: US
    primary: iad
    regions: {iad: {}}
"""


@pytest.mark.parametrize(
    ("into", "deployed", "says"),
    [
        ("eu", None, "--into eu is the group itself"),
        ("ap", None, "--into ap: no such group in the fleet file; add it (same zone as eu: EU"),
        (
            "us",
            None,
            "--into us: its zone US is not eu's zone EU; a group's data stays in its zone",
        ),
        (
            "eu2",
            {"nodes": {"cdg": {}}},
            "group eu2 is deployed already; --into needs a fresh group",
        ),
    ],
)
def test_restore_into_refuses_what_is_not_a_fresh_group_of_the_same_zone(into, deployed, says):
    with pytest.raises(Abort) as err:
        ops.into_refusal(fleet(extra=INTO_GROUPS), "eu", into, deployed)
    assert says in str(err.value)
    assert "\n" not in str(err.value)


def test_restore_into_accepts_a_fresh_group_of_the_same_zone():
    ops.into_refusal(fleet(extra=INTO_GROUPS), "eu", "eu2", None)
    ops.into_refusal(fleet(extra=INTO_GROUPS), "eu", "eu2", {"nodes": {}})  # stacks, no nodes


def test_restore_into_gives_the_new_groups_roles_its_own_passwords_as_verifiers():
    from components import scram

    secrets = {
        "superuser_password": "s-pass",
        "replication_password": "r-pass",
        "app_password": "a-pass",
    }
    sql = ops.roles_sql(secrets, "app")
    lines = sql.splitlines()
    assert [line.split('"')[1] for line in lines] == ["postgres", "replicator", "app"]
    for line, pw in zip(lines, ("s-pass", "r-pass", "a-pass"), strict=True):
        verifier = line.split("'")[1]
        assert scram.matches(pw, verifier)
        assert pw not in line
    with pytest.raises(Abort):
        ops.roles_sql(secrets, 'app"; DROP')


def test_restore_into_parses():
    a = build_parser().parse_args(["restore", "eu", "--latest", "--into", "eu2"])
    assert (a.group, a.into, a.latest) == ("eu", "eu2", True)


# -- the ssh target --------------------------------------------------------------------------
SSH = Connection(kind="ssh", host="10.1.0.2", user="root")


def host_args(**changes) -> backup.HostBackupsArgs:
    base = {
        "connection": SSH,
        "run_as": "demo-eu",
        "data_root": "/d/demo-eu",
        "stanza": "demo-eu",
        "name": "lhr-0",
        "node": backup.Node("/d/demo-eu/lhr-0/pgdata", 5432, "/d/demo-eu/lhr-0/run"),
        "address": "10.1.0.2",
        "tls_port": 8432,
        "repo": True,
        "repo_address": "10.1.0.2",
        "repo_name": "lhr-0",
        "peers": (
            backup.Peer(
                "10.1.0.1", backup.Node("/d/demo-eu/fra-0/pgdata", 5432, "/d/demo-eu/fra-0/run")
            ),
        ),
        "schedule_hours": 24,
        "full_every_days": 7,
        "full_keep": 2,
        "secrets": pulumi.Output.from_input({"superuser_password": "s", "backup_passphrase": "p"}),
        "tls": backup.TlsFiles("CERT", "KEY", "CA"),
    }
    return backup.HostBackupsArgs(**{**base, **changes})


def test_the_ssh_archive_command_reads_the_archiving_hosts_own_configuration():
    cmd = backup.archive_command("/d/demo-eu", "demo-eu", per_host=True)
    assert cmd == (
        'd="${PWD%/pgdata}"; pgbackrest --config=/d/demo-eu/pgbackrest/${d##*/}/pgbackrest.conf '
        '--stanza=demo-eu --pg1-path="$PWD" archive-push %p'
    )


def test_a_repository_hosts_environment_names_its_peers_and_admits_only_them():
    env = host_args().environment()
    assert env["BACKUP_MODE"] == "repo" and env["BACKUP_DIR"] == "/d/demo-eu/pgbackrest/lhr-0"
    assert env["REMOTE_NODES"] == "10.1.0.1:/d/demo-eu/fra-0/pgdata:5432:/d/demo-eu/fra-0/run"
    assert env["TLS_CLIENTS"] == "10.1.0.1" and not [k for k in env if "PASS" in k]
    node = host_args(
        name="fra-0",
        address="10.1.0.1",
        repo=False,
        peers=(),
        node=backup.Node("/d/demo-eu/fra-0/pgdata", 5432, "/d/demo-eu/fra-0/run"),
    ).environment()
    assert (node["BACKUP_MODE"], node["TLS_CLIENTS"], node["REPO_NODE"]) == (
        "node",
        "10.1.0.2",
        "lhr-0",
    )


@pytest.mark.parametrize(
    "changes",
    [
        {"connection": Connection()},  # HostBackups is the ssh target's
        {"repo": False},  # the repository's address is this host's
        {"repo_address": "10.1.0.9"},  # repo set on a host that is not the repository
        {"address": "db-lhr.example"},  # the certificate's name is the address
        {"peers": (backup.Peer("10.1.0.2", backup.Node("/d/demo-eu/x-0/pgdata", 1, "/d/x")),)},
        {"name": "../x"},
        {"node": backup.Node("relative/pgdata", 5432, "/d/demo-eu/lhr-0/run")},
        {"tls_port": 0},
    ],
)
def test_the_host_component_refuses_what_it_cannot_declare(changes):
    with pytest.raises(ValueError):
        host_args(**changes)


def test_restore_into_is_refused_on_the_ssh_target_in_one_line():
    with pytest.raises(Abort) as err:
        ops.into_refusal(ssh_fleet("    backup: {full_keep: 2}\n"), "eu", "eu2", None)
    assert "--into is not on the ssh target yet" in str(err.value)
    assert "\n" not in str(err.value)


SSH_REPS = {
    "primary_region": "fra",
    "nodes": {
        "fra": {"members": [{"port": 5432}]},
        "lhr": {"members": [{"port": 5432}]},
        "arn": {"members": [{"port": 5432}]},
    },
    "etcd": {"fra": "10.1.0.1:2379", "lhr": "10.1.0.2:2379", "arn": "10.1.0.3:2379"},
}
SSH_FACTS = {
    "stanza": "demo-eu",
    "dir": "/d/demo-eu/pgbackrest/lhr-0",
    "data_root": "/d/demo-eu",
    "user": "demo-eu",
    "target": "ssh",
    "repo_ssh": {"host": "10.1.0.2", "port": 22},
}


def ssh_plan(leader: tuple[str, int] | None):
    logins = ops.fleet_logins(ssh_fleet("    backup: {full_keep: 2}\n"), "eu")
    assert logins == {
        "fra-0": ("10.1.0.1", 22),
        "lhr-0": ("10.1.0.2", 22),
        "arn-0": ("10.1.0.3", 22),
    }
    return ops.ssh_steps(
        SSH_FACTS, SSH_REPS, "demo", logins, ops.Target("lsn", "0/3000060"), leader
    )


def test_the_ssh_restore_runs_each_step_on_the_host_of_the_nodes_it_touches():
    steps = ssh_plan(("lhr-0", 5432))  # a switchover left lhr leading
    plan = [(s.action, s.env[ops._SSH_HOST], s.env["BACKUP_DIR"]) for s in steps]
    assert plan == [
        # writes stop on the live leader's host, which checks the archive through its own
        # configuration (repo1-host over TLS)
        ("restore-fence", "10.1.0.2", "/d/demo-eu/pgbackrest/lhr-0"),
        # Patroni stops on every host, the leader's last
        ("restore-stop", "10.1.0.1", "/d/demo-eu/pgbackrest/fra-0"),
        ("restore-stop", "10.1.0.3", "/d/demo-eu/pgbackrest/arn-0"),
        ("restore-stop", "10.1.0.2", "/d/demo-eu/pgbackrest/lhr-0"),
        # the restore on the preferred leader's (fra-0) host, the others emptied on theirs
        ("restore-node", "10.1.0.1", "/d/demo-eu/pgbackrest/fra-0"),
        ("restore-clear", "10.1.0.3", "/d/demo-eu/pgbackrest/arn-0"),
        ("restore-clear", "10.1.0.2", "/d/demo-eu/pgbackrest/lhr-0"),
    ]
    fence, *stops, node, _c1, _c2 = steps
    assert (fence.env["LEADER_DIR"], fence.env["LEADER_PORT"]) == ("/d/demo-eu/lhr-0", "5432")
    assert [s.env["NODE_DIRS"] for s in stops] == [
        "/d/demo-eu/fra-0",
        "/d/demo-eu/arn-0",
        "/d/demo-eu/lhr-0",
    ]
    # only the leader's host is told which node leads (it stops last there)
    assert [s.env.get("LEADER_DIR") for s in stops] == [None, None, "/d/demo-eu/lhr-0"]
    assert node.env["TARGET_DIR"] == "/d/demo-eu/fra-0" and node.env["SCOPE"] == "demo-eu"
    assert node.env["RESTORE_TYPE"] == "lsn" and node.env["RESTORE_TARGET"] == "0/3000060"
    assert node.env["ETCD_ENDPOINTS"] == (
        "https://10.1.0.1:2379,https://10.1.0.2:2379,https://10.1.0.3:2379"
    )
    # the target is never emptied
    assert "/d/demo-eu/fra-0" not in " ".join(s.env["NODE_DIRS"] for s in steps[-2:])


def test_without_a_leader_the_repository_host_checks_the_archive_and_nothing_is_fenced():
    fence = ssh_plan(None)[0]
    assert fence.action == "restore-fence" and fence.env[ops._SSH_HOST] == "10.1.0.2"
    assert fence.env["BACKUP_DIR"] == SSH_FACTS["dir"] and "LEADER_DIR" not in fence.env


def test_a_node_without_a_host_in_the_fleet_file_is_refused():
    with pytest.raises(Abort, match="names no host for arn-0"):
        ops.ssh_steps(
            SSH_FACTS, SSH_REPS, "demo", {"fra-0": ("a", 22), "lhr-0": ("b", 22)},
            ops.Target("latest"), None,
        )  # fmt: skip


@pytest.mark.parametrize(("failing", "says"), [(0, "nothing changed"), (4, "the group is stopped")])
def test_the_ssh_steps_stop_at_the_first_failure_saying_what_it_leaves(failing, says, capsys):
    steps = ssh_plan(("fra-0", 5432))
    ran = []

    def runner(action, env, timeout):
        ran.append(action)
        return (1, "", "boom\n") if len(ran) - 1 == failing else (0, "ok\n", "")

    with pytest.raises(Abort, match=says):
        ops.run_ssh_steps(steps, runner)
    assert len(ran) == failing + 1
    assert "boom" in capsys.readouterr().err


def test_an_ssh_failure_is_reported_as_the_steps_failure(capsys):
    def runner(action, env, timeout):
        raise RuntimeError("ssh: connect to host 10.1.0.1 port 22: No route to host")

    with pytest.raises(Abort, match="refused on fra-0 \\(10.1.0.1\\)"):
        ops.run_ssh_steps(ssh_plan(("fra-0", 5432)), runner)
    assert "No route to host" in capsys.readouterr().err


def test_only_the_repository_host_gets_the_passphrase():
    vault_secrets = {"superuser_password": "s", "backup_passphrase": "p"}
    assert backup.host_secrets(True, vault_secrets) == {
        "PG_SUPERUSER_PASSWORD": "s",
        "PG_BACKUP_PASSPHRASE": "p",
    }
    assert backup.host_secrets(False, vault_secrets) == {"PG_SUPERUSER_PASSWORD": "s"}


def test_the_ops_commands_reach_the_repository_host_over_ssh(monkeypatch):
    facts = {
        "user": "demo-eu",
        "dir": "/d/demo-eu/pgbackrest/lhr-0",
        "stanza": "demo-eu",
        "target": "ssh",
        "repo_ssh": {"host": "10.1.0.2", "port": 2222},
    }
    env = ops.base_env(facts, "demo")
    calls = []
    monkeypatch.setattr(
        ops, "ssh_connection", lambda host, port: calls.append((host, port)) or {"kind": "ssh"}
    )

    class Done:
        returncode, stdout, stderr = 0, "{}", ""

    seen_env = {}
    monkeypatch.setattr(
        "components.hostcmd.run_script",
        lambda conn, script, action, e, secret, timeout: seen_env.update(e) or Done(),
    )
    assert ops.run_ops("info", env) == (0, "{}", "")
    assert calls == [("10.1.0.2", 2222)]
    # the connection's address is not part of the script's environment
    assert not [k for k in seen_env if k.startswith("DBFLEET_REPO_SSH")]
    assert seen_env["BACKUP_DIR"] == "/d/demo-eu/pgbackrest/lhr-0"


def test_a_host_certificate_names_its_address_and_a_missing_role_is_a_clear_error(monkeypatch):
    import hvac.exceptions

    from dbfleet import vault

    class FakeVault:
        def __init__(self) -> None:
            self.roles: set[str] = set()
            self.writes: list[tuple[str, dict]] = []

        def write_data(self, path: str, data: dict) -> dict:
            self.writes.append((path, data))
            if path.rsplit("/", 1)[1] not in self.roles:
                raise hvac.exceptions.InvalidRequest("unknown role: pgbackrest")
            return {"data": {"certificate": "C", "private_key": "K", "serial_number": "1"}}

    fake = FakeVault()
    monkeypatch.setattr(vault, "client_from_env", lambda: fake)
    props = {"mount": "pki-demo-eu", "common_name": "10.1.0.2", "ip_sans": ["10.1.0.2"],
             "ttl_s": 3600, "renew_fraction": 0.25}  # fmt: skip
    # The accounts layer (an admin `dbfleet up`) makes the role; the resource never does.
    with pytest.raises(vault.VaultError, match="pki-demo-eu has no role pgbackrest yet"):
        backup._issue(props)
    fake.roles.add("pgbackrest")
    out = backup._issue(props)
    assert (out["certificate"], out["private_key"]) == ("C", "K")
    assert {p for p, _ in fake.writes} == {"pki-demo-eu/issue/pgbackrest"}
    issued = fake.writes[-1][1]
    # pgBackRest 2.45 matches the dialled address against DNS names and the CN only
    assert issued["common_name"] == issued["alt_names"] == issued["ip_sans"] == "10.1.0.2"
