"""components.scram: PostgreSQL's verifier format, RFC 7677's test vector, and the
program interface pg_primary.sh uses (password in the environment, verifier on stdin)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import io
import subprocess
import sys
from pathlib import Path

import pytest

from components import scram

# Made by PostgreSQL 15 itself (`SET password_encryption = 'scram-sha-256';
# CREATE ROLE r PASSWORD 'pencil'`, then pg_authid.rolpassword): an independent
# implementation's output for a known password and the salt it chose.
PG_PENCIL = (
    "SCRAM-SHA-256$4096:F3tl4Ta0o+emEjlOGxAE4Q==$"
    "sk6OW35fh8ONFZNDRI0O603tC5Z+6HloILMasxNZ66A=:lUzoKdIXOwIbyw/qXxYU/+WA7NY9YMr8SxxpJNITGXY="
)
PG_PASSPHRASE = (
    "SCRAM-SHA-256$4096:gRyOc6x5QyQvFV6PcI8YHg==$"
    "x1mWNX8EnCveB25uTWjicqbixVQ481/4pR8N8HS8WbU=:QupL1r2gZomPscnn2iGuoCkiTt/qRKa+WOg8NBm8eOo="
)

# RFC 7677, section 3: one SCRAM-SHA-256 exchange for user "user", password "pencil".
RFC_SALT = base64.b64decode("W22ZaJ0SNY7soEsUEjb6gQ==")
RFC_CLIENT_FIRST_BARE = "n=user,r=rOprNGfwEbeRWgbNEkqO"
RFC_SERVER_FIRST = (
    "r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096"
)
RFC_CLIENT_FINAL_NO_PROOF = "c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0"
RFC_PROOF = base64.b64decode("dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=")
RFC_SERVER_SIGNATURE = base64.b64decode("6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=")
AUTH_MESSAGE = f"{RFC_CLIENT_FIRST_BARE},{RFC_SERVER_FIRST},{RFC_CLIENT_FINAL_NO_PROOF}".encode()


def _hmac(key: bytes, msg: bytes) -> bytes:
    return hmac.new(key, msg, hashlib.sha256).digest()


def _xor(a: bytes, b: bytes) -> bytes:
    return bytes(x ^ y for x, y in zip(a, b, strict=True))


def client_proof(password: str, salt: bytes, iterations: int, auth_message: bytes) -> bytes:
    """What a client sends: ClientKey XOR HMAC(StoredKey, AuthMessage) (RFC 5802 §3)."""
    key = scram.client_key(scram.salted_password(password, salt, iterations))
    return _xor(key, _hmac(hashlib.sha256(key).digest(), auth_message))


def server_accepts(verifier: str, proof: bytes, auth_message: bytes) -> bool:
    """The server's check, from the stored verifier alone: H(proof XOR signature) == StoredKey."""
    _, _, stored_key, _ = scram.parse(verifier)
    recovered_client_key = _xor(proof, _hmac(stored_key, auth_message))
    return hmac.compare_digest(hashlib.sha256(recovered_client_key).digest(), stored_key)


@pytest.mark.parametrize(
    ("password", "expected"),
    [("pencil", PG_PENCIL), ("correct horse battery staple!", PG_PASSPHRASE)],
)
def test_verifier_equals_what_postgresql_stores_for_the_same_salt(password, expected):
    salt = base64.b64decode(expected.split("$")[1].split(":")[1])
    assert scram.verifier(password, salt, 4096) == expected


def test_verifier_of_the_rfc_exchange_authenticates_the_rfc_client():
    verifier = scram.verifier("pencil", RFC_SALT, 4096)
    # The client proof computed from the password is the RFC's own ...
    assert client_proof("pencil", RFC_SALT, 4096, AUTH_MESSAGE) == RFC_PROOF
    # ... the server accepts it knowing only the verifier ...
    assert server_accepts(verifier, RFC_PROOF, AUTH_MESSAGE)
    # ... and proves itself with the verifier's ServerKey, as the RFC's server does.
    _, _, _, server_key = scram.parse(verifier)
    assert _hmac(server_key, AUTH_MESSAGE) == RFC_SERVER_SIGNATURE


def test_a_new_verifier_authenticates_its_password_and_not_another():
    verifier = scram.new_verifier("s3cret-Pass")
    iterations, salt, _, _ = scram.parse(verifier)
    assert (iterations, len(salt)) == (scram.ITERATIONS, scram.SALT_BYTES)
    good = client_proof("s3cret-Pass", salt, iterations, AUTH_MESSAGE)
    bad = client_proof("s3cret-pass", salt, iterations, AUTH_MESSAGE)
    assert server_accepts(verifier, good, AUTH_MESSAGE)
    assert not server_accepts(verifier, bad, AUTH_MESSAGE)


def test_new_verifiers_use_fresh_salts():
    assert scram.new_verifier("x") != scram.new_verifier("x")


def test_matches_accepts_postgresql_verifier_of_the_password_only():
    assert scram.matches("pencil", PG_PENCIL)
    assert not scram.matches("Pencil", PG_PENCIL)


@pytest.mark.parametrize(
    "stored",
    [
        "",
        "md5" + "0" * 32,
        "SCRAM-SHA-1$4096:F3tl4Ta0o+emEjlOGxAE4Q==$a:b",
        "SCRAM-SHA-256$4096:not base64!$a:b",
        "SCRAM-SHA-256$x:F3tl4Ta0o+emEjlOGxAE4Q==$a:b",
        "SCRAM-SHA-256$4096:F3tl4Ta0o+emEjlOGxAE4Q==",
    ],
)
def test_anything_but_a_matching_verifier_does_not_match(stored):
    assert not scram.matches("pencil", stored)


def test_main_prints_nothing_when_the_stored_verifier_matches(monkeypatch, capsys):
    monkeypatch.setenv(scram.PASSWORD_ENV, "pencil")
    monkeypatch.setattr(sys, "stdin", io.StringIO(PG_PENCIL + "\n"))
    assert scram.main() == 0
    assert capsys.readouterr().out == ""


def test_main_prints_a_verifier_for_the_new_password(monkeypatch, capsys):
    monkeypatch.setenv(scram.PASSWORD_ENV, "rotated")
    monkeypatch.setattr(sys, "stdin", io.StringIO(PG_PENCIL))
    assert scram.main() == 0
    printed = capsys.readouterr().out.strip()
    assert scram.matches("rotated", printed)
    assert "rotated" not in printed


def test_main_without_password_fails(monkeypatch, capsys):
    monkeypatch.delenv(scram.PASSWORD_ENV, raising=False)
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))
    assert scram.main() == 2
    assert scram.PASSWORD_ENV in capsys.readouterr().err


def test_runs_as_the_host_runs_it_program_text_with_password_in_environment():
    # pg_primary.sh runs the module's text with `python3 -I -c`: isolated mode,
    # no checkout on the host's sys.path, the password only in the environment.
    text = Path(scram.__file__).read_text()
    proc = subprocess.run(
        [sys.executable, "-I", "-c", text],
        input="",
        env={scram.PASSWORD_ENV: "pencil"},
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
    )
    assert scram.matches("pencil", proc.stdout.strip())
