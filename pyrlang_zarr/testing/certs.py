"""Certificates for TLS distribution in tests, examples and docker-compose: a CA, node and
client certificates, and the ``ssl_dist_optfile`` an ``erl -proto_dist inet_tls`` node reads.

Needs Python's ``cryptography`` (the test extra). Keys are ECDSA P-256 (fast to make, and
every OTP since 20 speaks the ECDHE-ECDSA suites); every file is written owner-only.

    python -m pyrlang_zarr.testing.certs DIR host1 host2 host3   # what docker-compose uses

writes ``DIR/ca.pem``, ``DIR/HOST.pem`` + ``DIR/HOST.key`` + ``DIR/HOST.optfile`` for each
host (its certificate names the host, as OTP's client checks the node's host part), and
``DIR/client.pem`` + ``DIR/client.key`` + ``DIR/client.optfile`` for a Python client.
"""

from __future__ import annotations

import argparse
import datetime as dt
import ipaddress
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from cryptography import x509

__all__ = ["CA", "Issued", "main", "write_optfile"]

_DAY = dt.timedelta(days=1)


def _write(path: Path, data: bytes, mode: int = 0o600) -> None:
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


@dataclass(frozen=True)
class Issued:
    """A certificate and its key, as files (PEM)."""

    certfile: Path
    keyfile: Path


class CA:
    """A certificate authority whose key lives in memory; its certificate is ``cafile``.

    ``CA(directory)`` makes a new one and writes ``directory/ca.pem`` (``name`` is its file
    stem and common name). :meth:`issue` makes certificates it signs.
    """

    def __init__(self, directory: str | os.PathLike[str], name: str = "ca") -> None:
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self._key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"pyrlang_zarr test {name}")])
        now = dt.datetime.now(dt.UTC)
        self._cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self._key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _DAY)
            .not_valid_after(now + 3650 * _DAY)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .add_extension(
                x509.SubjectKeyIdentifier.from_public_key(self._key.public_key()), critical=False
            )
            .sign(self._key, hashes.SHA256())
        )
        self.cafile = self.dir / f"{name}.pem"
        _write(self.cafile, self._cert.public_bytes(serialization.Encoding.PEM), 0o644)

    def issue(
        self,
        name: str,
        *,
        hosts: Sequence[str] = (),
        not_before: dt.datetime | None = None,
        not_after: dt.datetime | None = None,
    ) -> Issued:
        """A certificate for ``name`` (its common name and file stem) with ``hosts`` (DNS
        names or IP addresses) as its subjectAltName, good for TLS servers and clients.
        ``not_before``/``not_after`` default to yesterday and in a year: pass a
        ``not_after`` in the past for an expired certificate."""
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        start = not_before if not_before is not None else now - _DAY
        end = not_after if not_after is not None else now + 365 * _DAY
        if start >= end:
            start = end - 2 * _DAY
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
            .issuer_name(self._cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(
                x509.ExtendedKeyUsage(
                    [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
                ),
                critical=False,
            )
            .add_extension(
                x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()),
                critical=False,
            )
        )
        alt_names = _alt_names(hosts)
        if alt_names:
            builder = builder.add_extension(x509.SubjectAlternativeName(alt_names), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        issued = Issued(self.dir / f"{name}.pem", self.dir / f"{name}.key")
        _write(issued.certfile, cert.public_bytes(serialization.Encoding.PEM), 0o644)
        _write(
            issued.keyfile,
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )
        return issued


def _alt_names(hosts: Sequence[str]) -> list[x509.GeneralName]:
    from cryptography import x509

    out: list[x509.GeneralName] = []
    for host in dict.fromkeys(hosts):
        try:
            out.append(x509.IPAddress(ipaddress.ip_address(host)))
        except ValueError:
            out.append(x509.DNSName(host))
    return out


def _erlang_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def optfile_text(
    issued: Issued, cafile: str | os.PathLike[str], *, server: bool = True, client: bool = True
) -> str:
    """The ``ssl_dist_optfile`` of a node holding ``issued``: verify the peer both ways
    against ``cafile``, and (as server) refuse a client without a certificate."""
    common = [
        ("certfile", _erlang_string(str(issued.certfile))),
        ("keyfile", _erlang_string(str(issued.keyfile))),
        ("cacertfile", _erlang_string(str(cafile))),
        ("verify", "verify_peer"),
        ("secure_renegotiate", "true"),
    ]
    sections: list[tuple[str, list[tuple[str, Any]]]] = []
    if server:
        sections.append(("server", [*common, ("fail_if_no_peer_cert", "true")]))
    if client:
        sections.append(("client", common))
    body = ",\n ".join(
        "{" + side + ", [" + ",\n    ".join(f"{{{k}, {v}}}" for k, v in opts) + "]}"
        for side, opts in sections
    )
    return f"[{body}].\n"


def write_optfile(
    path: str | os.PathLike[str],
    issued: Issued,
    cafile: str | os.PathLike[str],
    *,
    server: bool = True,
    client: bool = True,
) -> Path:
    """Write :func:`optfile_text` to ``path`` (owner-only) and return it."""
    out = Path(path)
    _write(out, optfile_text(issued, cafile, server=server, client=client).encode())
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pyrlang_zarr.testing.certs",
        description="A test CA, a certificate and an ssl_dist_optfile per host, and a client's.",
    )
    parser.add_argument("dir", help="where to write them (created)")
    parser.add_argument("hosts", nargs="+", help="host names; each node's certificate names one")
    parser.add_argument(
        "--readable",
        action="store_true",
        help="make keys and optfiles readable by all (containers running as another user)",
    )
    args = parser.parse_args(argv)
    out = Path(args.dir).absolute()  # optfiles name absolute paths: erl may run elsewhere
    ca = CA(out)
    made = []
    for host in [*args.hosts, "client"]:
        issued = ca.issue(host, hosts=[host] if host != "client" else [])
        optfile = write_optfile(out / f"{host}.optfile", issued, ca.cafile, server=host != "client")
        made += [issued.certfile, issued.keyfile, optfile]
    if args.readable:
        for path in made:
            path.chmod(0o644)
    print(f"CA {ca.cafile}; certificates, keys and optfiles for {', '.join(args.hosts)}, client")
    return 0


if __name__ == "__main__":
    sys.exit(main())
