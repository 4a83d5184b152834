"""RS256 signing keys: a directory of PEM files, the newest signs, all verify.

Rotation is adding a newer key file: new tokens get signed with it while
tokens signed by the older keys stay valid until they expire (the JWKS keeps
publishing the old public keys until their files are removed). In the cluster
the directory is a mounted Secret; in embedded mode a key is generated on
first start.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa


@dataclass(frozen=True)
class SigningKey:
    kid: str
    private_key: rsa.RSAPrivateKey

    def public_jwk(self) -> dict[str, Any]:
        numbers = self.private_key.public_key().public_numbers()
        return {
            "kty": "RSA",
            "use": "sig",
            "alg": "RS256",
            "kid": self.kid,
            "n": _b64(numbers.n),
            "e": _b64(numbers.e),
        }


class SigningKeys:
    def __init__(self, keys: list[SigningKey]) -> None:
        if not keys:
            raise ValueError("no signing keys")
        self.keys = keys  # newest first

    @property
    def active(self) -> SigningKey:
        return self.keys[0]

    def jwks(self) -> dict[str, Any]:
        return {"keys": [k.public_jwk() for k in self.keys]}

    def jwks_json(self) -> str:
        return json.dumps(self.jwks(), sort_keys=True, separators=(",", ":"))

    @classmethod
    def load(cls, directory: Path, *, generate_if_empty: bool) -> SigningKeys:
        """Read `*.pem` from `directory`, newest (by file name) first.

        File names sort by creation: generated keys are named by their UTC
        creation time; operators naming rotated keys should do the same.
        """
        directory.mkdir(parents=True, exist_ok=True)
        files = sorted(directory.glob("*.pem"), reverse=True)
        if not files:
            if not generate_if_empty:
                raise FileNotFoundError(
                    f"no signing keys (*.pem) in {directory}; mount the signing-key Secret there "
                    "or unset HACS_SIGNING_KEYS_DIR to generate one"
                )
            files = [generate_key_file(directory)]
        keys = []
        for path in files:
            private_key = serialization.load_pem_private_key(path.read_bytes(), password=None)
            if not isinstance(private_key, rsa.RSAPrivateKey):
                raise ValueError(f"{path} is not an RSA private key (RS256 needs RSA)")
            keys.append(SigningKey(kid=thumbprint(private_key), private_key=private_key))
        return cls(keys)


def generate_key_file(directory: Path) -> Path:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    path = directory / time.strftime("%Y%m%dT%H%M%SZ.pem", time.gmtime())
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    return path


def thumbprint(key: rsa.RSAPrivateKey) -> str:
    """RFC 7638 JWK thumbprint: a key id that is the same wherever the key is loaded."""
    numbers = key.public_key().public_numbers()
    canonical = json.dumps(
        {"e": _b64(numbers.e), "kty": "RSA", "n": _b64(numbers.n)},
        separators=(",", ":"),
        sort_keys=True,
    )
    return (
        base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest()).decode().rstrip("=")
    )


def _b64(value: int) -> str:
    raw = value.to_bytes((value.bit_length() + 7) // 8, "big")
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")
