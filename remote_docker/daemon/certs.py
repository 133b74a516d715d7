"""Make and check the certificates a mutual-TLS Docker daemon needs.

The layout is docker:dind's ``DOCKER_TLS_CERTDIR``::

    OUT/ca/{cert.pem,key.pem}          the CA; its key never leaves this folder
    OUT/server/{ca.pem,cert.pem,key.pem}
    OUT/client/{ca.pem,cert.pem,key.pem}   usable as DOCKER_CERT_PATH

Extra server certificates for other daemon hosts live in ``OUT/<server-name>/``.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

KeyType = Literal["ec", "rsa"]
DEFAULT_SANS = ("docker", "localhost", "127.0.0.1", "::1")
DEFAULT_DAYS = 825
MIN_RSA_BITS = 3072
EXPIRY_WARNING_DAYS = 30
_BACKDATE = dt.timedelta(minutes=5)  # tolerate small clock skew between hosts


class CertificateError(Exception):
    """A certificate folder can't be used as asked; the message says what and how to fix it."""


# --------------------------------------------------------------------------- writing


def _new_key(key_type: KeyType, rsa_bits: int):
    if key_type == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=rsa_bits)
    return ec.generate_private_key(ec.SECP256R1())


def _key_pem(key) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def _cert_pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def write_atomically(path: Path, data: bytes, mode: int) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder, created with ``mode``.

    The file never exists with looser permissions, and a crash leaves the old file or none; its folder
    is private (0700) whatever the umask.
    """
    private_folder(path.parent)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def private_folder(folder: Path) -> None:
    """``folder`` exists with mode 0700 (mkdir's mode is filtered by the umask: set it after)."""
    folder.mkdir(parents=True, exist_ok=True)
    if folder.stat().st_mode & 0o777 != 0o700:
        folder.chmod(0o700)


def _key_mode_problem(path: Path, force: bool) -> str | None:
    """A kept key readable by others: fixed with ``force``, else one line saying so."""
    mode = path.stat().st_mode & 0o777
    if mode & 0o077 == 0:
        return None
    if force:
        path.chmod(0o600)
        return f"{path} had mode {mode:o}; set to 600"
    return f"{path} has mode {mode:o}: others can read this private key; chmod 600 {path} (or re-run with --force)"


def parse_san(value: str) -> x509.GeneralName:
    """A ``--san`` value as a DNS name or an IP address."""
    value = value.strip()
    if not value:
        raise CertificateError("empty --san value; give a DNS name or an IP address")
    try:
        return x509.IPAddress(ipaddress.ip_address(value))
    except ValueError:
        return x509.DNSName(value)


def _builder(subject: str, issuer: x509.Name, public_key, days: int) -> x509.CertificateBuilder:
    now = dt.datetime.now(dt.timezone.utc)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _BACKDATE)
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(public_key), critical=False)
    )


def _make_ca(days: int, key_type: KeyType, rsa_bits: int) -> tuple[x509.Certificate, object]:
    key = _new_key(key_type, rsa_bits)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "remote-docker CA")])
    cert = (
        _builder("remote-docker CA", name, key.public_key(), days)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=False, content_commitment=False, key_encipherment=False,
                data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .sign(key, hashes.SHA256())
    )
    return cert, key


def _make_leaf(
    common_name: str,
    usage: x509.ObjectIdentifier,
    sans: Sequence[x509.GeneralName],
    ca_cert: x509.Certificate,
    ca_key,
    days: int,
    key_type: KeyType,
    rsa_bits: int,
) -> tuple[x509.Certificate, object]:
    key = _new_key(key_type, rsa_bits)
    builder = (
        _builder(common_name, ca_cert.subject, key.public_key(), days)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True, content_commitment=False,
                key_encipherment=key_type == "rsa", data_encipherment=False, key_agreement=False,
                key_cert_sign=False, crl_sign=False, encipher_only=False, decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_cert.public_key()), critical=False
        )
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName(list(sans)), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


@dataclass
class GenerateResult:
    written: list[Path]
    kept: list[Path]
    warnings: list[str] = field(default_factory=list)


def _load_ca(ca_dir: Path) -> tuple[x509.Certificate, object] | None:
    cert_path, key_path = ca_dir / "cert.pem", ca_dir / "key.pem"
    if not cert_path.exists() and not key_path.exists():
        return None
    if not (cert_path.exists() and key_path.exists()):
        missing = key_path if cert_path.exists() else cert_path
        raise CertificateError(
            f"{missing} is missing but its pair exists; restore it, or move {ca_dir} away to make a new CA"
        )
    cert = _read_cert(cert_path)
    key = _read_key(key_path)
    if not _same_public_key(cert, key):
        raise CertificateError(f"{key_path} does not match {cert_path}; restore the CA's own key")
    return cert, key


def generate(
    out: Path,
    *,
    sans: Iterable[str] = DEFAULT_SANS,
    days: int = DEFAULT_DAYS,
    key_type: KeyType = "ec",
    rsa_bits: int = MIN_RSA_BITS,
    server_name: str = "server",
    client_name: str = "client",
    with_client: bool = True,
    force: bool = False,
) -> GenerateResult:
    """Make (or reuse) the CA and issue a server and a client certificate under ``out``.

    Leaf folders that already hold a certificate are kept unless ``force``; the CA is always
    reused when present, so re-running only fills in what is missing.
    """
    if days < 1:
        raise CertificateError(f"--days {days} must be at least 1")
    for label, name in (("--server-name", server_name), ("--client-name", client_name)):
        if not name or "/" in name or name in (".", "..", "ca"):
            raise CertificateError(f"{label} {name!r} is not a plain folder name; use e.g. 'host2'")
    if with_client and server_name == client_name:
        raise CertificateError(f"--server-name and --client-name are both {server_name!r}; pick two names")
    general_names = [parse_san(s) for s in sans]
    if not general_names:
        raise CertificateError("no --san given; the server certificate needs at least one name or IP")
    if key_type not in ("ec", "rsa"):
        raise CertificateError(f"--key-type {key_type!r} is unknown; use 'ec' or 'rsa'")
    if key_type == "rsa" and rsa_bits < MIN_RSA_BITS:
        raise CertificateError(f"--rsa-bits {rsa_bits} is too small; use {MIN_RSA_BITS} or more")

    result = GenerateResult(written=[], kept=[])
    private_folder(out)
    ca_dir = out / "ca"
    loaded = _load_ca(ca_dir)
    if loaded is None:
        ca_cert, ca_key = _make_ca(days, key_type, rsa_bits)
        write_atomically(ca_dir / "key.pem", _key_pem(ca_key), 0o600)
        write_atomically(ca_dir / "cert.pem", _cert_pem(ca_cert), 0o644)
        result.written += [ca_dir / "cert.pem", ca_dir / "key.pem"]
    else:
        ca_cert, ca_key = loaded
        result.kept.append(ca_dir / "cert.pem")
        private_folder(ca_dir)
        if problem := _key_mode_problem(ca_dir / "key.pem", force):
            result.warnings.append(problem)

    leaves = [(server_name, ExtendedKeyUsageOID.SERVER_AUTH, general_names)]
    if with_client:
        leaves.append((client_name, ExtendedKeyUsageOID.CLIENT_AUTH, []))
    for name, usage, leaf_sans in leaves:
        leaf_dir = out / name
        files = [leaf_dir / "ca.pem", leaf_dir / "cert.pem", leaf_dir / "key.pem"]
        present = [f for f in files if f.exists()]
        if present and not force:
            if len(present) != len(files):
                missing = ", ".join(str(f) for f in files if not f.exists())
                raise CertificateError(
                    f"{leaf_dir} is incomplete ({missing} missing); re-run with --force to re-issue it"
                )
            result.kept.append(leaf_dir / "cert.pem")
            private_folder(leaf_dir)
            if problem := _key_mode_problem(leaf_dir / "key.pem", force):
                result.warnings.append(problem)
            continue
        cert, key = _make_leaf(name, usage, leaf_sans, ca_cert, ca_key, days, key_type, rsa_bits)
        write_atomically(leaf_dir / "key.pem", _key_pem(key), 0o600)
        write_atomically(leaf_dir / "cert.pem", _cert_pem(cert), 0o644)
        write_atomically(leaf_dir / "ca.pem", _cert_pem(ca_cert), 0o644)
        result.written += files
    return result


# --------------------------------------------------------------------------- reading and checking


def _read_cert(path: Path) -> x509.Certificate:
    try:
        return x509.load_pem_x509_certificate(path.read_bytes())
    except FileNotFoundError:
        raise CertificateError(f"{path} does not exist") from None
    except ValueError:
        raise CertificateError(f"{path} is not a PEM certificate") from None


def _read_key(path: Path):
    try:
        return serialization.load_pem_private_key(path.read_bytes(), password=None)
    except FileNotFoundError:
        raise CertificateError(f"{path} does not exist") from None
    except (ValueError, TypeError):
        raise CertificateError(f"{path} is not an unencrypted PEM private key") from None


def _same_public_key(cert: x509.Certificate, key) -> bool:
    fmt = (serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    return cert.public_key().public_bytes(*fmt) == key.public_key().public_bytes(*fmt)


@dataclass(frozen=True)
class Finding:
    level: Literal["error", "warning"]
    path: Path
    message: str

    def __str__(self) -> str:
        return f"{self.level.upper()} {self.path}: {self.message}"


def _validity_findings(path: Path, cert: x509.Certificate, now: dt.datetime) -> list[Finding]:
    if now < cert.not_valid_before_utc:
        return [Finding("error", path, f"not valid before {cert.not_valid_before_utc:%Y-%m-%d %H:%M} UTC; check the clocks")]
    if now >= cert.not_valid_after_utc:
        return [Finding("error", path, f"expired on {cert.not_valid_after_utc:%Y-%m-%d}; re-issue it (generate-certs --force)")]
    left = cert.not_valid_after_utc - now
    if left < dt.timedelta(days=EXPIRY_WARNING_DAYS):
        return [Finding("warning", path, f"expires in {left.days} days ({cert.not_valid_after_utc:%Y-%m-%d}); re-issue it soon")]
    return []


def _usages(cert: x509.Certificate) -> set[x509.ObjectIdentifier]:
    try:
        return set(cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value)
    except x509.ExtensionNotFound:
        return set()


def san_strings(cert: x509.Certificate) -> list[str]:
    try:
        sans = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return [str(n.value) for n in sans if isinstance(n, (x509.DNSName, x509.IPAddress))]


def summary(out: Path, now: dt.datetime | None = None) -> list[str]:
    """One line per certificate under ``out``: its name, SANs and expiry (for ``check-certs`` when all is well)."""
    now = now or dt.datetime.now(dt.timezone.utc)
    lines = []
    for path in sorted(out.glob("*/cert.pem")):
        cert = _read_cert(path)
        names = ", ".join(san_strings(cert)) or "none"
        left = (cert.not_valid_after_utc - now).days
        lines.append(f"{path}: {cert.subject.rfc4514_string()}, SANs {names}, expires {cert.not_valid_after_utc:%Y-%m-%d} "
                     f"({left} days)")
    return lines


def check(out: Path, now: dt.datetime | None = None) -> list[Finding]:
    """Check every certificate folder under ``out``: chain, key pairs, usages, SANs, expiry, modes."""
    now = now or dt.datetime.now(dt.timezone.utc)
    findings: list[Finding] = []
    if not out.is_dir():
        return [Finding("error", out, "is not a folder; run `remote-docker generate-certs` first")]

    ca_cert: x509.Certificate | None = None
    ca_path = out / "ca" / "cert.pem"
    if ca_path.exists():
        try:
            ca_cert = _read_cert(ca_path)
        except CertificateError as err:
            findings.append(Finding("error", ca_path, str(err).removeprefix(f"{ca_path} ")))
        else:
            findings += _validity_findings(ca_path, ca_cert, now)
            try:
                ca_cert.verify_directly_issued_by(ca_cert)
                constraints = ca_cert.extensions.get_extension_for_class(x509.BasicConstraints).value
                if not constraints.ca:
                    findings.append(Finding("error", ca_path, "is not a CA certificate (basicConstraints CA:false)"))
            except (ValueError, TypeError, InvalidSignature, x509.ExtensionNotFound):
                findings.append(Finding("error", ca_path, "is not a self-signed CA certificate"))
        ca_key_path = out / "ca" / "key.pem"
        if ca_key_path.exists():
            findings += _key_findings(ca_key_path, ca_cert)

    leaf_dirs = sorted(p for p in out.iterdir() if p.is_dir() and p.name != "ca" and (p / "cert.pem").exists())
    if not leaf_dirs and ca_cert is None:
        findings.append(Finding("error", out, "holds no certificates; run `remote-docker generate-certs` first"))
    for leaf_dir in leaf_dirs:
        findings += _check_leaf(leaf_dir, ca_cert, now)
    return findings


def _key_findings(key_path: Path, cert: x509.Certificate | None) -> list[Finding]:
    findings = []
    mode = key_path.stat().st_mode & 0o777
    if mode & 0o077:
        findings.append(Finding("error", key_path, f"mode is {mode:o}; a private key must be 0600 (chmod 600 {key_path})"))
    try:
        key = _read_key(key_path)
    except CertificateError as err:
        return [*findings, Finding("error", key_path, str(err).removeprefix(f"{key_path} "))]
    if cert is not None and not _same_public_key(cert, key):
        findings.append(Finding("error", key_path, "does not match cert.pem beside it; re-issue the pair"))
    return findings


def _check_leaf(leaf_dir: Path, ca_cert: x509.Certificate | None, now: dt.datetime) -> list[Finding]:
    cert_path, key_path, leaf_ca_path = leaf_dir / "cert.pem", leaf_dir / "key.pem", leaf_dir / "ca.pem"
    try:
        cert = _read_cert(cert_path)
    except CertificateError as err:
        return [Finding("error", cert_path, str(err).removeprefix(f"{cert_path} "))]
    findings = _validity_findings(cert_path, cert, now)

    if not key_path.exists():
        findings.append(Finding("error", key_path, "is missing; re-issue the pair (generate-certs --force)"))
    else:
        findings += _key_findings(key_path, cert)

    anchor = ca_cert
    if leaf_ca_path.exists():
        try:
            leaf_ca = _read_cert(leaf_ca_path)
        except CertificateError as err:
            findings.append(Finding("error", leaf_ca_path, str(err).removeprefix(f"{leaf_ca_path} ")))
            leaf_ca = None
        if leaf_ca is not None and ca_cert is not None and leaf_ca != ca_cert:
            findings.append(Finding("error", leaf_ca_path, "is not the CA in ca/cert.pem; copy ca/cert.pem here"))
        anchor = anchor or leaf_ca
    else:
        findings.append(Finding("error", leaf_ca_path, "is missing; copy ca/cert.pem here"))
    if anchor is not None:
        try:
            cert.verify_directly_issued_by(anchor)
        except (ValueError, TypeError, InvalidSignature):
            findings.append(Finding("error", cert_path, "is not signed by the CA; re-issue it from this CA"))

    usages = _usages(cert)
    if ExtendedKeyUsageOID.SERVER_AUTH in usages:
        if not san_strings(cert):
            findings.append(Finding("error", cert_path, "server certificate has no subjectAltName; re-issue with --san"))
    elif ExtendedKeyUsageOID.CLIENT_AUTH not in usages:
        findings.append(Finding("error", cert_path, "has neither serverAuth nor clientAuth usage; re-issue it"))
    return findings
