"""DaemonConfig resolution: URLs, TLS rules (never silently off), PEM as path or text, errors."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from remote_docker.daemon import certs
from remote_docker.daemon.connection import DaemonConfigError, build_config, config_from_environment, rebuild_pem
from remote_docker.hook import normalize_extras


@pytest.fixture(scope="module")
def pki(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("pki")
    certs.generate(out)
    certs.generate(out / "other")  # a second, unrelated CA
    return out


def tls_extras(pki: Path, **more) -> dict:
    client = pki / "client"
    return {"ca_cert": str(client / "ca.pem"), "client_cert": str(client / "cert.pem"),
            "client_private_key": str(client / "key.pem"), **more}


@pytest.mark.parametrize(
    ("host", "port", "url"),
    [
        ("tcp://docker:2376", None, "https://docker:2376"),
        ("docker", None, "https://docker:2376"),
        ("docker", 3000, "https://docker:3000"),
        ("https://10.1.2.3:443", None, "https://10.1.2.3:443"),
        ("tcp://[::1]:2376", None, "https://[::1]:2376"),
        ("TCP://Docker:2376", None, "https://docker:2376"),
    ],
)
def test_tls_urls(pki: Path, host: str, port: int | None, url: str) -> None:
    config = build_config(host=host, port=port, extras=tls_extras(pki), source="c")
    assert config.url == url
    assert config.tls is not None and config.tls.verify and config.tls.ca_pem


def test_unix_and_plain_proxy() -> None:
    assert build_config(host="unix:///var/run/docker.sock", source="c").url == "unix:///var/run/docker.sock"
    assert build_config(host="/run/docker.sock", source="c").url == "unix:///run/docker.sock"
    plain = build_config(host="http://proxy:2375", extras={"tls": False}, source="c")
    assert plain.url == "http://proxy:2375" and plain.tls is None
    assert build_config(host="tcp://proxy:2375", extras={"tls": "false"}, source="c").url == "http://proxy:2375"


def test_inline_pem_equals_files(pki: Path) -> None:
    inline = {k: Path(v).read_text() for k, v in tls_extras(pki).items()}
    by_text = build_config(host="tcp://docker:2376", extras=inline, source="c")
    by_path = build_config(host="tcp://docker:2376", extras=tls_extras(pki), source="c")
    assert by_text.fingerprint == by_path.fingerprint
    assert by_text.ssl_context() is not None


def test_ssl_context_is_pinned_to_our_ca_only(pki: Path) -> None:
    context = build_config(host="tcp://docker:2376", extras=tls_extras(pki), source="c").ssl_context()
    assert context.check_hostname
    assert [c["subject"] for c in context.get_ca_certs()] == [((("commonName", "remote-docker CA"),),)]


def test_tls_hostname_override_and_opt_out(pki: Path) -> None:
    assert build_config(host="tcp://10.0.0.1:2376", extras=tls_extras(pki, tls_hostname="docker"), source="c").tls.hostname == "docker"
    off = build_config(host="tcp://10.0.0.1:2376", extras=tls_extras(pki, tls_hostname=False), source="c")
    assert off.tls.hostname == "" and not off.ssl_context().check_hostname


# One line each, naming what is wrong and the fix.
@pytest.mark.parametrize(
    ("host", "extras", "message"),
    [
        ("tcp://docker:2376", {}, "connection 'x' uses TLS but has no certificates; set ca_cert, client_cert and client_private_key"),
        ("https://docker:2376", {}, "uses TLS but has no certificates"),
        ("http://docker:2375", {}, "is plain http://docker:2375; a plain-HTTP daemon or socket proxy needs \"tls\": false"),
        ("https://docker:2376", {"tls": False}, "says https:// but \"tls\": false"),
        ("ftp://docker", {}, "URL scheme 'ftp'"),
        ("", {}, "has no host"),
        ("tcp://docker:notaport", {}, "has an invalid port"),
        ("tcp://docker:2376", {"tls": "maybe"}, "extra tls is 'maybe'; use true or false"),
        ("tcp://docker:2376", {"timeout": "soon"}, "extra timeout is 'soon'"),
        ("tcp://docker:2376", {"timeout": -1}, "extra timeout is -1.0"),
        ("tcp://docker:2376", {"colour": "blue"}, "unknown extra colour"),
    ],
)
def test_config_errors(host: str, extras: dict, message: str) -> None:
    with pytest.raises(DaemonConfigError) as info:
        build_config(host=host, extras=extras, source="connection 'x'")
    assert message in str(info.value)
    assert "\n" not in str(info.value)


def test_partial_sets_name_what_is_missing(pki: Path) -> None:
    full = tls_extras(pki)
    with pytest.raises(DaemonConfigError, match="is missing ca_cert; give all three TLS files"):
        build_config(host="tcp://d:1", extras={**full, "ca_cert": None}, source="c")
    with pytest.raises(DaemonConfigError, match="has client_cert without client_private_key; give both"):
        build_config(host="tcp://d:1", extras={**full, "client_private_key": None}, source="c")
    with pytest.raises(DaemonConfigError, match="has client_private_key without client_cert"):
        build_config(host="tcp://d:1", extras={**full, "client_cert": None}, source="c")
    with pytest.raises(DaemonConfigError, match="is a unix socket but has TLS files"):
        build_config(host="unix:///x.sock", extras=full, source="c")
    with pytest.raises(DaemonConfigError, match="says \"tls\": false but has TLS files"):
        build_config(host="tcp://d:1", extras={**full, "tls": False}, source="c")


def test_bad_files(pki: Path, tmp_path: Path) -> None:
    full = tls_extras(pki)
    with pytest.raises(DaemonConfigError, match=r"c ca_cert file /nope/ca.pem does not exist; fix the path or paste the PEM"):
        build_config(host="tcp://d:1", extras={**full, "ca_cert": "/nope/ca.pem"}, source="c")
    garbage = tmp_path / "garbage.pem"
    garbage.write_text("hello")
    with pytest.raises(DaemonConfigError, match=r"client_cert file .*garbage.pem is not a PEM certificate"):
        build_config(host="tcp://d:1", extras={**full, "client_cert": str(garbage)}, source="c")
    with pytest.raises(DaemonConfigError, match=r"client_private_key file .*garbage.pem is not a PEM private key"):
        build_config(host="tcp://d:1", extras={**full, "client_private_key": str(garbage)}, source="c")
    with pytest.raises(DaemonConfigError, match=r"client_private_key \(inline PEM\) is not a PEM private key"):
        build_config(host="tcp://d:1", extras={**full, "client_private_key": "-----BEGIN PRIVATE KEY-----\nxx\n-----END PRIVATE KEY-----"}, source="c")
    with pytest.raises(DaemonConfigError, match=r"is a folder; point it at the .pem file"):
        build_config(host="tcp://d:1", extras={**full, "ca_cert": str(tmp_path)}, source="c")


def test_key_not_matching_certificate(pki: Path) -> None:
    extras = tls_extras(pki, client_private_key=str(pki / "server" / "key.pem"))
    with pytest.raises(DaemonConfigError, match=r"server/key.pem does not match .*client/cert.pem; use the key issued with that certificate"):
        build_config(host="tcp://d:1", extras=extras, source="c")


def test_encrypted_key(pki: Path, tmp_path: Path) -> None:
    key = serialization.load_pem_private_key((pki / "client" / "key.pem").read_bytes(), None)
    encrypted = tmp_path / "enc.pem"
    encrypted.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                            serialization.BestAvailableEncryption(b"pw")))
    with pytest.raises(DaemonConfigError, match="is encrypted; give an unencrypted key"):
        build_config(host="tcp://d:1", extras=tls_extras(pki, client_private_key=str(encrypted)), source="c")


def expired_client(pki: Path, tmp_path: Path) -> tuple[Path, Path]:
    ca_cert = x509.load_pem_x509_certificate((pki / "ca" / "cert.pem").read_bytes())
    ca_key = serialization.load_pem_private_key((pki / "ca" / "key.pem").read_bytes(), None)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "old")]))
            .issuer_name(ca_cert.subject).public_key(key.public_key()).serial_number(1)
            .not_valid_before(now - dt.timedelta(days=30)).not_valid_after(now - dt.timedelta(days=1))
            .sign(ca_key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "old-cert.pem", tmp_path / "old-key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_expired_client_certificate(pki: Path, tmp_path: Path) -> None:
    cert_path, key_path = expired_client(pki, tmp_path)
    with pytest.raises(DaemonConfigError, match=r"old-cert.pem expired on .*; issue a new client certificate"):
        build_config(host="tcp://d:1", extras=tls_extras(pki, client_cert=str(cert_path), client_private_key=str(key_path)), source="c")


def test_docker_environment(pki: Path) -> None:
    assert config_from_environment({}) is None
    env = {"DOCKER_HOST": "tcp://127.0.0.1:2376", "DOCKER_TLS_VERIFY": "1", "DOCKER_CERT_PATH": str(pki / "client")}
    config = config_from_environment(env)
    assert config.url == "https://127.0.0.1:2376" and config.tls.cert_pem
    with pytest.raises(DaemonConfigError, match="DOCKER_HOST uses TLS but has no certificates"):
        config_from_environment({"DOCKER_HOST": "tcp://127.0.0.1:2376"})
    assert config_from_environment({"DOCKER_HOST": "unix:///run/docker.sock"}).is_unix


def test_fingerprint_tells_daemons_apart(pki: Path) -> None:
    a = build_config(host="tcp://a:2376", extras=tls_extras(pki), source="c")
    b = build_config(host="tcp://b:2376", extras=tls_extras(pki), source="c")
    other_ca = build_config(host="tcp://a:2376", extras=tls_extras(pki / "other"), source="c")
    assert len({a.fingerprint, b.fingerprint, other_ca.fingerprint}) == 3
    assert a.fingerprint == build_config(host="a", extras=tls_extras(pki), source="d").fingerprint


def test_ui_prefixed_extras() -> None:
    extras = {"extra__remote_docker__ca_cert": "/x", "tls_hostname": "", "api_version": None, "timeout": 5}
    assert normalize_extras(extras, "remote_docker") == {"ca_cert": "/x", "timeout": 5}


def test_hook_refuses_an_unknown_override() -> None:
    from remote_docker.hook import RemoteDockerHook

    with pytest.raises(TypeError, match=r"^RemoteDockerHook got unknown argument\(s\) tls_cacert; it takes daemon, docker_url, tls_ca_cert, "):
        RemoteDockerHook("x", tls_cacert="/ca.pem")


def test_concurrent_lookups_of_one_connection_share_one_request(monkeypatch) -> None:
    """A triggerer starting many triggers asks its supervisor once per connection, not once per trigger;
    a failed lookup is not kept, and an answer only for CONNECTION_CACHE_SECONDS."""
    from remote_docker import hook

    asked: list[str] = []

    async def lookup(conn_id: str) -> str:
        asked.append(conn_id)
        await asyncio.sleep(0.05)
        if conn_id == "broken":
            raise RuntimeError("lookup failed")
        return f"connection {conn_id}"

    async def scenario() -> tuple[list, list]:
        shared = await asyncio.gather(*(hook._shared_lookup("a", lookup) for _ in range(20)), hook._shared_lookup("b", lookup))
        failed = await asyncio.gather(*(hook._shared_lookup("broken", lookup) for _ in range(2)), return_exceptions=True)
        with contextlib.suppress(RuntimeError):
            await hook._shared_lookup("broken", lookup)  # asked again
        await asyncio.sleep(0.3)  # past the lifetime
        await hook._shared_lookup("a", lookup)  # asked again
        return shared, failed

    monkeypatch.setattr(hook, "CONNECTION_CACHE_SECONDS", 0.2)
    shared, failed = asyncio.run(scenario())
    assert shared == ["connection a"] * 20 + ["connection b"]
    assert all(isinstance(err, RuntimeError) for err in failed)
    assert asked == ["a", "b", "broken", "broken", "a"]


def test_parsed_tls_material_is_reused_until_a_file_changes(pki: Path, tmp_path: Path) -> None:
    """Every trigger resolves the connection: the keys are parsed once, yet a replaced file is read
    again and a certificate's dates are checked on every lookup."""
    client = pki / "client"
    for name in ("ca.pem", "cert.pem", "key.pem"):
        (tmp_path / name).write_bytes((client / name).read_bytes())
    extras = {"ca_cert": str(tmp_path / "ca.pem"), "client_cert": str(tmp_path / "cert.pem"),
              "client_private_key": str(tmp_path / "key.pem")}
    first = build_config(host="tcp://d:1", extras=extras, source="c").tls
    assert build_config(host="tcp://d:1", extras=extras, source="c").tls is first

    cert_path, key_path = expired_client(pki, tmp_path)  # the files are replaced in place by an expired pair
    (tmp_path / "cert.pem").write_bytes(cert_path.read_bytes())
    (tmp_path / "key.pem").write_bytes(key_path.read_bytes())
    with pytest.raises(DaemonConfigError, match=r"cert.pem expired on .*; issue a new client certificate"):
        build_config(host="tcp://d:1", extras=extras, source="c")

    (tmp_path / "cert.pem").write_bytes((client / "cert.pem").read_bytes())
    (tmp_path / "key.pem").write_bytes((client / "key.pem").read_bytes())
    again = build_config(host="tcp://d:1", extras=extras, source="c").tls
    assert again.cert_pem == first.cert_pem
    later = dt.datetime.now(dt.timezone.utc) + dt.timedelta(days=365 * 30)  # the cached pair, checked against a later clock
    from remote_docker.daemon.connection import PemSource, load_tls_material

    sources = [PemSource(extras[name], f"c {name}") for name in ("ca_cert", "client_cert", "client_private_key")]
    assert load_tls_material(*sources, verify=True, hostname=None, where="c") is \
        load_tls_material(*sources, verify=True, hostname=None, where="c")
    with pytest.raises(DaemonConfigError, match=r"cert.pem expired on .*; issue a new client certificate"):
        load_tls_material(*sources, verify=True, hostname=None, where="c", now=later)


def test_an_empty_tls_hostname_is_refused_not_taken_as_no_check(pki: Path) -> None:
    with pytest.raises(DaemonConfigError, match=r"^c tls_hostname is empty; give the name the daemon's certificate carries, "
                                                r"or False to turn the name check off$"):
        build_config(host="tcp://d:1", extras=tls_extras(pki, tls_hostname=""), source="c")
    assert build_config(host="tcp://d:1", extras=tls_extras(pki, tls_hostname=False), source="c").checks_off.startswith(
        "tls_hostname=False")
    assert build_config(host="tcp://d:1", extras=tls_extras(pki), source="c").checks_off is None


def test_a_pem_flattened_by_a_single_line_input_is_rebuilt(pki: Path) -> None:
    flat = {name: Path(path).read_text().replace("\n", " ") for name, path in tls_extras(pki).items()}
    config = build_config(host="tcp://d:1", extras=flat, source="c")
    assert config.tls.cert_pem == (pki / "client" / "cert.pem").read_bytes()
    assert rebuild_pem("no pem here") == "no pem here"


def test_the_old_key_extra_name_still_works_and_both_names_are_refused(pki: Path) -> None:
    extras = tls_extras(pki)
    old = {**{k: v for k, v in extras.items() if k != "client_private_key"}, "client_key": extras["client_private_key"]}
    assert build_config(host="tcp://d:1", extras=old, source="c").tls.key_pem
    with pytest.raises(DaemonConfigError, match=r"^c has both client_key and client_private_key; keep client_private_key"):
        build_config(host="tcp://d:1", extras={**extras, "client_key": extras["client_private_key"]}, source="c")
