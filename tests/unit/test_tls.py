"""Server certificates (components/tls.py): when a preview plans a renewal, what an
update issues, and how the key travels. Vault is not asked here (see test_tls in
tests/integration for the real CA)."""

from __future__ import annotations

import base64
import time

import pytest

from components import tls
from dbfleet.model.spec import load_fleet

NEWS = {
    "mount": "pki-demo-eu",
    "common_name": "fra-0",
    "ip_sans": ["127.77.12.1", "127.77.20.1"],
    "ttl_s": 3600,
    "renew_fraction": 1 / 3,
}


def issued(at: float, **over) -> dict:
    olds = {**NEWS, **over}
    expiration = at + olds["ttl_s"]
    return {
        **olds,
        "certificate": "CERT",
        "private_key": "KEY",
        "issuing_ca": "CA",
        "serial": "01",
        "issued_at": at,
        "expiration": expiration,
        "renew_after": tls.renew_after(at, expiration, olds["renew_fraction"]),
    }


def test_the_renewal_window_is_the_last_part_of_the_lifetime() -> None:
    assert tls.renew_after(1000, 4000, 1 / 3) == 3000


def test_a_certificate_outside_its_window_plans_nothing() -> None:
    d = tls.ServerCertificateProvider().diff("id", issued(time.time()), dict(NEWS))
    assert d.changes is False


def test_a_certificate_inside_its_window_plans_a_renewal(monkeypatch) -> None:
    olds = issued(time.time() - 3000)  # 3000 s of 3600 gone: inside the last third
    d = tls.ServerCertificateProvider().diff("id", olds, dict(NEWS))
    assert d.changes is True and not d.replaces
    calls = []
    monkeypatch.setattr(
        tls, "_issue", lambda props: calls.append(props) or {**props, "serial": "02"}
    )
    out = tls.ServerCertificateProvider().update("id", olds, dict(NEWS)).outs
    assert out["serial"] == "02" and calls == [NEWS]


@pytest.mark.parametrize(
    ("key", "value"),
    [("ip_sans", ["127.77.12.1"]), ("common_name", "fra-1"), ("mount", "pki-demo-us")],
)
def test_new_names_or_another_ca_mean_a_new_certificate(monkeypatch, key, value) -> None:
    olds = issued(time.time())
    news = {**NEWS, key: value}
    assert tls.ServerCertificateProvider().diff("id", olds, news).changes is True
    monkeypatch.setattr(tls, "_issue", lambda props: {**props, "serial": "03"})
    assert tls.ServerCertificateProvider().update("id", olds, news).outs["serial"] == "03"


def test_a_wider_window_keeps_the_certificate_and_moves_the_renewal(monkeypatch) -> None:
    now = time.time()
    olds = issued(now)
    news = {**NEWS, "renew_fraction": 0.5}
    assert tls.ServerCertificateProvider().diff("id", olds, news).changes is True
    monkeypatch.setattr(tls, "_issue", lambda props: pytest.fail("issued a new certificate"))
    out = tls.ServerCertificateProvider().update("id", olds, news).outs
    assert out["serial"] == "01" and out["private_key"] == "KEY"
    assert out["renew_after"] == pytest.approx(now + 1800)


def test_pem_travels_as_one_printable_line() -> None:
    files = tls.TlsFiles("-----BEGIN CERTIFICATE-----\nA\n-----END CERTIFICATE-----", "K", "CA\n")
    ca = files.environment()["TLS_CA"]
    assert "\n" not in ca and base64.b64decode(ca) == b"CA\n"


def load_fleet_text(text: str, tmp_path):
    path = tmp_path / "fleet.yaml"
    path.write_text(text)
    return load_fleet(path)


def test_the_fleet_file_sets_lifetime_and_window(tmp_path) -> None:
    base = "groups:\n  eu: {zone: EU, primary: fra, regions: {fra: {nodes: 1}}}\n"
    spec = load_fleet_text("tls: {cert_ttl_s: 600, renew_fraction: 0.5}\n" + base, tmp_path)
    assert (spec.tls.cert_ttl_s, spec.tls.renew_fraction) == (600, 0.5)
    default = load_fleet_text(base, tmp_path)
    assert default.tls.cert_ttl_s == 90 * 86400 and default.tls.renew_fraction == pytest.approx(
        1 / 3
    )
    with pytest.raises(Exception, match="cert_ttl_s"):
        load_fleet_text("tls: {cert_ttl_s: 10}\n" + base, tmp_path)


def test_status_shows_days_to_expiry_and_an_expired_certificate_degrades_the_group() -> None:
    from dbfleet.ops import status

    days = status.certificate_days({"fra-0": 86400 * 10.5, "lhr-pooler": 0, "x": None}, now=0)
    assert days == {"fra-0": 10.5, "lhr-pooler": 0.0}
    assert status.certificate_days({"arn-0": 900}, now=0)["arn-0"] > 0  # minutes, not expired
    g = status.GroupStatus("eu", certificates=days)
    assert "expired certificate: lhr-pooler (run dbfleet up eu)" in g.problems
    assert "certificates expire in: fra-0 10.5 d, lhr-pooler 0.0 d" in status.render([g])
    assert status.GroupStatus("eu", certificates={"fra-0": 89.9}).problems == []
