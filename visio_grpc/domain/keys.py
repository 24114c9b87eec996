"""API keys: generated with 256 random bits behind a public prefix, stored only as a hash."""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from visio_grpc.domain.errors import ApiKeyInvalid, ApiKeyMissing, ApiKeyNotFound, ApiKeyRevoked
from visio_grpc.domain.models import ApiKey

KEY_SCHEME = "visio"
_KEY_PATTERN = re.compile(r"^visio_([0-9a-f]{12})_([A-Za-z0-9_-]{43})$")
DEFAULT_OWNER = "default"


class ApiKeyStore(Protocol):
    async def add(self, key: ApiKey, key_hash: str) -> None: ...
    async def find(self, prefix: str) -> tuple[ApiKey, str] | None: ...
    async def list_all(self) -> list[ApiKey]: ...
    async def revoke(self, prefix: str, when: datetime) -> ApiKey | None: ...


@dataclass(frozen=True)
class NewApiKey:
    """A freshly created key: `secret` is the full key, shown to its owner once."""

    key: ApiKey
    secret: str


def hash_key(secret: str) -> str:
    # The key carries 256 random bits, so a fast hash is enough: there is nothing to brute-force.
    return hashlib.sha256(secret.encode()).hexdigest()


def key_from_header(value: str | None) -> str:
    """The key from an Authorization value: the raw key or 'Bearer <key>'."""
    if value is None or not value.strip():
        raise ApiKeyMissing()
    value = value.strip()
    scheme, _, rest = value.partition(" ")
    if rest and scheme.lower() == "bearer":
        value = rest.strip()
    return value


class KeyService:
    def __init__(self, store: ApiKeyStore) -> None:
        self._store = store

    async def create(self, owner: str = DEFAULT_OWNER) -> NewApiKey:
        prefix = secrets.token_hex(6)
        secret = f"{KEY_SCHEME}_{prefix}_{secrets.token_urlsafe(32)}"
        key = ApiKey(prefix=prefix, owner=owner, create_time=datetime.now(UTC), revoke_time=None)
        await self._store.add(key, hash_key(secret))
        return NewApiKey(key=key, secret=secret)

    async def list(self) -> list[ApiKey]:
        return await self._store.list_all()

    async def revoke(self, prefix: str) -> ApiKey:
        prefix = prefix.removeprefix(f"{KEY_SCHEME}_").split("_")[0]
        revoked = await self._store.revoke(prefix, datetime.now(UTC))
        if revoked is None:
            raise ApiKeyNotFound(prefix)
        return revoked

    async def authenticate(self, authorization: str | None) -> ApiKey:
        """The active key for an Authorization header value; raises an ApiKey* error otherwise."""
        secret = key_from_header(authorization)
        match = _KEY_PATTERN.match(secret)
        if match is None:
            raise ApiKeyInvalid()
        found = await self._store.find(match.group(1))
        if found is None:
            raise ApiKeyInvalid()
        key, stored_hash = found
        if not hmac.compare_digest(stored_hash, hash_key(secret)):
            raise ApiKeyInvalid()
        if not key.active:
            raise ApiKeyRevoked(key.prefix)
        return key
