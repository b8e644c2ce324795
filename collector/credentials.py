"""Venue API credentials, read at start, and the adapters that need them.

The exchange adapters are sans-IO, so they never read the environment or a key file: the
service start (planning) calls :func:`make_adapter`, which reads what a venue needs here
and hands it to the adapter's constructor. Reading happens once, so a missing or bad key
is a settings error at start (ValueError naming the variable, never the secret), not a
failure at the first subscribe.

Coinbase (optional authentication): ``COINBASE_API_KEY`` (the key name, e.g.
``organizations/{org}/apiKeys/{id}``) and ``COINBASE_API_SECRET_FILE`` (a file holding an
EC P-256 PEM key, or a base64 Ed25519 key). Every (un)subscribe frame then carries a fresh
JWT (``ES256`` or ``EdDSA``, headers ``kid`` and ``nonce``, claims ``iss="cdp"``, ``sub``,
``nbf``, ``exp`` = ``nbf`` + 120 s). The secret is never logged or shown in a repr.
"""

from __future__ import annotations

import base64
import binascii
import os
import secrets
from collections.abc import Mapping
from typing import Final

import attrs
import jwt
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.hazmat.primitives.serialization import load_pem_private_key

from collector.exchanges import get_adapter_class
from collector.exchanges.base import ExchangeAdapter
from collector.exchanges.coinbase import CoinbaseAdapter

JWT_LIFETIME_SECS: Final = 120
ENV_API_KEY: Final = "COINBASE_API_KEY"
ENV_SECRET_FILE: Final = "COINBASE_API_SECRET_FILE"


def make_adapter(name: str, env: Mapping[str, str] | None = None) -> ExchangeAdapter:
    """The adapter of exchange ``name``, given the credentials it needs from ``env``
    (default: the process environment) and the files it names.

    Raises KeyError for an unknown exchange, and ValueError (its message starting with the
    exchange's name) for half-set credentials or an unreadable or invalid key file.
    """
    adapter_class = get_adapter_class(name)
    if issubclass(adapter_class, CoinbaseAdapter):
        return adapter_class(load_coinbase_credentials(os.environ if env is None else env))
    return adapter_class()


@attrs.frozen
class CoinbaseCredentials:
    """A Coinbase API key that signs subscribe frames with short-lived JWTs.

    A :class:`collector.exchanges.coinbase.FrameSigner`. Never shows the key.
    """

    key_name: str
    algorithm: str  # "ES256" or "EdDSA"
    private_key: ec.EllipticCurvePrivateKey | ed25519.Ed25519PrivateKey = attrs.field(repr=False)

    def token(self, now_us: int) -> str:
        """A JWT valid from ``now_us`` for 2 minutes (a fresh random nonce each time)."""
        now = now_us // 1_000_000
        claims = {"iss": "cdp", "sub": self.key_name, "nbf": now, "exp": now + JWT_LIFETIME_SECS}
        headers = {"kid": self.key_name, "nonce": secrets.token_hex()}
        return jwt.encode(claims, self.private_key, algorithm=self.algorithm, headers=headers)

    @classmethod
    def from_secret(cls, key_name: str, secret: str) -> CoinbaseCredentials:
        """Parse an EC PEM (SEC1 or PKCS#8) or base64 Ed25519 secret. ValueError if neither."""
        text = secret.strip().replace("\\n", "\n")
        if text.startswith("-----BEGIN"):
            try:
                key = load_pem_private_key(text.encode(), password=None)
            except (ValueError, TypeError) as exc:
                raise ValueError(f"not a readable PEM private key ({type(exc).__name__})") from None
            if isinstance(key, ec.EllipticCurvePrivateKey):
                if not isinstance(key.curve, ec.SECP256R1):
                    raise ValueError(f"EC key on {key.curve.name}; Coinbase needs P-256 (ES256)")
                return cls(key_name, "ES256", key)
            if isinstance(key, ed25519.Ed25519PrivateKey):
                return cls(key_name, "EdDSA", key)
            raise ValueError(
                f"unsupported key type {type(key).__name__} (need EC P-256 or Ed25519)"
            )
        try:
            raw = base64.b64decode(text, validate=True)
        except (binascii.Error, ValueError):
            raise ValueError("neither a PEM key nor base64 Ed25519 key material") from None
        if len(raw) not in (32, 64):
            raise ValueError(f"base64 Ed25519 key must decode to 32 or 64 bytes (got {len(raw)})")
        return cls(key_name, "EdDSA", ed25519.Ed25519PrivateKey.from_private_bytes(raw[:32]))


def load_coinbase_credentials(env: Mapping[str, str]) -> CoinbaseCredentials | None:
    """Credentials from ``COINBASE_API_KEY`` + ``COINBASE_API_SECRET_FILE``; None if unset.

    Reads the key file (blocking: call it at start, not from a running event loop). Raises
    ValueError (naming the variable, never the secret) when only one is set or the file
    cannot be read or parsed.
    """
    key_name = env.get(ENV_API_KEY, "").strip()
    path = env.get(ENV_SECRET_FILE, "").strip()
    if not key_name and not path:
        return None
    if not key_name or not path:
        missing = ENV_API_KEY if not key_name else ENV_SECRET_FILE
        present = ENV_SECRET_FILE if not key_name else ENV_API_KEY
        raise ValueError(f"coinbase: {present} is set but {missing} is not (set both or neither)")
    try:
        with open(path, encoding="utf-8") as file:
            secret = file.read()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise ValueError(
            f"coinbase: {ENV_SECRET_FILE}={path!r}: cannot read key file: {reason}"
        ) from None
    try:
        return CoinbaseCredentials.from_secret(key_name, secret)
    except ValueError as exc:
        raise ValueError(f"coinbase: {ENV_SECRET_FILE}={path!r}: {exc}") from None
