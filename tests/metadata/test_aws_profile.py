"""The AWS profile: the keys AWS-era clients read, and the signed identity document verified
with openssl against the published certificate."""

from __future__ import annotations

import base64
import datetime
import json
import subprocess
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID

from openimds.metadata.aws import AwsProfile
from openimds.metadata.identify import IdentifySettings
from openimds.metadata.identity import IdentitySigner
from openimds.metadata.respond import Responder, RespondSettings
from openimds.metadata.source import DictSource
from openimds.metadata.view import InstanceView
from tests.metadata.fixtures import PORT_A, SECRET, UUID_A, full_view
from tests.metadata.helpers import call, signed_headers

H = signed_headers(UUID_A, "test", SECRET)
MAC = "fa:16:3e:9c:bf:3d"


def make_signer(tmp: Path) -> tuple[IdentitySigner, Path]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "openimds identity test")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .sign(key, hashes.SHA256())
    )
    key_file, cert_file = tmp / "identity.key", tmp / "identity.pem"
    key_file.write_bytes(key.private_bytes(serialization.Encoding.PEM,
                                           serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return IdentitySigner.from_files(str(key_file), str(cert_file)), cert_file


def responder(view: InstanceView | None = None, signer: IdentitySigner | None = None,
              **kw: Any) -> Responder:
    settings = RespondSettings(identify=IdentifySettings(True, SECRET),
                               aws=AwsProfile(region="region-9", domain="cloud.example",
                                              signer=signer), **kw)
    return Responder(DictSource([view or full_view()]), settings)


async def text(r: Responder, path: str) -> str:
    resp = await call(r, path, headers=H)
    assert resp.status == 200, (path, resp.body)
    return resp.body.decode()


@pytest.mark.parametrize("version", ["latest", "2016-09-02", "2018-09-24", "2021-03-23"])
async def test_aws_versions_serve_the_aws_keys(version: str) -> None:
    r = responder()
    assert (await text(r, f"/{version}/")).split("\n") == ["dynamic/", "meta-data/", "user-data"]
    base = f"/{version}/meta-data/"
    listing = (await text(r, base)).split("\n")
    for key in ("instance-id", "local-ipv4", "placement/", "public-keys/", "mac",
                "instance-life-cycle", "network/", "services/"):
        assert key in listing, key
    assert await text(r, base + "placement/region") == "region-9"
    assert await text(r, base + "placement/availability-zone") == "fake-az"
    assert await text(r, base + "placement/availability-zone-id") == "region-9-fake-az"
    assert await text(r, base + "mac") == MAC
    assert await text(r, base + "instance-life-cycle") == "on-demand"
    assert await text(r, base + "services/partition") == "openstack"
    assert await text(r, base + "services/domain") == "cloud.example"


async def test_network_interfaces() -> None:
    r = responder()
    base = "/latest/meta-data/network/interfaces/macs/"
    assert await text(r, base) == MAC + "/"
    nic = base + MAC + "/"
    assert (await text(r, nic)).split("\n") == [
        "device-number", "interface-id", "ipv6s", "local-hostname", "local-ipv4s", "mac",
        "owner-id", "security-group-ids", "security-groups", "subnet-id",
        "subnet-ipv4-cidr-block", "subnet-ipv6-cidr-blocks", "vpc-id", "vpc-ipv4-cidr-block",
        "vpc-ipv4-cidr-blocks", "vpc-ipv6-cidr-blocks"]
    expected = {
        "device-number": "0", "interface-id": PORT_A, "ipv6s": "2001:db8::5",
        "local-hostname": "test.novalocal", "local-ipv4s": "10.0.0.5", "mac": MAC,
        "owner-id": "test", "security-groups": "default\nweb", "subnet-id": "sub4",
        "security-group-ids": "5d8c1f2e-0b1a-4c3d-9e8f-7a6b5c4d3e2f\n"
                              "9a1b2c3d-4e5f-4061-8273-94a5b6c7d8e9",
        "subnet-ipv4-cidr-block": "10.0.0.0/24", "subnet-ipv6-cidr-blocks": "2001:db8::/64",
        "vpc-id": "99e88329-f20d-4741-9593-25bf07847b16", "vpc-ipv4-cidr-block": "10.0.0.0/24",
    }
    for key, value in expected.items():
        assert await text(r, nic + key) == value, key


async def test_every_listed_entry_is_fetchable() -> None:
    r = responder(full_view(metadata_options={"instance_metadata_tags": "enabled"}))

    async def crawl(path: str) -> int:
        count = 0
        for line in (await text(r, path)).split("\n"):
            if not line:
                continue
            name = line.split("=")[0] if "=" in line else line
            if name.endswith("/") or "=" in line:
                count += await crawl(path + name.rstrip("/") + "/")
            else:
                await text(r, path + name)
                count += 1
        return count

    assert await crawl("/latest/meta-data/") > 40
    assert await crawl("/latest/dynamic/") == 1  # no signer: the document only


async def test_tags_only_when_enabled() -> None:
    view = full_view(metadata={"role": "web", "a/b": "unaddressable"})
    assert "tags/" not in (await text(responder(view), "/latest/meta-data/")).split("\n")
    on = responder(full_view(metadata={"role": "web", "a/b": "x"},
                             metadata_options={"instance_metadata_tags": "enabled"}))
    assert await text(on, "/latest/meta-data/tags/instance/") == "role"
    assert await text(on, "/latest/meta-data/tags/instance/role") == "web"


async def test_nova_profile_keeps_nova_latest() -> None:
    r = responder(ec2_profile="nova")
    assert await text(r, "/latest/") == "meta-data/\nuser-data"
    assert (await call(r, "/latest/meta-data/placement/region", headers=H)).status == 404
    assert (await call(r, "/2021-03-23/meta-data/instance-id", headers=H)).status == 404
    assert (await text(r, "/")).endswith("2009-04-04\nlatest")


async def test_identity_document_names_the_instance() -> None:
    created = datetime.datetime(2026, 1, 2, 3, 4, 5, tzinfo=datetime.UTC)
    r = responder(full_view(created_at=created))
    doc = json.loads(await text(r, "/latest/dynamic/instance-identity/document"))
    assert doc["instanceId"] == "i-00000001" and doc["accountId"] == "test"
    assert doc["region"] == "region-9" and doc["availabilityZone"] == "fake-az"
    assert doc["imageId"] == "ami-00000001" and doc["instanceType"] == "m1.small"
    assert doc["privateIp"] == "10.0.0.5" and doc["pendingTime"] == "2026-01-02T03:04:05Z"
    assert doc["architecture"] == "x86_64" and doc["version"] == "2017-09-30"


def _openssl(*args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["openssl", *args], input=stdin, capture_output=True, timeout=30)


async def test_signatures_verify_with_openssl(tmp_path: Path) -> None:
    signer, cert_file = make_signer(tmp_path)
    r = responder(signer=signer)
    base = "/latest/dynamic/instance-identity/"
    assert (await text(r, base)).split("\n") == ["document", "pkcs7", "rsa2048", "signature"]
    document = (await call(r, base + "document", headers=H)).body
    (tmp_path / "document").write_bytes(document)
    # signature: RSA SHA-256 over the document, checked with the certificate's public key.
    (tmp_path / "sig").write_bytes(base64.b64decode(await text(r, base + "signature")))
    pub = _openssl("x509", "-in", str(cert_file), "-pubkey", "-noout")
    (tmp_path / "pub.pem").write_bytes(pub.stdout)
    ok = _openssl("dgst", "-sha256", "-verify", str(tmp_path / "pub.pem"), "-signature",
                  str(tmp_path / "sig"), str(tmp_path / "document"))
    assert ok.returncode == 0 and b"Verified OK" in ok.stdout, ok.stderr
    # pkcs7 and rsa2048: AWS's recipe (wrap in PEM armour, smime -verify against the cert).
    for name in ("pkcs7", "rsa2048"):
        body = await text(r, base + name)
        pem = f"-----BEGIN PKCS7-----\n{body}\n-----END PKCS7-----\n"
        (tmp_path / name).write_text(pem)
        res = _openssl("smime", "-verify", "-in", str(tmp_path / name), "-inform", "PEM",
                       "-content", str(tmp_path / "document"), "-certfile", str(cert_file),
                       "-noverify")
        assert res.returncode == 0 and b"Verification successful" in res.stderr, res.stderr
        assert json.loads(res.stdout)["instanceId"] == "i-00000001"
    # A document for another instance does not verify against this signature.
    forged = document.replace(b"i-00000001", b"i-00000002")
    (tmp_path / "forged").write_bytes(forged)
    bad = _openssl("dgst", "-sha256", "-verify", str(tmp_path / "pub.pem"), "-signature",
                   str(tmp_path / "sig"), str(tmp_path / "forged"))
    assert bad.returncode != 0


def test_mismatched_key_and_certificate_are_refused(tmp_path: Path) -> None:
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    _, cert_file = make_signer(tmp_path / "a")
    other, _ = make_signer(tmp_path / "b")
    key_pem = other.key.private_bytes(serialization.Encoding.PEM,
                                      serialization.PrivateFormat.PKCS8,
                                      serialization.NoEncryption())
    with pytest.raises(ValueError, match="does not belong"):
        IdentitySigner.from_pem(key_pem, cert_file.read_bytes())
