"""What dbfleet does on a bad day, on the real engine, OpenBao, PostgreSQL and HAProxy.

One fleet is brought up for the module; each test starts from whatever fleet is
deployed and leaves it serving (several check that explicitly), so they run in
any order and any one runs alone with `pytest -k`. Each test prints what
it measured (`pytest -s` shows it).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
from pathlib import Path

import hvac
import psycopg
import pytest
import yaml

from bench import procs
from dbfleet import vault
from dbfleet.model.stackname import LAYERS
from tests.integration.conftest import REPO, command_lines, default_fleet_text, make_fleet_env

GROUPS = ("us", "eu")
STACKS = [f"{layer}-{g}" for g in GROUPS for layer in LAYERS]
BAD_FLEETS = REPO / "tests" / "data" / "bad_fleets"


def wait_until(condition, timeout: float, interval: float = 0.1, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


@pytest.fixture(scope="module")
def fleet(local_vault):
    fe = make_fleet_env(local_vault, "rel")
    fe.run("up")
    yield fe
    fe.run("destroy", "--yes", check=False)
    shutil.rmtree(fe.root, ignore_errors=True)


def _descendants(root: int) -> dict[int, bytes]:
    """pid -> command line of every live process below `root`."""
    found = {}
    for p in procs.descendants(procs.read_procs(), root):
        if p.pid != root:
            try:
                found[p.pid] = Path(f"/proc/{p.pid}/cmdline").read_bytes()
            except OSError:
                continue  # gone meanwhile
    return found


def _stop_orphans(orphans: dict[int, bytes]) -> None:
    """Stops, by pid, the engine's plugin processes that outlived its SIGKILL (the
    language host and provider hosts serve forever once their engine is gone)."""
    for pid, cmdline in orphans.items():
        try:
            if Path(f"/proc/{pid}/cmdline").read_bytes() == cmdline:
                os.kill(pid, signal.SIGKILL)
        except OSError:
            continue


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")
    except OSError:
        return True


def uris(fe, group: str) -> dict:
    return fe.outputs(f"proxies-{group}", show_secrets=True)["connection_uris"]


def secrets_of(fe, group: str) -> dict:
    client = hvac.Client(url=fe.env["VAULT_ADDR"], token=fe.env["VAULT_TOKEN"])
    return vault.read_group_secrets(client, vault.DEFAULT_MOUNT, vault.secret_path(fe.name, group))


def state_digest(fe, groups=GROUPS) -> dict[str, str]:
    """Hash of every checkpoint file of the given groups' stacks."""
    out = {}
    for path in sorted((fe.home / "state" / ".pulumi" / "stacks").rglob("*.json")):
        if any(path.name.startswith(f"{layer}-{g}.") for g in groups for layer in LAYERS):
            out[path.name] = hashlib.sha256(path.read_bytes()).hexdigest()
    assert out, "no checkpoint files found"
    return out


def node_dir(fe, group: str, region: str, k: int = 0) -> Path:
    return fe.home / "data" / f"{fe.name}-{group}" / f"{region}-{k}"


def postmaster_pid(fe, group: str, region: str) -> int:
    return int((node_dir(fe, group, region) / "pgdata" / "postmaster.pid").read_text().split()[0])


def patroni_pid(fe, group: str, region: str) -> int:
    return int((node_dir(fe, group, region) / "run" / "patroni.pid").read_text().split()[0])


def set_fleet(fe, mutate) -> None:
    data = yaml.safe_load(default_fleet_text(fe.name, fe.cidr_octet))
    mutate(data)
    fe.write_fleet(yaml.safe_dump(data, sort_keys=False))


def roundtrip(fe, group: str, pairs: dict | None = None) -> None:
    """A write through every region's write endpoint is read through its read endpoint.
    `pairs`: the group's connection URIs read beforehand (reading them needs Vault: the
    stack's secrets are encrypted by the group's Transit key)."""
    for region, pair in (pairs or uris(fe, group)).items():
        token = f"rt-{region}-{time.monotonic_ns()}"
        with psycopg.connect(pair["write"], autocommit=True, connect_timeout=3) as c:
            c.execute("CREATE TABLE IF NOT EXISTS rt (t text PRIMARY KEY)")
            c.execute("INSERT INTO rt VALUES (%s)", (token,))

        def seen(pair=pair, token=token):
            with psycopg.connect(pair["read"], autocommit=True, connect_timeout=3) as c:
                if c.execute("SELECT to_regclass('rt') IS NOT NULL").fetchone()[0]:
                    return c.execute("SELECT 1 FROM rt WHERE t = %s", (token,)).fetchone()
            return None

        wait_until(seen, 5, what=f"{group}/{region} write to be readable")


# 1 ---------------------------------------------------------------------------
def test_bad_fleet_files_stop_every_stack_before_anything_is_touched(fleet):
    expected = yaml.safe_load((BAD_FLEETS / "expected.yaml").read_text())
    files = sorted(p for p in BAD_FLEETS.glob("*.yaml") if p.name != "expected.yaml")
    assert len(files) >= 30
    before = state_digest(fleet)
    checked = 0
    # Every file through one `dbfleet validate` (each file checked on its own, every
    # problem line naming its file); a preview of every stack, each stack taking its
    # turn with a different file so that all eight are exercised.
    wants = {path: expected[path.name].replace("<file>", str(path)) for path in files}
    proc = fleet.run("validate", *map(str, files), check=False)
    assert proc.returncode == 1 and proc.stdout == "" and "Traceback" not in proc.stderr
    for path, want in wants.items():
        mine = [ln for ln in proc.stderr.splitlines() if ln.startswith(f"{path}:")]
        assert mine and any(want in ln for ln in mine), f"{path.name}: {proc.stderr}"
    for i, (path, want) in enumerate(wants.items()):
        if i % 8 == 0:
            stack = STACKS[(i // 8) % len(STACKS)]
            env = dict(fleet.env, DBFLEET_SPEC=str(path))
            pv = subprocess.run(
                ["pulumi", "preview", "-s", stack, "--non-interactive"],
                check=False,
                cwd=fleet.project,
                env=env,
                capture_output=True,
                text=True,
                timeout=300,
            )
            assert pv.returncode != 0, f"{path.name} was accepted by a preview of {stack}"
            assert want in pv.stdout + pv.stderr, (
                f"{path.name} on {stack}:\n{pv.stdout}\n{pv.stderr}"
            )
            assert "Traceback" not in pv.stdout + pv.stderr
            checked += 1
    assert checked >= 8
    assert state_digest(fleet) == before, "a rejected fleet file changed deployed state"
    roundtrip(fleet, "eu")
    print(
        f"measured: {len(files)} bad fleet files rejected by validate, {checked} real previews refused them"
    )


# 2 ---------------------------------------------------------------------------
def test_vault_trouble_fails_before_any_change_and_the_fleet_keeps_serving(fleet, local_vault):
    before = state_digest(fleet)
    eu = uris(fleet, "eu")  # while Vault answers
    addr, token = fleet.env["VAULT_ADDR"], fleet.env["VAULT_TOKEN"]
    client = hvac.Client(url=addr, token=token)
    path = vault.secret_path(fleet.name, "eu")
    client.sys.create_or_update_policy(
        "dbfleet-test-none", 'path "secret/data/nothing/*" { capabilities = ["read"] }'
    )
    limited = client.auth.token.create(policies=["dbfleet-test-none"], ttl="10m")["auth"][
        "client_token"
    ]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]

    # The stacks' secrets are encrypted by the group's Transit key: with a token that
    # may not use it, the engine stops when it opens the stack (Vault's refusal of the
    # decrypt), before the program runs; `dbfleet` says it in one line earlier still
    # (tests/integration/test_group_access.py).
    cases = {
        "unreachable": (
            {"VAULT_ADDR": f"http://127.0.0.1:{dead_port}"},
            (f"127.0.0.1:{dead_port}",),
        ),
        "wrong token": ({"VAULT_TOKEN": "s.not-a-token"}, ("VAULT_TOKEN", "permission denied")),
        "no read access": ({"VAULT_TOKEN": limited}, (path, "permission denied")),
    }
    for name, (override, needles) in cases.items():
        env = dict(fleet.env, **override)
        for stack in ("accounts-eu", "replicas-eu"):
            for verb in ("preview", "up"):
                args = ["pulumi", verb, "-s", stack, "--non-interactive"] + (
                    ["--yes"] if verb == "up" else []
                )
                p = subprocess.run(
                    args,
                    check=False,
                    cwd=fleet.project,
                    env=env,
                    capture_output=True,
                    text=True,
                    timeout=300,
                )
                out = p.stdout + p.stderr
                assert p.returncode != 0, f"{name}: {verb} {stack} succeeded"
                assert any(n in out for n in needles), f"{name}: {out}"
                assert "Traceback" not in out
        roundtrip(fleet, "eu", eu)

    # Sealed: the same, then unsealed again by the local server script.
    subprocess.run(
        ["bao", "operator", "seal"],
        env=dict(os.environ, VAULT_ADDR=addr, VAULT_TOKEN=token),
        check=True,
        capture_output=True,
    )
    try:
        p = fleet.pulumi("preview", "-s", "replicas-eu", check=False)
        assert p.returncode != 0 and "sealed" in (p.stdout + p.stderr).lower()
        roundtrip(fleet, "eu", eu)
    finally:
        subprocess.run(
            ["bash", str(REPO / "scripts/vault.sh"), "start"],
            env=local_vault.script_env,
            check=True,
            capture_output=True,
        )

    # A deleted secret: the layers that read it stop and name the path.
    saved = secrets_of(fleet, "eu")
    client.secrets.kv.v2.delete_metadata_and_all_versions(path=path, mount_point="secret")
    try:
        p = fleet.pulumi("preview", "-s", "replicas-eu", check=False)
        assert p.returncode != 0 and path in p.stdout + p.stderr
        roundtrip(fleet, "eu", eu)
    finally:
        client.secrets.kv.v2.create_or_update_secret(path=path, secret=saved, mount_point="secret")
    assert state_digest(fleet) == before, "a Vault failure changed deployed state"
    print(
        "measured: unreachable, wrong token, no read access, sealed, deleted secret: all refused before any change"
    )


# 3 + 4 -----------------------------------------------------------------------
def test_rotation_leaks_no_secret_and_a_second_up_changes_nothing(fleet, local_vault):
    client = hvac.Client(url=fleet.env["VAULT_ADDR"], token=fleet.env["VAULT_TOKEN"])
    path = vault.secret_path(fleet.name, "eu")
    old = secrets_of(fleet, "eu")
    new_app = "rotated-" + os.urandom(16).hex()
    client.secrets.kv.v2.patch(path=path, secret={"app_password": new_app}, mount_point="secret")
    values = [*old.values(), new_app, *secrets_of(fleet, "us").values()]
    # The servers' private keys too: a line of each key's base64 (docs/security.md).
    keys = sorted((fleet.home / "data").rglob("tls/server.key"))
    assert keys, "no server key found"
    values += [k.read_text().splitlines()[1] for k in keys]

    seen_in_args: list[str] = []
    stop = threading.Event()

    def sample():
        while not stop.is_set():
            for args in command_lines().values():
                if any(v in args for v in values):
                    seen_in_args.append(args[:80])
            stop.wait(0.02)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        proc = fleet.run("up", "eu")
    finally:
        stop.set()
        sampler.join()
    assert seen_in_args == [], "a secret appeared in a process's arguments"
    assert not any(v in proc.stdout + proc.stderr for v in values)

    # The new password works and the old one does not.
    eu = uris(fleet, "eu")
    with psycopg.connect(eu["fra"]["write"], autocommit=True) as c:
        assert c.execute("SELECT 1").fetchone() == (1,)
    assert new_app in eu["fra"]["write"]
    stale = eu["fra"]["write"].replace(new_app, old["app_password"])
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(stale, connect_timeout=3)

    # No value in state, engine logs, or any file of the fleet's data others could read.
    for stack in STACKS:
        text = fleet.export(stack)
        assert not any(v in text for v in values), stack
        assert "PRIVATE KEY" not in text, stack
    for root in (fleet.home / "pulumi-home", fleet.home / "state", fleet.home / "data"):
        for f in root.rglob("*"):
            if f.is_file() and (root.name != "data" or f.stat().st_mode & 0o044):
                data = f.read_bytes()
                assert not any(v.encode() in data for v in values), f
    for f in Path("/tmp").glob("pulumi*.log*"):
        assert not any(v.encode() in f.read_bytes() for v in values), f

    # Idempotence, also across a restart of the local secrets server.
    subprocess.run(
        ["bash", str(REPO / "scripts/vault.sh"), "stop"],
        env=local_vault.script_env,
        check=True,
        capture_output=True,
    )
    subprocess.run(
        ["bash", str(REPO / "scripts/vault.sh"), "start"],
        env=local_vault.script_env,
        check=True,
        capture_output=True,
    )
    again = fleet.run("up")
    for stack in STACKS:
        line = next(ln for ln in again.stdout.splitlines() if ln.startswith(stack))
        assert "unchanged" in line, again.stdout
    print(
        f"measured: {len(values)} secrets, 0 found in argv samples, state, logs or readable files; second up: 8 unchanged"
    )


# 6 ---------------------------------------------------------------------------
def test_a_lost_replica_is_routed_around_then_repaired_and_caught_up(fleet):
    eu = uris(fleet, "eu")
    lhr_host = eu["lhr"]["read"].split("@")[1].split(":")[0]
    pid = postmaster_pid(fleet, "eu", "lhr")
    errors, served_elsewhere_at = [], None
    # The node is lost: Patroni (which would restart PostgreSQL) and PostgreSQL both.
    os.kill(patroni_pid(fleet, "eu", "lhr"), signal.SIGKILL)
    os.kill(pid, signal.SIGKILL)
    t0 = time.monotonic()
    # A connection caught in flight by the kill itself can fail (no proxy can save
    # it); what must never fail are the reads that start once the node is gone.
    wait_until(
        lambda: not Path(f"/proc/{pid}").exists() or _zombie(pid),
        5,
        interval=0.01,
        what="the killed postmaster to be gone",
    )
    while time.monotonic() - t0 < 8:
        try:
            with psycopg.connect(eu["lhr"]["read"], autocommit=True, connect_timeout=3) as c:
                server = c.execute("SELECT host(inet_server_addr())").fetchone()[0]
                if server != lhr_host and served_elsewhere_at is None:
                    served_elsewhere_at = time.monotonic() - t0
        except psycopg.Error as exc:
            errors.append(str(exc))
        time.sleep(0.05)
    try:
        assert served_elsewhere_at is not None and served_elsewhere_at < 5, served_elsewhere_at
        assert errors == [], errors[:3]
    except AssertionError:
        fleet.run("up", "eu")  # leave the fleet whole for the tests that follow
        raise

    # Rows written while it is down...
    with psycopg.connect(eu["fra"]["write"], autocommit=True) as c:
        c.execute("CREATE TABLE IF NOT EXISTS catchup (id int PRIMARY KEY)")
        c.execute("INSERT INTO catchup SELECT generate_series(1, 500)")
    # ...drift is detected by a preview, not ignored...
    pv = fleet.pulumi("preview", "-s", "replicas-eu", "--expect-no-changes", check=False)
    assert pv.returncode != 0 and "lhr-0-server" in pv.stdout
    # ...and the next up brings it back, and it catches up.
    fleet.run("up", "eu")
    direct = (
        eu["lhr"]["read"].rsplit("@", 1)[0]
        + f"@{lhr_host}:{fleet.outputs('replicas-eu')['nodes']['lhr']['port']}/app"
    )

    def caught_up():
        try:
            with psycopg.connect(direct, autocommit=True, connect_timeout=3) as c:
                return c.execute("SELECT count(*) FROM catchup").fetchone()[0] == 500
        except psycopg.Error:
            return False  # still starting, or the table not replayed yet

    wait_until(caught_up, 10, what="the repaired replica to catch up")
    print(
        f"measured: reads served by another region after {served_elsewhere_at:.2f} s, 0 read errors; "
        "repaired by the next up and caught up with 500 rows"
    )


# 7, 8 (planned switchover, unplanned failover): tests/integration/test_ha.py, on
# Patroni — a killed leader is replaced by Patroni itself, a switchover by the fleet file.


# 9 ---------------------------------------------------------------------------
def test_a_change_to_eu_never_touches_us(fleet):
    primary = fleet.outputs("replicas-eu")["primary_region"]

    def add_ams(d):
        d["groups"]["eu"]["primary"] = primary
        d["groups"]["eu"]["regions"]["ams"] = {"nodes": 1}

    set_fleet(fleet, add_ams)
    before = state_digest(fleet, ("us",))
    for layer in LAYERS:
        fleet.pulumi("preview", "-s", f"{layer}-us", "--expect-no-changes")
    fleet.run("up", "eu")
    assert "ams" in uris(fleet, "eu")
    assert state_digest(fleet, ("us",)) == before
    roundtrip(fleet, "eu")
    print(
        "measured: eu gained ams; us previews showed no change and its state files are byte-identical"
    )


# 10 --------------------------------------------------------------------------
def test_a_second_operator_is_refused_by_the_state_lock(fleet):
    first = subprocess.Popen(
        ["pulumi", "up", "-s", "proxies-eu", "--yes", "--non-interactive"],
        cwd=fleet.project,
        env=fleet.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    locks = fleet.home / "state" / ".pulumi" / "locks"
    wait_until(
        lambda: list(locks.rglob("proxies-eu/*.json")),
        30,
        interval=0.02,
        what="the first run's lock",
    )
    second = fleet.pulumi("up", "-s", "proxies-eu", "--yes", check=False)
    first.wait(timeout=300)
    assert first.returncode == 0, first.stdout.read()
    assert second.returncode != 0
    assert "locked" in (second.stdout + second.stderr)
    json.loads(fleet.export("proxies-eu"))  # state is still a valid checkpoint
    print("measured: concurrent up of proxies-eu refused with 'locked'; state valid")


# 5 ---------------------------------------------------------------------------
def test_an_engine_killed_mid_run_converges_on_the_next_up(fleet):
    eu = uris(fleet, "eu")
    primary = fleet.outputs("replicas-eu")["primary_region"]
    with psycopg.connect(eu[primary]["write"], autocommit=True) as c:
        c.execute("CREATE TABLE IF NOT EXISTS before_kill (id int PRIMARY KEY)")
        c.execute("INSERT INTO before_kill SELECT generate_series(1, 1000)")

    deployed = set(fleet.outputs("networks-eu")["regions"])

    def two_nodes_in_arn(d):
        d["groups"]["eu"]["primary"] = primary
        if "ams" in deployed:  # the blast-radius test adds ams; keep what is deployed
            d["groups"]["eu"]["regions"]["ams"] = {"nodes": 1}
        d["groups"]["eu"]["regions"]["arn"] = {"nodes": 2}

    set_fleet(fleet, two_nodes_in_arn)
    fleet.run("up", "eu", "--layer", "networks")
    engine = subprocess.Popen(
        ["pulumi", "up", "-s", "replicas-eu", "--yes", "--skip-preview", "--non-interactive"],
        cwd=fleet.project,
        env=fleet.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    seen = []

    def creating():
        line = engine.stdout.readline()
        if not line:
            raise AssertionError(
                "the engine ended before creating the replica:\n" + "".join(seen[-30:])
            )
        seen.append(line)
        return "arn-1-server creating" in line

    try:
        wait_until(creating, 120, interval=0, what="the new replica's creation to start")
    except AssertionError:
        engine.kill()
        raise AssertionError("".join(seen[-30:])) from None
    # What the engine runs is left running, as after a real kill; its plugin hosts
    # (which never exit on their own) are stopped once the test is done.
    orphans = {
        pid: cmd
        for pid, cmd in _descendants(engine.pid).items()
        if any(
            name in cmd
            for name in (
                b"pulumi.dynamic",
                b"pulumi-resource-pulumi-python",
                b"pulumi-language-python",
            )
        )
    }
    engine.send_signal(signal.SIGKILL)
    engine.wait()
    try:
        _converges_after_the_kill(fleet, eu)
    finally:
        _stop_orphans(orphans)


def _converges_after_the_kill(fleet, eu) -> None:
    proc = fleet.run("up", "eu")
    assert "stale lock" in proc.stdout + proc.stderr
    again = fleet.run("up", "eu")
    assert all(
        "unchanged" in ln for ln in again.stdout.splitlines() if ln.startswith(tuple(STACKS))
    )
    nodes = fleet.outputs("replicas-eu")["nodes"]
    assert len(nodes["arn"]["members"]) == 2
    for m in nodes["arn"]["members"]:
        direct = eu["arn"]["read"].rsplit("@", 1)[0] + f"@{m['host']}:{m['port']}/app"

        def has_rows(direct=direct):
            with psycopg.connect(direct, autocommit=True, connect_timeout=3) as c:
                return c.execute("SELECT count(*) FROM before_kill").fetchone()[0] == 1000

        wait_until(has_rows, 10, what="every row written before the kill")
    print(
        "measured: engine SIGKILLed during replicas-eu; next up removed the stale lock and converged; "
        "1000/1000 rows present on both arn nodes"
    )


# 11 --------------------------------------------------------------------------
def test_an_occupied_port_stops_the_rollout_with_a_clear_error(fleet):
    primary = fleet.outputs("replicas-eu")["primary_region"]
    from dbfleet.model.catalogue import REGIONS

    host = f"127.{fleet.cidr_octet}.{REGIONS['cdg'].index}.1"
    squatter = socket.socket()
    squatter.bind((host, 6432))
    squatter.listen()
    try:
        current = fleet.outputs("replicas-eu")["nodes"]

        def add_cdg(d):
            d["groups"]["eu"]["primary"] = primary
            d["groups"]["eu"]["regions"].update(
                {r: {"nodes": len(n["members"])} for r, n in current.items()}, cdg={"nodes": 1}
            )

        set_fleet(fleet, add_cdg)
        proc = fleet.run("up", "eu", check=False)
        assert proc.returncode == 1
        assert f"{host}:6432" in proc.stdout + proc.stderr
        assert not node_dir(fleet, "eu", "cdg").exists(), "a node was started despite the clash"
        # The failed stack keeps the outputs of its last good run for the layers above it.
        assert set(fleet.outputs("networks-eu")["regions"]) == set(current)
    finally:
        squatter.close()
    fleet.run("up", "eu")
    assert "cdg" in uris(fleet, "eu")
    roundtrip(fleet, "eu")
    print(
        f"measured: {host}:6432 in use stopped networks-eu before any node; the next up completed"
    )
