"""`/v2.1/os-keypairs` (Nova shapes). Key pairs belong to the user that imports them, as in
Nova. Without a `public_key`, a key pair is generated as Nova does before microversion 2.92
(RSA 2048, the private key returned once in the answer and never stored)."""

from __future__ import annotations

import base64
import binascii
import hashlib

from sqlalchemy import select
from sqlalchemy.orm import Session

from openimds.control.call import Call, Reply, get_str, resource_body
from openimds.control.errors import BadRequest, Conflict, NotFound
from openimds.control.serializers import keypair_dict
from openimds.inventory.models import KeyPair

KEY_TYPES = ("ssh-rsa", "ssh-ed25519", "ssh-dss", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
             "ecdsa-sha2-nistp521", "sk-ssh-ed25519@openssh.com",
             "sk-ecdsa-sha2-nistp256@openssh.com")


def fingerprint(public_key: str) -> str:
    """Nova's legacy fingerprint: MD5 of the key blob as colon-separated hex; rejects keys that
    are not `<type> <base64 blob> [comment]` with the blob naming the same type."""
    parts = public_key.strip().split()
    if len(parts) < 2 or parts[0] not in KEY_TYPES:
        raise BadRequest("Keypair data is invalid: expected an OpenSSH public key such as "
                         "'ssh-ed25519 AAAA... comment'")
    try:
        blob = base64.b64decode(parts[1], validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest("Keypair data is invalid: the key blob is not base64") from None
    kind = parts[0].encode()
    if blob[:4] != len(kind).to_bytes(4, "big") or blob[4:4 + len(kind)] != kind:
        raise BadRequest("Keypair data is invalid: the key blob does not match its type")
    digest = hashlib.md5(blob, usedforsecurity=False).hexdigest()
    return ":".join(digest[i:i + 2] for i in range(0, len(digest), 2))


def create_keypair(call: Call) -> Reply:
    obj = resource_body(call.body, "keypair", ("name", "public_key", "type", "user_id"),
                        required=("name",))
    ctx = call.context
    name = get_str(obj, "name").strip()
    if not name or not all(c.isalnum() or c in " _-.@" for c in name):
        raise BadRequest("Keypair name must be 1-255 characters of letters, digits, spaces, "
                         "'_', '-', '.' or '@'.")
    key_type = get_str(obj, "type", "ssh")
    if key_type not in ("ssh", "x509"):
        raise BadRequest("Invalid input for type: use ssh or x509")
    private_key = None
    if "public_key" not in obj:
        if key_type != "ssh":
            raise BadRequest("openimds generates ssh key pairs only; import an x509 key with "
                             "public_key.")
        private_key, public_key = generate_ssh_keypair()
    else:
        public_key = get_str(obj, "public_key", max_len=16384).strip()
    user_id = obj.get("user_id", ctx.user_id)
    if user_id != ctx.user_id and not ctx.is_admin:
        raise BadRequest("Only an admin may import a key pair for another user.")
    fp = fingerprint(public_key)
    with call.store.session() as s:
        clash = s.scalars(select(KeyPair).where(KeyPair.user_id == user_id,
                                                KeyPair.name == name)).first()
        if clash is not None:
            raise Conflict(f"Key pair '{name}' already exists.")
        kp = KeyPair(name=name, user_id=user_id, project_id=ctx.project_id,
                     public_key=public_key, fingerprint=fp, type=key_type)
        s.add(kp)
        s.flush()
        body = keypair_dict(kp)
        if private_key is not None:
            body["private_key"] = private_key
        return Reply(201, {"keypair": body})


def generate_ssh_keypair() -> tuple[str, str]:
    """(private key PEM, OpenSSH public key line) of a fresh RSA 2048 key, as Nova makes."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    private = key.private_bytes(serialization.Encoding.PEM,
                                serialization.PrivateFormat.TraditionalOpenSSL,
                                serialization.NoEncryption()).decode("ascii")
    public = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                           serialization.PublicFormat.OpenSSH).decode("ascii")
    return private, f"{public} Generated-by-Nova"


def list_keypairs(call: Call) -> Reply:
    with call.store.read() as s:
        rows = s.scalars(select(KeyPair).where(KeyPair.user_id == call.context.user_id)
                         .order_by(KeyPair.name))
        return Reply(200, {"keypairs": [{"keypair": keypair_dict(k)} for k in rows]})


def _mine(s: Session, call: Call) -> KeyPair:
    name = call.params["name"]
    kp = s.scalars(select(KeyPair).where(KeyPair.user_id == call.context.user_id,
                                         KeyPair.name == name)).first()
    if kp is None:
        raise NotFound(f"Keypair {name} not found for user {call.context.user_id}")
    return kp


def show_keypair(call: Call) -> Reply:
    with call.store.read() as s:
        return Reply(200, {"keypair": keypair_dict(_mine(s, call))})


def delete_keypair(call: Call) -> Reply:
    with call.store.session() as s:
        s.delete(_mine(s, call))
    return Reply(202)
