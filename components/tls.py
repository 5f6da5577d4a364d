"""ServerCertificate: a server's TLS certificate from its group's CA in Vault (PKI).

Vault makes the key and signs the certificate in one call (`<mount>/issue/server`); the
key reaches this process in memory only, is kept in the stack as a Pulumi secret
(encrypted by the group's secrets provider) and goes to the host through a host
script's secret environment, never on a command line or into a plaintext file other
than the 0600 key file on the server itself.

Renewal: the certificate records when it expires and when its renewal window opens
(the last `renew_fraction` of its lifetime). Every preview and `up` diffs it: inside
the window — or when its names or CA changed — it plans an update, which issues a new
certificate; the host script then writes the files and reloads the server (no restart).
Nothing is revoked on delete: the CA stores no issued certificate (`no_store`) and a
replaced one expires by itself.
"""

from __future__ import annotations

import base64
import time
from dataclasses import dataclass
from typing import Any

import pulumi
from pulumi.dynamic import CreateResult, DiffResult, ResourceProvider, UpdateResult

#: inputs whose change means a new certificate
_REISSUE_ON = ("mount", "common_name", "ip_sans", "ttl_s")


#: what the engine fills in once a certificate is issued (unknown in a preview)
CERTIFICATE_OUTPUTS: dict[str, None] = dict.fromkeys(
    ("certificate", "private_key", "issuing_ca", "serial", "issued_at", "expiration", "renew_after")
)


def renew_after(issued_at: float, expiration: float, renew_fraction: float) -> float:
    """When the renewal window of a certificate valid from `issued_at` to `expiration` opens."""
    return expiration - (expiration - issued_at) * renew_fraction


def _issue(props: dict[str, Any]) -> dict[str, Any]:
    from dbfleet import vault

    now = time.time()
    got = vault.issue_certificate(
        vault.client_from_env(),
        props["mount"],
        props["common_name"],
        props["ip_sans"],
        int(props["ttl_s"]),
    )
    expiration = float(got["expiration"]) or now + int(props["ttl_s"])
    return {
        **props,
        "certificate": got["certificate"],
        "private_key": got["private_key"],
        "issuing_ca": got["ca"],
        "serial": got["serial"],
        "issued_at": now,
        "expiration": expiration,
        "renew_after": renew_after(now, expiration, float(props["renew_fraction"])),
    }


def _needs_new_certificate(olds: dict[str, Any], news: dict[str, Any]) -> bool:
    """Other names, CA or lifetime, or the renewal window is open: issue again."""
    return any(olds.get(k) != news.get(k) for k in _REISSUE_ON) or time.time() >= float(
        olds.get("renew_after") or 0
    )


class ServerCertificateProvider(ResourceProvider):
    def create(self, props: dict[str, Any]) -> CreateResult:
        out = _issue(props)
        return CreateResult(id_=f"{props['mount']}:{out['serial']}", outs=out)

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        changes = _needs_new_certificate(olds, news) or olds.get("renew_fraction") != news.get(
            "renew_fraction"
        )
        return DiffResult(changes=changes, replaces=[], stables=[], delete_before_replace=False)

    def update(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        if _needs_new_certificate(olds, news):
            return UpdateResult(outs=_issue(news))
        # Only the window moved: the same certificate, its renewal recomputed.
        keep = ("certificate", "private_key", "issuing_ca", "serial", "issued_at", "expiration")
        return UpdateResult(
            outs={
                **news,
                **{k: olds[k] for k in keep},
                "renew_after": renew_after(
                    float(olds["issued_at"]),
                    float(olds["expiration"]),
                    float(news["renew_fraction"]),
                ),
            }
        )

    def delete(self, _id: str, _props: dict[str, Any]) -> None:
        return None


@dataclass(frozen=True)
class ServerCertificateArgs:
    mount: str
    common_name: str
    ip_sans: tuple[str, ...]
    ttl_s: int
    renew_fraction: float

    def __post_init__(self) -> None:
        if not self.ip_sans:
            raise ValueError(f"certificate {self.common_name}: no address to issue it for")
        if not 0 < self.renew_fraction < 1:
            raise ValueError(f"renew_fraction {self.renew_fraction} is not between 0 and 1")


class ServerCertificate(pulumi.dynamic.Resource):
    certificate: pulumi.Output[str]
    private_key: pulumi.Output[str]
    issuing_ca: pulumi.Output[str]
    expiration: pulumi.Output[float]

    def __init__(
        self, name: str, args: ServerCertificateArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__(
            ServerCertificateProvider(),
            name,
            {
                "mount": args.mount,
                "common_name": args.common_name,
                # sorted: the same addresses in another order are the same certificate
                "ip_sans": sorted(set(args.ip_sans)),
                "ttl_s": args.ttl_s,
                "renew_fraction": args.renew_fraction,
                **CERTIFICATE_OUTPUTS,
            },
            pulumi.ResourceOptions.merge(
                pulumi.ResourceOptions(additional_secret_outputs=["private_key"]), opts
            ),
        )


def _b64(pem: str | None) -> str:
    """PEM as one printable line (host scripts refuse secrets with newlines); "" for none."""
    return base64.b64encode(pem.strip().encode() + b"\n").decode() if pem else ""


def ca_environment(ca: str) -> dict[str, str]:
    """The group's CA for a host script that only verifies servers (`TLS_CA`)."""
    return {"TLS_CA": _b64(ca)}


@dataclass(frozen=True)
class TlsFiles:
    """What a host script needs to write a server's TLS files (lib.sh `write_tls`):
    the CA in the public environment (it only changes with the CA), the certificate and
    key in the secret one (the certificate too, so a renewal is one secret change and
    previews do not print PEM)."""

    certificate: pulumi.Input[str]
    private_key: pulumi.Input[str]
    ca: str

    @classmethod
    def of(cls, cert: ServerCertificate, ca: str) -> TlsFiles:
        return cls(cert.certificate, cert.private_key, ca)

    def environment(self) -> dict[str, str]:
        return ca_environment(self.ca)

    def secret_environment(self) -> pulumi.Output[dict[str, str]]:
        return pulumi.Output.secret(
            pulumi.Output.all(self.certificate, self.private_key).apply(
                lambda cp: {"TLS_CERT": _b64(cp[0]), "TLS_KEY": _b64(cp[1])}
            )
        )
