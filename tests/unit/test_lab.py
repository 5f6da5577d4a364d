"""The lab's reading of a fleet file, its names and the files it writes (no namespace
is made here: tests/integration/test_ssh_lab.py builds a real lab)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from dbfleet import PROJECT_ROOT
from dbfleet.ops import lab
from dbfleet.ops.lab import Lab, LabError, LabHost, read_spec

FLEET = """
name: t1
target: ssh
ssh: {user: root, key: dbfleet/t1/ssh}
groups:
  us:
    zone: US
    primary: iad
    regions:
      iad: {nodes: 1, hosts: [{address: 198.18.9.11}]}
      ord: {nodes: 1, hosts: [{address: 198.18.9.12, port: 2222}]}
"""


def spec_file(tmp_path: Path, text: str = FLEET) -> Path:
    path = tmp_path / "fleet.yaml"
    path.write_text(text)
    return path


def test_the_committed_lab_fleet_has_the_default_fleets_shape():
    spec = read_spec(PROJECT_ROOT / "stacks" / "lab.yaml")
    assert (spec.name, spec.user, spec.key_path) == ("lab", "root", "dbfleet/lab/ssh")
    assert [(h.group, h.region, h.address) for h in spec.hosts] == [
        ("us", "iad", "198.18.0.11"),
        ("us", "ord", "198.18.0.12"),
        ("us", "sjc", "198.18.0.13"),
        ("eu", "fra", "198.18.0.21"),
        ("eu", "lhr", "198.18.0.22"),
        ("eu", "arn", "198.18.0.23"),
    ]
    assert str(spec.network) == "198.18.0.0/24"


def test_every_interface_name_fits_the_kernels_15_characters(tmp_path):
    the_lab = Lab(read_spec(PROJECT_ROOT / "stacks" / "lab.yaml"), tmp_path)
    assert len(the_lab.bridge) <= 15
    assert all(len(the_lab.veth(h)) <= 15 for h in the_lab.spec.hosts)
    assert len({the_lab.namespace(h) for h in the_lab.spec.hosts}) == 6


def test_two_labs_get_different_names(tmp_path):
    one = read_spec(spec_file(tmp_path))
    other_net = read_spec(spec_file(tmp_path, FLEET.replace("198.18.9.", "198.18.10.")))
    other_name = read_spec(spec_file(tmp_path, FLEET.replace("name: t1", "name: t2")))
    assert len({one.lab_id, other_net.lab_id, other_name.lab_id}) == 3
    assert Lab(one, tmp_path).bridge != Lab(other_net, tmp_path).bridge


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("198.18.9.12", "198.18.8.12"), "must share one /24"),
        (("198.18.9.12", "198.18.9.11"), "listed twice"),
        (("198.18.9.12", "198.18.9.1"), "this machine's address in the lab"),
        (("198.18.9.12", "lab-host"), "is not an IPv4 address"),
        (("port: 2222", "port: 70000"), "is not a port number"),
        (("key: dbfleet/t1/ssh", "user: root"), "ssh.key"),
    ],
)
def test_a_fleet_file_the_lab_cannot_build_is_refused(tmp_path, change, message):
    with pytest.raises(LabError, match=message):
        read_spec(spec_file(tmp_path, FLEET.replace(*change)))


def test_known_hosts_pins_each_host_at_its_port(tmp_path):
    the_lab = Lab(read_spec(spec_file(tmp_path)), tmp_path)
    for i, host in enumerate(the_lab.spec.hosts):
        the_lab.host_dir(host).mkdir(parents=True)
        (the_lab.host_dir(host) / "ssh_host_ed25519_key.pub").write_text(
            f"ssh-ed25519 AAAAkey{i} comment\n"
        )
    assert the_lab.known_hosts() == (
        "198.18.9.11 ssh-ed25519 AAAAkey0\n[198.18.9.12]:2222 ssh-ed25519 AAAAkey1\n"
    )


def test_each_sshd_lets_in_the_login_key_only(tmp_path):
    the_lab = Lab(read_spec(spec_file(tmp_path)), tmp_path)
    host = the_lab.spec.host("198.18.9.12")
    lines = the_lab._sshd_config_text(host).splitlines()
    for wanted in (
        "ListenAddress 198.18.9.12:2222",
        "PermitRootLogin prohibit-password",
        "PasswordAuthentication no",
        "KbdInteractiveAuthentication no",
        "UsePAM no",
        f"AuthorizedKeysFile {the_lab.authorized_keys(host)}",
        f"HostKey {the_lab.host_key(host)}",
        f"PidFile {the_lab.host_dir(host) / 'sshd.pid'}",
    ):
        assert wanted in lines


def test_exec_runs_the_command_in_the_hosts_namespace(tmp_path, monkeypatch):
    the_lab = Lab(read_spec(spec_file(tmp_path)), tmp_path)
    ns = the_lab.namespace(LabHost("us", "ord", "198.18.9.12", 2222))
    monkeypatch.setattr(lab, "_namespaces", lambda: {ns})
    assert the_lab.exec_argv("198.18.9.12", ["ip", "-4", "addr"]) == [
        "ip", "netns", "exec", ns, "ip", "-4", "addr",
    ]  # fmt: skip
    with pytest.raises(LabError, match="198.18.9.13 is not a host of lab t1"):
        the_lab.exec_argv("198.18.9.13", ["true"])
    monkeypatch.setattr(lab, "_namespaces", set)
    with pytest.raises(LabError, match="is not up"):
        the_lab.exec_argv("198.18.9.12", ["true"])


def test_the_cli_passes_everything_after_the_double_dash(tmp_path, monkeypatch):
    path = spec_file(tmp_path)
    seen: list[Any] = []
    monkeypatch.setattr(lab, "_namespaces", lambda: {f"dbfleet-lab-{read_spec(path).lab_id}-11"})
    monkeypatch.setattr(lab.os, "execvp", lambda prog, argv: seen.append(argv))
    monkeypatch.setenv("DBFLEET_HOME", str(tmp_path))
    lab.main(["--spec", str(path), "exec", "198.18.9.11", "--", "sh", "-c", "exit 3", "--x"])
    assert seen[0][-4:] == ["sh", "-c", "exit 3", "--x"]


def test_down_without_a_lab_does_nothing(tmp_path, monkeypatch):
    monkeypatch.setattr(lab, "_run", lambda *a, **k: pytest.fail("nothing should run"))
    assert Lab(read_spec(spec_file(tmp_path)), tmp_path).down() == []


def test_status_says_there_is_no_lab(tmp_path, capsys):
    the_lab = Lab(read_spec(spec_file(tmp_path)), tmp_path)
    assert lab._print_status(the_lab) == 3
    assert capsys.readouterr().out.endswith("198.18.9.0/24): down\n")
