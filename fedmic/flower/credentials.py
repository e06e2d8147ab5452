"""Test-grade credentials for a Flower deployment: a certificate authority, the SuperLink's TLS
certificate signed by it, and one EC key pair per SuperNode (OpenSSH format, the format Flower's
`flwr supernode register` and `flower-supernode --auth-supernode-private-key` read).

For tests and trials on one machine. A real federation takes its certificates from the
institutions' own PKI and each site makes its own key pair (docs/deploy.md)."""
from __future__ import annotations

import datetime as dt
import ipaddress
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from ..utils import atomic_write_bytes

CURVE = ec.SECP384R1  # P-384: a NIST curve, which SuperNode authentication requires


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def _pem_key(key: ec.EllipticCurvePrivateKey, fmt=serialization.PrivateFormat.PKCS8) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, fmt, serialization.NoEncryption())


def make_tls(folder: str | Path, hosts: tuple[str, ...] = ("127.0.0.1", "localhost"), days: int = 30) -> dict[str, Path]:
    """Write ca.crt, server.pem and server.key into `folder`; the server certificate is valid
    for `hosts` (IP addresses or DNS names: the addresses SuperNodes dial)."""
    folder = Path(folder)
    now = dt.datetime.now(dt.timezone.utc)
    ca_key = ec.generate_private_key(CURVE())
    ca = (x509.CertificateBuilder().subject_name(_name("fedmic test CA")).issuer_name(_name("fedmic test CA"))
          .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
          .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
          .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
          .sign(ca_key, hashes.SHA256()))
    names = []
    for h in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            names.append(x509.DNSName(h))
    key = ec.generate_private_key(CURVE())
    cert = (x509.CertificateBuilder().subject_name(_name(hosts[0])).issuer_name(ca.subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
            .add_extension(x509.SubjectAlternativeName(names), critical=False)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .sign(ca_key, hashes.SHA256()))
    out = {"ca": folder / "ca.crt", "cert": folder / "server.pem", "key": folder / "server.key"}
    atomic_write_bytes(out["ca"], ca.public_bytes(serialization.Encoding.PEM))
    atomic_write_bytes(out["cert"], cert.public_bytes(serialization.Encoding.PEM))
    atomic_write_bytes(out["key"], _pem_key(key))
    return out


def make_node_key(folder: str | Path, name: str) -> tuple[Path, Path]:
    """Write `name` (private key) and `name.pub` (public key) into `folder`, both OpenSSH."""
    folder = Path(folder)
    key = ec.generate_private_key(CURVE())
    private = folder / name
    public = folder / f"{name}.pub"
    atomic_write_bytes(private, _pem_key(key, serialization.PrivateFormat.OpenSSH))
    private.chmod(0o600)
    atomic_write_bytes(public, key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                              serialization.PublicFormat.OpenSSH) + b"\n")
    return private, public
