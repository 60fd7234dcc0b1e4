"""`telecare broker certs OUT_DIR`: a local certificate authority and a broker server
certificate for a test or pilot setup (the same files and choices as scripts/make-certs).

ca.crt is what devices trust; the broker's TLS listener presents server.crt with server.key.
An existing CA in OUT_DIR is kept, so devices that trust it keep working; the server
certificate is issued anew each time. RSA 2048, the key type every device TLS stack verifies;
the CA lasts 10 years, the server certificate 825 days (the longest that clients following the
CA/Browser rules accept). Production uses a certificate from the operator's own CA."""

from __future__ import annotations

import ipaddress
import os
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_DAYS = 3650
SERVER_DAYS = 825
ALWAYS_NAMED = ("localhost", "127.0.0.1", "mosquitto")


@dataclass(frozen=True)
class Issued:
    ca: Path
    server: Path
    ca_created: bool
    names: tuple[str, ...]


def make_certs(out_dir: Path, names: tuple[str, ...], now: datetime) -> Issued:
    """ca.crt and ca.key (kept if both exist), server.crt and server.key in `out_dir`."""
    out_dir.mkdir(parents=True, exist_ok=True)
    ca_crt, ca_key_path = out_dir / "ca.crt", out_dir / "ca.key"
    created = not (ca_crt.exists() and ca_key_path.exists())
    if created:
        ca_key = _new_key()
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Telecare local CA")])
        ca = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
              .public_key(ca_key.public_key()).serial_number(x509.random_serial_number())
              .not_valid_before(now - timedelta(minutes=5))
              .not_valid_after(now + timedelta(days=CA_DAYS))
              .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
              .add_extension(_key_usage(cert_sign=True), critical=True)
              .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()),
                             critical=False)
              .sign(ca_key, hashes.SHA256()))
        _write(ca_key_path, _private_bytes(ca_key), 0o600)
        _write(ca_crt, ca.public_bytes(serialization.Encoding.PEM), 0o644)
    else:
        loaded = serialization.load_pem_private_key(ca_key_path.read_bytes(), password=None)
        if not isinstance(loaded, rsa.RSAPrivateKey):
            raise ValueError(f"{ca_key_path} is not an RSA key")
        ca_key = loaded
        ca = x509.load_pem_x509_certificate(ca_crt.read_bytes())

    every = tuple(dict.fromkeys((*ALWAYS_NAMED, *names)))
    server_key = _new_key()
    server = (x509.CertificateBuilder()
              .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "mosquitto")]))
              .issuer_name(ca.subject).public_key(server_key.public_key())
              .serial_number(x509.random_serial_number())
              .not_valid_before(now - timedelta(minutes=5))
              .not_valid_after(now + timedelta(days=SERVER_DAYS))
              .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
              .add_extension(_key_usage(cert_sign=False), critical=True)
              .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]),
                             critical=False)
              .add_extension(x509.SubjectAlternativeName([_general_name(n) for n in every]),
                             critical=False)
              .add_extension(x509.SubjectKeyIdentifier.from_public_key(server_key.public_key()),
                             critical=False)
              .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()),
                             critical=False)
              .sign(ca_key, hashes.SHA256()))
    _write(out_dir / "server.key", _private_bytes(server_key), 0o600)
    _write(out_dir / "server.crt", server.public_bytes(serialization.Encoding.PEM), 0o644)
    return Issued(ca=ca_crt, server=out_dir / "server.crt", ca_created=created, names=every)


def _new_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(digital_signature=not cert_sign, content_commitment=False,
                         key_encipherment=not cert_sign, data_encipherment=False,
                         key_agreement=False, key_cert_sign=cert_sign, crl_sign=cert_sign,
                         encipher_only=False, decipher_only=False)


def _general_name(name: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(name))
    except ValueError:
        return x509.DNSName(name)


def _private_bytes(key: rsa.RSAPrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _write(path: Path, data: bytes, mode: int) -> None:
    """Created with its final mode (a key is never readable by others, not even briefly)."""
    temporary = path.with_name(f".{path.name}.tmp")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
    with os.fdopen(fd, "wb") as file:
        file.write(data)
    os.chmod(temporary, mode)
    os.replace(temporary, path)
