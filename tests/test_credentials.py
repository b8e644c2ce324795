"""Venue credentials read at start: Coinbase's key from the environment and its file, and
the adapters built with them."""

from __future__ import annotations

import base64
from pathlib import Path

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ed25519

from collector.credentials import load_coinbase_credentials, make_adapter
from collector.exchanges import known_exchanges
from collector.exchanges.coinbase import CoinbaseAdapter

NOW = 1_786_309_600_000_000


def _write(tmp_path: Path, text: str) -> str:
    path = tmp_path / "key"
    path.write_text(text)
    return str(path)


def test_no_variables_no_credentials() -> None:
    assert load_coinbase_credentials({}) is None
    adapter = make_adapter("coinbase", {})
    assert isinstance(adapter, CoinbaseAdapter)
    assert adapter.credentials is None


@pytest.mark.parametrize("name", sorted(set(known_exchanges()) - {"coinbase"}))
def test_other_venues_take_no_credentials(name: str) -> None:
    assert make_adapter(name, {"COINBASE_API_KEY": "k"}).name == name


def test_eddsa_key_from_base64(tmp_path: Path) -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    seed = key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    public = key.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    secret = base64.b64encode(seed + public).decode()
    env = {"COINBASE_API_KEY": "uuid-key", "COINBASE_API_SECRET_FILE": _write(tmp_path, secret)}
    credentials = load_coinbase_credentials(env)
    assert credentials is not None
    token = credentials.token(NOW)
    assert jwt.get_unverified_header(token)["alg"] == "EdDSA"
    claims = jwt.decode(
        token,
        key.public_key(),
        algorithms=["EdDSA"],
        options={"verify_exp": False, "verify_nbf": False},
    )
    assert claims["sub"] == "uuid-key"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"COINBASE_API_KEY": "k"}, "COINBASE_API_KEY is set but COINBASE_API_SECRET_FILE is not"),
        (
            {"COINBASE_API_SECRET_FILE": "/x"},
            "COINBASE_API_SECRET_FILE is set but COINBASE_API_KEY",
        ),
        (
            {"COINBASE_API_KEY": "k", "COINBASE_API_SECRET_FILE": "/nonexistent/key.pem"},
            "cannot read key file: No such file or directory",
        ),
    ],
)
def test_credential_errors_at_start(env: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load_coinbase_credentials(env)


def test_an_unparsable_key_never_shows_the_secret(tmp_path: Path) -> None:
    secret = "-----BEGIN EC PRIVATE KEY-----\nc2VjcmV0LXN0dWZm\n-----END EC PRIVATE KEY-----\n"
    env = {"COINBASE_API_KEY": "k", "COINBASE_API_SECRET_FILE": _write(tmp_path, secret)}
    with pytest.raises(ValueError, match="not a readable PEM private key") as info:
        load_coinbase_credentials(env)
    assert "c2VjcmV0" not in str(info.value)
    env["COINBASE_API_SECRET_FILE"] = _write(tmp_path, "not-a-key!")
    with pytest.raises(ValueError, match="neither a PEM key nor base64"):
        load_coinbase_credentials(env)
