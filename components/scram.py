"""SCRAM-SHA-256 password verifiers in PostgreSQL's format, computed client-side.

pg_primary.sh sets role passwords as verifiers
(`SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`, RFC 5802/7677 keys,
base64), never as clear text, so no password reaches the server, its logs or
pg_stat_activity. Before setting one it asks whether the stored verifier already
matches the password, so a second run changes nothing.

Run on the host as a program (`python3 -I -c "<this file>"`, or
`python -m components.scram` from a checkout): the password is read from the
environment variable DBFLEET_PW — never from the command line — and the stored
verifier (possibly empty) from standard input. It prints nothing when the
stored verifier matches, else a fresh verifier with a random salt.

Passwords are printable ASCII (the host scripts refuse anything else), for which
PostgreSQL's SASLprep normalisation is the identity: this computes exactly what
the server would. Standard library only: the host has python3 and nothing else.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import sys

MECHANISM = "SCRAM-SHA-256"
# PostgreSQL's default (scram_iterations in PostgreSQL 16+; fixed in 15).
ITERATIONS = 4096
SALT_BYTES = 16
PASSWORD_ENV = "DBFLEET_PW"


def _hmac(key: bytes, message: bytes) -> bytes:
    return hmac.new(key, message, hashlib.sha256).digest()


def salted_password(password: str, salt: bytes, iterations: int) -> bytes:
    """RFC 5802 SaltedPassword := Hi(Normalize(password), salt, i)."""
    return hashlib.pbkdf2_hmac("sha256", password.encode("ascii"), salt, iterations)


def client_key(salted: bytes) -> bytes:
    return _hmac(salted, b"Client Key")


def keys(password: str, salt: bytes, iterations: int) -> tuple[bytes, bytes]:
    """(StoredKey, ServerKey) for a password: what a verifier stores."""
    salted = salted_password(password, salt, iterations)
    return hashlib.sha256(client_key(salted)).digest(), _hmac(salted, b"Server Key")


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def verifier(password: str, salt: bytes, iterations: int = ITERATIONS) -> str:
    """The verifier PostgreSQL stores in pg_authid.rolpassword for this password and salt."""
    stored_key, server_key = keys(password, salt, iterations)
    return f"{MECHANISM}${iterations}:{_b64(salt)}${_b64(stored_key)}:{_b64(server_key)}"


def new_verifier(password: str) -> str:
    """A verifier with a fresh random salt."""
    return verifier(password, os.urandom(SALT_BYTES))


def parse(stored: str) -> tuple[int, bytes, bytes, bytes]:
    """(iterations, salt, StoredKey, ServerKey) of a verifier; ValueError if it is not one."""
    try:
        mechanism, params, key_pair = stored.split("$")
        iterations, salt = params.split(":")
        stored_key, server_key = key_pair.split(":")
        if mechanism != MECHANISM or int(iterations) < 1:
            raise ValueError
        return (
            int(iterations),
            base64.b64decode(salt, validate=True),
            base64.b64decode(stored_key, validate=True),
            base64.b64decode(server_key, validate=True),
        )
    except ValueError:  # binascii.Error is a ValueError too
        raise ValueError("not a SCRAM-SHA-256 verifier") from None


def matches(password: str, stored: str) -> bool:
    """The stored verifier (an MD5 hash, empty, or anything else: False) is for this password."""
    try:
        iterations, salt, stored_key, server_key = parse(stored)
    except ValueError:
        return False
    want_stored, want_server = keys(password, salt, iterations)
    return hmac.compare_digest(want_stored, stored_key) and hmac.compare_digest(
        want_server, server_key
    )


def main() -> int:
    password = os.environ.get(PASSWORD_ENV)
    if password is None:
        print(f"scram: {PASSWORD_ENV} is not set", file=sys.stderr)
        return 2
    if matches(password, sys.stdin.read().strip()):
        return 0
    print(new_verifier(password))
    return 0


if __name__ == "__main__":
    sys.exit(main())
