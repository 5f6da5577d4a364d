"""The policy pack on the real engine: the default fleet passes it, and every mandatory
policy blocks a real preview of a deliberately broken program (or fleet file), with its
own message.

The default fleet is brought up once, with the pack, in the session's isolated
environment (`fleet_env`), and destroyed when this module ends. Meanwhile the broken
programs of tests/data/policy_programs/ run beside it, each in its own copy and state
directory: they are only ever previewed, except one `up`, which must be refused before
anything is created.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PACK = REPO / "policies"
CASES = REPO / "tests" / "data" / "policy_programs"
LAYERS = ("accounts", "networks", "replicas", "proxies")
GROUPS = ("us", "eu")

_HEADER = re.compile(r"^\s*\[(advisory|mandatory|disabled)\]\s+dbfleet v\S+\s+(\S+) \((.*)\)\s*$")
_SECTION_END = re.compile(r"^(Outputs|Resources|Diagnostics|Duration|Policy Packs run):")


@dataclass(frozen=True)
class Violation:
    level: str
    policy: str
    resource: str
    text: str


def violations(output: str) -> list[Violation]:
    """The `Policy Violations:` section of pulumi's output, one entry per violation."""
    found: list[Violation] = []
    current: list[str] | None = None
    head: tuple[str, str, str] | None = None
    in_section = False
    for line in output.splitlines() + ["Outputs:"]:
        if line.startswith("Policy Violations:"):
            in_section = True
            continue
        if not in_section:
            continue
        match = _HEADER.match(line)
        if match or _SECTION_END.match(line):
            if head and current is not None:
                found.append(Violation(*head, "\n".join(s.strip() for s in current).strip()))
            head, current = (match.groups() if match else None), []
            if not match:
                in_section = False
            continue
        if current is not None:
            current.append(line)
    return found


def of(policy: str, proc: subprocess.CompletedProcess) -> list[Violation]:
    return [v for v in violations(proc.stdout) if v.policy == policy]


def assert_blocked(proc: subprocess.CompletedProcess, policy: str, *said: str) -> list[Violation]:
    """The run failed, and `policy` reported every text in `said` as mandatory."""
    assert proc.returncode != 0, f"not blocked:\n{proc.stdout}\n{proc.stderr}"
    mine = of(policy, proc)
    assert mine, f"no {policy} violation:\n{proc.stdout}\n{proc.stderr}"
    assert {v.level for v in mine} == {"mandatory"}, proc.stdout
    text = "\n".join(v.text for v in mine)
    for s in said:
        assert s in text, f"{s!r} not in the {policy} violations:\n{text}"
    return mine


# --------------------------------------------------------------------------- runs

# Every broken-program run, by key: (program, stack, pulumi command, policy pack config).
# Each run gets its own copy of the program and its own state, so they run in parallel.
EXCEPT_FRA = {"exposure": {"publicBindExceptions": [
    {"resource": "fra-0-server", "address": "0.0.0.0", "reason": "firewalled test host"}]}}  # fmt: skip
CASE_RUNS = {
    "residency": ("residency_backup_abroad", "proxies-eu", ("preview",), None),
    "residency-outputs": ("residency_foreign_secret_path", "accounts-eu", ("preview",), None),
    "no-plaintext-secrets": ("secret_in_environment", "accounts-eu", ("preview",), None),
    "no-plaintext-secrets-up": (
        "secret_in_environment",
        "accounts-eu",
        ("up", "--yes", "--skip-preview"),
        None,
    ),
    "no-plaintext-secret-outputs": ("secret_in_outputs", "replicas-eu", ("preview",), None),
    "exposure": ("public_bind", "replicas-eu", ("preview",), None),
    "exposure-excepted": ("public_bind", "replicas-eu", ("preview",), EXCEPT_FRA),
    "authentication": ("weak_authentication", "replicas-eu", ("preview",), None),
    "stack-shape": ("wrong_stack_shape", "proxies-eu", ("preview",), None),
    "tls": ("no_certificate", "replicas-eu", ("preview",), None),
    "tls-outputs": ("plain_uris", "proxies-eu", ("preview",), None),
    "backup-residency": ("archive_abroad", "replicas-eu", ("preview",), None),
    # The real program on a fleet file whose group br has two regions.
    "durability": ("two_region_fleet", "accounts-br", ("preview",), None),
    "durability-mandatory": (
        "two_region_fleet",
        "accounts-br",
        ("preview",),
        {"durability": {"enforcementLevel": "mandatory"}},
    ),
}


@dataclass
class Cases:
    """Runs the programs of tests/data/policy_programs, each in its own copy and state."""

    base: Path
    env: dict[str, str]

    def run(self, key: str) -> subprocess.CompletedProcess:
        case, stack, args, config = CASE_RUNS[key]
        work = self.base / key
        shutil.copytree(CASES / case, work)
        shutil.copy(CASES / "caselib.py", work / "caselib.py")
        (work / ".state").mkdir()
        self._pulumi(key, "stack", "init", stack)
        extra = []
        if config is not None:
            (work / "policy-config.json").write_text(json.dumps(config))
            extra = ["--policy-pack-config", str(work / "policy-config.json")]
        return self._pulumi(
            key, *args, "--stack", stack, "--policy-pack", str(PACK), *extra, check=False
        )

    def data(self, key: str) -> Path:
        """Where the program's host scripts would keep data ($DBFLEET_CASE_DATA)."""
        return self.base / key / "data"

    def export(self, key: str) -> dict:
        return json.loads(self._pulumi(key, "stack", "export", "--stack", CASE_RUNS[key][1]).stdout)

    def _pulumi(self, key: str, *args: str, check: bool = True) -> subprocess.CompletedProcess:
        work = self.base / key
        env = {
            **self.env,
            "PULUMI_BACKEND_URL": f"file://{work / '.state'}",
            "DBFLEET_CASE_DATA": str(self.data(key)),
        }
        if (work / "fleet.yaml").exists():  # a broken fleet rather than a broken program
            env["DBFLEET_SPEC"] = str(work / "fleet.yaml")
        proc = subprocess.run(
            ["pulumi", *args, "--non-interactive"],
            check=False,
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if check:
            assert proc.returncode == 0, f"pulumi {' '.join(args)}:\n{proc.stdout}\n{proc.stderr}"
        return proc


@dataclass
class Runs:
    fleet: dict[str, subprocess.CompletedProcess]
    cases: Cases
    case_results: dict[str, Future]

    def case(self, key: str) -> subprocess.CompletedProcess:
        return self.case_results[key].result()


@pytest.fixture(scope="module")
def runs(fleet_env):
    """The default fleet brought up with the pack (groups in parallel), while the broken
    programs are previewed beside it; the fleet is destroyed when the module ends."""
    base = fleet_env.root / "policy-cases"
    shutil.rmtree(base, ignore_errors=True)
    base.mkdir()
    cases = Cases(base, dict(fleet_env.env))

    def up_group(group: str) -> dict[str, subprocess.CompletedProcess]:
        results = {}
        for layer in LAYERS:
            stack = f"{layer}-{group}"
            fleet_env.pulumi("stack", "init", stack, check=False)
            proc = fleet_env.pulumi(
                "up",
                "--yes",
                "--skip-preview",
                "--stack",
                stack,
                "--policy-pack",
                str(PACK),
                check=False,
            )
            results[stack] = proc
            if proc.returncode != 0:
                break
        return results

    with (
        ThreadPoolExecutor(max_workers=len(GROUPS)) as fleet_pool,
        ThreadPoolExecutor(max_workers=2) as case_pool,
    ):
        groups = [fleet_pool.submit(up_group, g) for g in GROUPS]
        futures = {key: case_pool.submit(cases.run, key) for key in CASE_RUNS}
        fleet = {k: v for g in groups for k, v in g.result().items()}
        yield Runs(fleet, cases, futures)
    fleet_env.run("destroy", "--yes", check=False)
    shutil.rmtree(base, ignore_errors=True)


# --------------------------------------------------------------------------- the default fleet


@pytest.mark.parametrize("stack", [f"{layer}-{g}" for g in GROUPS for layer in LAYERS])
def test_the_default_fleet_passes_the_whole_pack(runs, stack):
    proc = runs.fleet.get(stack)
    assert proc is not None, f"{stack} was not started: an earlier stack of its group failed"
    assert proc.returncode == 0, f"{proc.stdout}\n{proc.stderr}"
    assert violations(proc.stdout) == [], proc.stdout
    assert "Policy Violations" not in proc.stdout
    # The pack's name is left blank in this table by `up --skip-preview`; its path is not.
    assert re.search(rf"\({re.escape(str(PACK))}\)\s+\(local\)", proc.stdout), (
        "the pack did not run"
    )


def test_the_pack_judges_the_real_fleet_and_durability_can_be_made_mandatory(
    fleet_env, runs, tmp_path
):
    """Not a vacuous pass: with a stricter config the same real stack is refused, for its
    real nodes (durability made mandatory, 4 regions, protection required on local too)."""
    config = tmp_path / "strict.json"
    strict = {"enforcementLevel": "mandatory", "minRegions": 4, "protectPrimaryOnLocal": True}
    config.write_text(json.dumps({"durability": strict}))
    proc = fleet_env.pulumi(
        "preview", "--stack", "replicas-eu", "--policy-pack", str(PACK),
        "--policy-pack-config", str(config), check=False,
    )  # fmt: skip
    found = assert_blocked(
        proc, "durability",
        "group eu keeps copies of its data in 3 region(s) (arn, fra, lhr); at least 4 are required",
        "fra-0-server: the primary of group eu on the local target is not protected",
    )  # fmt: skip
    assert "pulumi-python:dynamic:Resource: fra-0-server" in {v.resource for v in found}


# --------------------------------------------------------------------------- broken fleets and programs


def test_durability_is_advisory_by_default_and_mandatory_when_configured(runs):
    advisory = runs.case("durability")
    assert advisory.returncode == 0, advisory.stdout + advisory.stderr
    (warning,) = of("durability", advisory)
    assert warning.level == "advisory"
    assert "group br has 2 region(s) (gru, gig); at least 3 are required" in warning.text
    assert [v for v in violations(advisory.stdout) if v.level == "mandatory"] == []
    assert_blocked(
        runs.case("durability-mandatory"), "durability", "group br has 2 region(s) (gru, gig)"
    )


def test_residency_blocks_a_read_backup_in_another_zone(runs):
    (violation,) = assert_blocked(
        runs.case("residency"), "residency", "fra-haproxy: the proxy's read backup"
    )
    assert (
        "is region iad (zone US, group us); group eu may only use its own regions (fra, lhr, arn)"
        in violation.text
    )
    assert violation.resource == "pulumi-python:dynamic:Resource: fra-haproxy"
    assert "Remediation: keep every address, endpoint and path of a group its own" in violation.text


def test_residency_outputs_blocks_another_groups_secret_path(runs, fleet_env):
    assert_blocked(
        runs.case("residency-outputs"), "residency-outputs",
        f"output secret_path is 'dbfleet/{fleet_env.name}/us/postgres': the passwords of group eu live at "
        f"dbfleet/{fleet_env.name}/eu/postgres",
    )  # fmt: skip


def test_no_plaintext_secrets_blocks_a_password_in_the_environment(runs):
    proc = runs.case("no-plaintext-secrets")
    assert_blocked(
        proc,
        "no-plaintext-secrets",
        "account-account: environment.PG_SUPERUSER_PASSWORD carries a secret in plaintext",
    )
    assert "policy-case-superuser" not in "\n".join(v.text for v in violations(proc.stdout))


def test_a_mandatory_violation_stops_up_before_anything_is_created(runs):
    proc = runs.case("no-plaintext-secrets-up")
    assert_blocked(proc, "no-plaintext-secrets", "environment.PG_SUPERUSER_PASSWORD")
    assert "account.sh" not in proc.stdout + proc.stderr, "the host script ran"
    assert not runs.cases.data("no-plaintext-secrets-up").exists(), (
        "account.sh created the data root"
    )
    deployment = runs.cases.export("no-plaintext-secrets-up")["deployment"]
    types = [r["type"] for r in deployment.get("resources") or []]
    assert "pulumi-python:dynamic:Resource" not in types, types


def test_no_plaintext_secret_outputs_blocks_credentials_in_outputs(runs):
    proc = runs.case("no-plaintext-secret-outputs")
    assert_blocked(
        proc, "no-plaintext-secret-outputs",
        "stack outputs: connection_uri carries a credential in plaintext",
        "stack outputs: debug repeats the value of a secret in plaintext",
    )  # fmt: skip
    # The node's own passwords were Pulumi secrets: the per-resource policy had nothing to say.
    assert of("no-plaintext-secrets", proc) == []
    assert "policy-case-superuser" not in "\n".join(v.text for v in violations(proc.stdout))


def test_exposure_blocks_a_public_bind_unless_named_in_the_config(runs):
    (violation,) = assert_blocked(
        runs.case("exposure"),
        "exposure",
        "fra-0-server: PG_HOST 0.0.0.0 is a public bind (every interface)",
    )
    assert "publicBindExceptions" in violation.text
    excepted = runs.case("exposure-excepted")
    assert excepted.returncode == 0, excepted.stdout + excepted.stderr
    assert of("exposure", excepted) == []


def test_authentication_blocks_md5_a_foreign_address_and_a_shared_role(runs):
    assert_blocked(
        runs.case("authentication"), "authentication",
        "fra-0-server: PG_AUTH_METHOD asks for 'md5'; PostgreSQL must use scram-sha-256 only",
        "lhr-0-server: ALLOWED_HOSTS admits 203.0.113.7, which is not an address of group eu",
        "leader-leader: APP_USER is 'replicator'; the application must not share the replication role",
    )  # fmt: skip


def test_stack_shape_blocks_a_database_and_a_us_region_in_proxies_eu(runs):
    assert_blocked(
        runs.case("stack-shape"), "stack-shape",
        "fra-0: proxies-eu is a proxies stack and declares a database; that belongs in replicas-eu",
        "proxies-eu is a proxies stack and declares a database (patroni.sh); that belongs in replicas-eu",
        "iad: proxies-eu declares region iad (zone US, group us); group eu has only fra, lhr, arn",
    )  # fmt: skip


def test_tls_blocks_a_node_without_its_ca_and_uris_that_do_not_verify(runs):
    assert_blocked(
        runs.case("tls"), "tls",
        "fra-0-server: a PostgreSQL node without its group's CA certificate (TLS_CA) would accept plain TCP",
    )  # fmt: skip
    proc = runs.case("tls-outputs")
    assert_blocked(
        proc, "tls-outputs",
        "connection_uris.fra.write: sslmode=prefer (libpq's default); clients must verify the server",
    )  # fmt: skip
    assert "policy-case-application" not in proc.stdout  # the URI's password is never shown


def test_backup_residency_blocks_a_node_archiving_into_another_groups_repository(runs, fleet_env):
    name = fleet_env.name
    assert_blocked(
        runs.case("backup-residency"), "backup-residency",
        f"fra-0-server: archive_command pushes WAL to stanza(s) {name}-us, not only to the group's ({name}-eu)",
        f"/{name}-us/pgbackrest/pgbackrest.conf, not the group's (",
    )  # fmt: skip


def test_every_mandatory_policy_is_shown_blocking_a_preview():
    from policies.rules import POLICIES
    from policies.rules.common import MANDATORY

    mandatory = {p.name for p in POLICIES if p.enforcement_level == MANDATORY}
    assert mandatory <= {key for key, (_, _, args, _) in CASE_RUNS.items() if args == ("preview",)}


def test_the_violation_parser_reads_what_pulumi_prints():
    sample = (
        "Policy Violations:\n"
        "    [mandatory]  dbfleet v0.1.0  exposure (pulumi-python:dynamic:Resource: fra-0-server)\n"
        "    Exposure: description\n"
        "    fra-0-server: PG_HOST 0.0.0.0 is a public bind\n"
        "    \n"
        "    [advisory]  dbfleet v0.1.0  durability (pulumi:pulumi:Stack: dbfleet-replicas-eu)\n"
        "    Durability: description\n"
        "Outputs:\n    x: 1\n"
    )
    assert violations(sample) == [
        Violation("mandatory", "exposure", "pulumi-python:dynamic:Resource: fra-0-server",
                  "Exposure: description\nfra-0-server: PG_HOST 0.0.0.0 is a public bind"),
        Violation("advisory", "durability", "pulumi:pulumi:Stack: dbfleet-replicas-eu", "Durability: description"),
    ]  # fmt: skip
