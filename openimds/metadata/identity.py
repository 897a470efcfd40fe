"""The EC2 instance identity document and its signatures (`dynamic/instance-identity/`).

    IdentitySigner.from_files(key, cert) ─► sign(document) ─► Signatures(signature, pkcs7,
                                                                         rsa2048)

* `signature`: base64 of an RSA PKCS#1 v1.5 SHA-256 signature over the document bytes;
* `pkcs7`, `rsa2048`: a detached PKCS#7 (CMS) SignedData over the document, SHA-256, with the
  signer's certificate, as base64 without PEM armour (AWS's shape). A workload verifies with
  `openssl smime -verify -inform PEM -in <(wrap pkcs7) -content document -certfile cert.pem
  -noverify` against the certificate the control plane publishes.

The document itself (`identity_document`) is pure; signing uses the `cryptography` package.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.hazmat.primitives.serialization import pkcs7

__all__ = ["IdentitySigner", "Signatures", "identity_document"]

DOCUMENT_VERSION = "2017-09-30"


def identity_document(
    *,
    account_id: str,
    availability_zone: str | None,
    image_id: str | None,
    instance_id: str,
    instance_type: str,
    private_ip: str | None,
    region: str,
    pending_time: datetime | None,
    architecture: str = "x86_64",
) -> bytes:
    """The JSON document, in AWS's key order and pretty-printed shape."""
    pending = None
    if pending_time is not None:
        when = pending_time if pending_time.tzinfo else pending_time.replace(tzinfo=UTC)
        pending = when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    doc: dict[str, Any] = {
        "accountId": account_id,
        "architecture": architecture,
        "availabilityZone": availability_zone,
        "billingProducts": None,
        "devpayProductCodes": None,
        "marketplaceProductCodes": None,
        "imageId": image_id,
        "instanceId": instance_id,
        "instanceType": instance_type,
        "kernelId": None,
        "pendingTime": pending,
        "privateIp": private_ip,
        "ramdiskId": None,
        "region": region,
        "version": DOCUMENT_VERSION,
    }
    return json.dumps(doc, indent=2, separators=(",", " : ")).encode()


class Signatures(NamedTuple):
    signature: bytes
    pkcs7: bytes
    rsa2048: bytes


def _unarmour(pem: bytes) -> bytes:
    lines = [ln for ln in pem.strip().splitlines() if not ln.startswith(b"-----")]
    return b"\n".join(lines)


@dataclass(frozen=True)
class IdentitySigner:
    key: rsa.RSAPrivateKey
    certificate: x509.Certificate

    @classmethod
    def from_pem(cls, key_pem: bytes, cert_pem: bytes) -> IdentitySigner:
        """From PEM bytes; ValueError says which one is wrong."""
        key = serialization.load_pem_private_key(key_pem, password=None)
        if not isinstance(key, rsa.RSAPrivateKey):
            raise ValueError("the identity key must be an RSA private key")
        cert = x509.load_pem_x509_certificate(cert_pem)
        public = cert.public_key()
        if not isinstance(public, rsa.RSAPublicKey) or (
            public.public_numbers() != key.public_key().public_numbers()
        ):
            raise ValueError("the identity certificate does not belong to the identity key")
        return cls(key, cert)

    @classmethod
    def from_files(cls, key_file: str, cert_file: str) -> IdentitySigner:
        with open(key_file, "rb") as fh:
            key_pem = fh.read()
        with open(cert_file, "rb") as fh:
            cert_pem = fh.read()
        return cls.from_pem(key_pem, cert_pem)

    def sign(self, document: bytes) -> Signatures:
        raw = self.key.sign(document, padding.PKCS1v15(), hashes.SHA256())
        cms = (
            pkcs7.PKCS7SignatureBuilder()
            .set_data(document)
            .add_signer(self.certificate, self.key, hashes.SHA256())
            # Binary: the document's bytes as served (text mode would sign CRLF line ends).
            .sign(
                serialization.Encoding.PEM,
                [pkcs7.PKCS7Options.DetachedSignature, pkcs7.PKCS7Options.Binary],
            )
        )
        body = _unarmour(cms)
        return Signatures(base64.b64encode(raw), body, body)
