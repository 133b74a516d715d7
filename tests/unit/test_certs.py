"""generate-certs and check-certs: layout, extensions, modes, re-runs, and every finding."""

from __future__ import annotations

import datetime as dt
import stat
from pathlib import Path

import pytest
from conftest import run_cli
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from remote_docker.daemon import certs


def load(path: Path) -> x509.Certificate:
    return x509.load_pem_x509_certificate(path.read_bytes())


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_layout_matches_dind(tmp_path: Path) -> None:
    result = certs.generate(tmp_path)
    expected = {
        "ca/cert.pem", "ca/key.pem",
        "server/ca.pem", "server/cert.pem", "server/key.pem",
        "client/ca.pem", "client/cert.pem", "client/key.pem",
    }
    assert {str(p.relative_to(tmp_path)) for p in result.written} == expected
    for key in tmp_path.glob("*/key.pem"):
        assert mode(key) == 0o600, key
    # the CA key exists only in ca/
    ca_key = (tmp_path / "ca" / "key.pem").read_bytes()
    assert all(p.read_bytes() != ca_key for p in tmp_path.glob("[!c]*/*.pem"))
    assert (tmp_path / "client" / "ca.pem").read_bytes() == (tmp_path / "ca" / "cert.pem").read_bytes()


def test_extensions(tmp_path: Path) -> None:
    certs.generate(tmp_path, sans=["docker", "daemon.lan", "127.0.0.1", "::1"])
    ca, server, client = (load(tmp_path / d / "cert.pem") for d in ("ca", "server", "client"))

    constraints = ca.extensions.get_extension_for_class(x509.BasicConstraints).value
    assert constraints.ca and constraints.path_length == 0
    usage = ca.extensions.get_extension_for_class(x509.KeyUsage).value
    assert usage.key_cert_sign and usage.crl_sign

    assert set(server.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == {ExtendedKeyUsageOID.SERVER_AUTH}
    assert certs.san_strings(server) == ["docker", "daemon.lan", "127.0.0.1", "::1"]
    assert set(client.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value) == {ExtendedKeyUsageOID.CLIENT_AUTH}
    assert not server.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    server.verify_directly_issued_by(ca)
    client.verify_directly_issued_by(ca)
    assert isinstance(server.public_key(), ec.EllipticCurvePublicKey)
    assert server.public_key().curve.name == "secp256r1"


def test_default_sans(tmp_path: Path) -> None:
    certs.generate(tmp_path)
    assert certs.san_strings(load(tmp_path / "server" / "cert.pem")) == ["docker", "localhost", "127.0.0.1", "::1"]


def test_rsa_and_days(tmp_path: Path) -> None:
    certs.generate(tmp_path, key_type="rsa", rsa_bits=3072, days=10)
    server = load(tmp_path / "server" / "cert.pem")
    assert isinstance(server.public_key(), rsa.RSAPublicKey)
    assert server.public_key().key_size == 3072
    lifetime = server.not_valid_after_utc - server.not_valid_before_utc
    assert dt.timedelta(days=10) <= lifetime <= dt.timedelta(days=10, minutes=6)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"key_type": "rsa", "rsa_bits": 2048}, "--rsa-bits 2048 is too small"),
        ({"key_type": "dsa"}, "--key-type 'dsa' is unknown"),
        ({"days": 0}, "--days 0 must be at least 1"),
        ({"sans": []}, "no --san given"),
        ({"sans": [" "]}, "empty --san value"),
        ({"server_name": "../x"}, "--server-name '../x' is not a plain folder name"),
        ({"server_name": "ca"}, "--server-name 'ca' is not a plain folder name"),
        ({"client_name": "server"}, "both 'server'"),
    ],
)
def test_bad_arguments(tmp_path: Path, kwargs: dict, message: str) -> None:
    with pytest.raises(certs.CertificateError, match=message.replace("(", r"\(").replace(")", r"\)")):
        certs.generate(tmp_path, **kwargs)
    assert not any(tmp_path.iterdir()), "a refused run must write nothing"


def test_rerun_keeps_everything_and_reuses_ca(tmp_path: Path) -> None:
    certs.generate(tmp_path)
    before = {p: p.read_bytes() for p in tmp_path.rglob("*.pem")}
    result = certs.generate(tmp_path)
    assert result.written == []
    assert {p: p.read_bytes() for p in tmp_path.rglob("*.pem")} == before


def test_force_reissues_leaves_from_the_same_ca(tmp_path: Path) -> None:
    certs.generate(tmp_path)
    ca_before = (tmp_path / "ca" / "cert.pem").read_bytes()
    server_before = (tmp_path / "server" / "cert.pem").read_bytes()
    certs.generate(tmp_path, force=True)
    assert (tmp_path / "ca" / "cert.pem").read_bytes() == ca_before
    assert (tmp_path / "server" / "cert.pem").read_bytes() != server_before
    load(tmp_path / "server" / "cert.pem").verify_directly_issued_by(load(tmp_path / "ca" / "cert.pem"))


def test_extra_server_for_another_host(tmp_path: Path) -> None:
    certs.generate(tmp_path)
    client_before = (tmp_path / "client" / "cert.pem").read_bytes()
    result = certs.generate(tmp_path, server_name="host2", sans=["host2.lan"], with_client=False)
    assert {p.parent.name for p in result.written} == {"host2"}
    host2 = load(tmp_path / "host2" / "cert.pem")
    assert certs.san_strings(host2) == ["host2.lan"]
    host2.verify_directly_issued_by(load(tmp_path / "ca" / "cert.pem"))
    assert (tmp_path / "client" / "cert.pem").read_bytes() == client_before
    assert [f for f in certs.check(tmp_path) if f.level == "error"] == []


def test_incomplete_leaf_is_refused_without_force(tmp_path: Path) -> None:
    certs.generate(tmp_path)
    (tmp_path / "server" / "key.pem").unlink()
    with pytest.raises(certs.CertificateError, match=r"server is incomplete .*key.pem missing.*--force"):
        certs.generate(tmp_path)
    certs.generate(tmp_path, force=True)
    assert [f for f in certs.check(tmp_path) if f.level == "error"] == []


def test_ca_without_key_is_refused(tmp_path: Path) -> None:
    certs.generate(tmp_path)
    (tmp_path / "ca" / "key.pem").unlink()
    with pytest.raises(certs.CertificateError, match=r"ca/key.pem is missing but its pair exists"):
        certs.generate(tmp_path, server_name="host3", with_client=False)


def test_write_atomically_never_loosens_mode(tmp_path: Path) -> None:
    target = tmp_path / "k.pem"
    certs.write_atomically(target, b"secret", 0o600)
    assert mode(target) == 0o600 and target.read_bytes() == b"secret"
    assert [p.name for p in tmp_path.iterdir()] == ["k.pem"], "no temporary file left behind"


# --------------------------------------------------------------------------- check


def errors(out: Path) -> list[str]:
    return [str(f) for f in certs.check(out) if f.level == "error"]


def test_check_clean(tmp_path: Path) -> None:
    certs.generate(tmp_path)
    assert certs.check(tmp_path) == []


def _sign(ca_dir: Path, *, days_valid: tuple[int, int], usage=ExtendedKeyUsageOID.CLIENT_AUTH, sans=None):
    ca_cert = load(ca_dir / "cert.pem")
    ca_key = serialization.load_pem_private_key((ca_dir / "key.pem").read_bytes(), None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "t")]))
        .issuer_name(ca_cert.subject).public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now + dt.timedelta(days=days_valid[0]))
        .not_valid_after(now + dt.timedelta(days=days_valid[1]))
        .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
    )
    if sans:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(s) for s in sans]), critical=False)
    return builder.sign(ca_key, hashes.SHA256()), key


def _install(leaf_dir: Path, cert, key) -> None:
    (leaf_dir / "cert.pem").write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    certs.write_atomically(leaf_dir / "key.pem", key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()), 0o600)


def test_check_expired_and_expiring_and_future(tmp_path: Path) -> None:
    certs.generate(tmp_path)
    _install(tmp_path / "client", *_sign(tmp_path / "ca", days_valid=(-10, -1)))
    assert any("client/cert.pem: expired on" in e for e in errors(tmp_path))

    _install(tmp_path / "client", *_sign(tmp_path / "ca", days_valid=(-1, 5)))
    findings = certs.check(tmp_path)
    assert not [f for f in findings if f.level == "error"]
    assert any(f.level == "warning" and "expires in 4 days" in f.message for f in findings)

    _install(tmp_path / "client", *_sign(tmp_path / "ca", days_valid=(3, 30)))
    assert any("not valid before" in e for e in errors(tmp_path))


def test_check_key_mismatch_and_mode(tmp_path: Path) -> None:
    certs.generate(tmp_path)
    (tmp_path / "client" / "key.pem").write_bytes((tmp_path / "server" / "key.pem").read_bytes())
    (tmp_path / "client" / "key.pem").chmod(0o644)
    found = errors(tmp_path)
    assert any("client/key.pem: does not match cert.pem" in e for e in found)
    assert any("client/key.pem: mode is 644; a private key must be 0600" in e for e in found)


def test_check_wrong_ca_and_missing_san_and_usage(tmp_path: Path) -> None:
    certs.generate(tmp_path / "a")
    certs.generate(tmp_path / "b")
    # a server certificate issued by another CA
    for name in ("cert.pem", "key.pem"):
        (tmp_path / "a" / "server" / name).write_bytes((tmp_path / "b" / "server" / name).read_bytes())
    assert any("server/cert.pem: is not signed by the CA" in e for e in errors(tmp_path / "a"))

    certs.generate(tmp_path / "c")
    _install(tmp_path / "c" / "server", *_sign(tmp_path / "c" / "ca", days_valid=(-1, 90), usage=ExtendedKeyUsageOID.SERVER_AUTH))
    assert any("server certificate has no subjectAltName" in e for e in errors(tmp_path / "c"))
    _install(tmp_path / "c" / "server", *_sign(tmp_path / "c" / "ca", days_valid=(-1, 90), usage=ExtendedKeyUsageOID.CODE_SIGNING))
    assert any("neither serverAuth nor clientAuth" in e for e in errors(tmp_path / "c"))


def test_check_garbage_and_missing(tmp_path: Path) -> None:
    certs.generate(tmp_path)
    (tmp_path / "server" / "ca.pem").unlink()
    (tmp_path / "client" / "cert.pem").write_text("garbage")
    found = errors(tmp_path)
    assert any("server/ca.pem: is missing; copy ca/cert.pem here" in e for e in found)
    assert any("client/cert.pem: is not a PEM certificate" in e for e in found)
    assert [str(f) for f in certs.check(tmp_path / "nothing")] == [
        f"ERROR {tmp_path / 'nothing'}: is not a folder; run `remote-docker generate-certs` first"
    ]


# --------------------------------------------------------------------------- the command


def test_cli_generate_then_check(tmp_path: Path) -> None:
    out = tmp_path / "c"
    first = run_cli("generate-certs", "--out", str(out), "--san", "docker", "--san", "10.0.0.5")
    assert first.returncode == 0, first.stderr
    assert first.stdout.count("wrote ") == 8
    assert certs.san_strings(load(out / "server" / "cert.pem")) == ["docker", "10.0.0.5"]
    again = run_cli("generate-certs", "--out", str(out))
    assert again.returncode == 0 and "wrote" not in again.stdout and again.stdout.count("kept") == 3
    checked = run_cli("check-certs", str(out))
    lines = checked.stdout.strip().splitlines()
    assert checked.returncode == 0 and lines[-1] == f"ok: {out}: chain, key pairs, usages, SANs, expiry and key modes"
    server = next(line for line in lines if line.startswith(f"{out / 'server' / 'cert.pem'}: "))
    assert "SANs docker, 10.0.0.5, expires " in server and server.endswith(" days)")
    assert len(lines) == 4, "the CA, the server and the client certificate, then the verdict"


def test_cli_check_fails_with_one_line_per_problem(tmp_path: Path) -> None:
    certs.generate(tmp_path)
    (tmp_path / "client" / "key.pem").chmod(0o640)
    (tmp_path / "server" / "cert.pem").write_text("nope")
    result = run_cli("check-certs", str(tmp_path))
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 2, lines
    assert all(line.startswith("ERROR ") for line in lines)


def test_cli_bad_input_is_one_line(tmp_path: Path) -> None:
    result = run_cli("generate-certs", "--out", str(tmp_path), "--key-type", "rsa", "--rsa-bits", "1024")
    assert result.returncode == 2
    assert result.stderr.strip() == "remote-docker generate-certs: --rsa-bits 1024 is too small; use 3072 or more"


def test_folders_are_private_and_keys_0600_whatever_the_umask(tmp_path: Path) -> None:
    import os

    previous = os.umask(0)
    try:
        certs.generate(tmp_path / "out")
    finally:
        os.umask(previous)
    for folder in (tmp_path / "out", *(p for p in (tmp_path / "out").iterdir() if p.is_dir())):
        assert mode(folder) == 0o700, folder
    assert all(mode(key) == 0o600 for key in (tmp_path / "out").glob("*/key.pem"))


def test_a_kept_key_readable_by_others_is_warned_about_and_force_fixes_every_one(tmp_path: Path) -> None:
    certs.generate(tmp_path)
    for key in ("ca/key.pem", "client/key.pem"):
        (tmp_path / key).chmod(0o644)
    kept = certs.generate(tmp_path)
    assert kept.warnings == [f"{tmp_path / key} has mode 644: others can read this private key; chmod 600 {tmp_path / key} "
                             "(or re-run with --force)" for key in ("ca/key.pem", "client/key.pem")]
    forced = certs.generate(tmp_path, force=True)
    assert forced.warnings == [f"{tmp_path / 'ca/key.pem'} had mode 644; set to 600"]  # the leaves are re-issued anyway
    assert all(mode(key) == 0o600 for key in tmp_path.glob("*/key.pem"))
    printed = run_cli("generate-certs", "--out", str(tmp_path))
    assert printed.returncode == 0 and "warning" not in printed.stderr
