"""Encryption at rest: access tokens are Fernet-encrypted before any backend sees them.

Keys come from ``TOKENBROKER_ENCRYPTION_KEY``: one or more Fernet keys, comma-separated,
newest first. The newest encrypts; every key decrypts, so keys can be rotated by
prepending a new one and dropping the old one once its tokens have been refreshed
(4 hours for Wix). A stored token that no key decrypts (a dropped key, a plaintext
token from before encryption was turned on, a damaged value) reads as missing, with a
warning: the broker fetches a new one and overwrites it.

The wrapper works over any ``Store``: backends never see a plaintext token, and
plugins get encryption without writing a line for it.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Final

import attrs

from ..core.errors import ConfigError
from ..core.flow import Flow, run_async, run_sync
from ..core.ops import DeleteToken, GetToken, PutToken
from ..core.protocols import Store

if TYPE_CHECKING:
    from cryptography.fernet import MultiFernet

    from ..core.installation import Installation
    from ..core.protocols import Lease
    from ..core.token import Token, TokenKey

log = logging.getLogger("tokenbroker.store")

PREFIX: Final = "fernet:"
ENV: Final = "TOKENBROKER_ENCRYPTION_KEY"


def parse_keys(value: str | Sequence[str]) -> list[str]:
    keys = value.split(",") if isinstance(value, str) else list(value)
    keys = [k.strip() for k in keys if k.strip()]
    if not keys:
        raise ConfigError(f"{ENV} holds no key")
    return keys


def make_fernet(keys: str | Sequence[str]) -> MultiFernet:
    try:
        from cryptography.fernet import Fernet, MultiFernet  # noqa: PLC0415
    except ModuleNotFoundError:
        raise ConfigError(
            f"{ENV} is set but the cryptography package is missing; "
            "install it with: pip install 'tokenbroker[encryption]'"
        ) from None
    fernets = []
    for position, key in enumerate(parse_keys(keys), start=1):
        try:
            fernets.append(Fernet(key))
        except (ValueError, TypeError):
            raise ConfigError(
                f"{ENV}: key #{position} is not a Fernet key (32 url-safe base64 bytes); "
                "make one with: tokenbroker encryption-key"
            ) from None
    return MultiFernet(fernets)


def new_key() -> str:
    from cryptography.fernet import Fernet  # noqa: PLC0415

    return Fernet.generate_key().decode()


@attrs.frozen
class _Inner:
    store: Store


class EncryptedStore:
    """A ``Store`` whose access tokens are encrypted in the wrapped store."""

    def __init__(self, inner: Store, keys: str | Sequence[str]) -> None:
        self.inner = inner
        self._port = _Inner(inner)  # what the flows' ops act on
        self._fernet = make_fernet(keys)
        self.shared = inner.shared
        self.url = inner.url

    def __repr__(self) -> str:
        return f"EncryptedStore({self.inner!r})"

    # -- the codec --------------------------------------------------------------
    def _seal(self, token: Token) -> Token:
        sealed = self._fernet.encrypt(token.access_token.encode()).decode()
        return attrs.evolve(token, access_token=PREFIX + sealed)

    def _open(self, token: Token | None) -> Token | None:
        from cryptography.fernet import InvalidToken  # noqa: PLC0415

        if token is None:
            return None
        value = token.access_token
        if not value.startswith(PREFIX):
            log.warning("stored token for %s is not encrypted; treating it as missing", token.key)
            return None
        try:
            plain = self._fernet.decrypt(value[len(PREFIX) :].encode()).decode()
        except (InvalidToken, UnicodeDecodeError):
            log.warning(
                "stored token for %s cannot be decrypted with any configured key; "
                "treating it as missing",
                token.key,
            )
            return None
        return attrs.evolve(token, access_token=plain)

    def _ciphertext_of(self, stored: Token | None, only: str) -> str | None:
        """The stored ciphertext of plaintext ``only``, if that is what is stored.

        Fernet ciphertexts differ each time, so ``delete_token(only=...)`` compares
        plaintexts here and then compare-and-deletes the exact stored ciphertext.
        """
        opened = self._open(stored)
        if stored is None or opened is None or opened.access_token != only:
            return None
        return stored.access_token

    # -- tokens -----------------------------------------------------------------
    def get_token(self, key: TokenKey) -> Token | None:
        return self._open(self.inner.get_token(key))

    def _unreadable(self, stored: Token | None) -> str | None:
        """The stored ciphertext if no key opens it (it may then be replaced)."""
        if stored is None or self._open(stored) is not None:
            return None
        return stored.access_token

    def _put_flow(self, token: Token) -> Flow[bool]:
        sealed = self._seal(token)
        if (yield from PutToken(sealed)):
            return True
        # Refused as older than what is stored: fine, unless what is stored is
        # unreadable, which counts as missing and is overwritten.
        unreadable = self._unreadable((yield from GetToken(token.key)))
        if unreadable is None:
            return False
        yield from DeleteToken(token.key, only=unreadable)
        return (yield from PutToken(sealed))

    def _delete_flow(self, key: TokenKey, only: str | None) -> Flow[bool]:
        if only is None:
            return (yield from DeleteToken(key))
        target = self._ciphertext_of((yield from GetToken(key)), only)
        return target is not None and (yield from DeleteToken(key, only=target))

    def put_token(self, token: Token) -> bool:
        return run_sync(self._put_flow(token), self._port)

    def delete_token(self, key: TokenKey, *, only: str | None = None) -> bool:
        return run_sync(self._delete_flow(key, only), self._port)

    async def aget_token(self, key: TokenKey) -> Token | None:
        return self._open(await self.inner.aget_token(key))

    async def aput_token(self, token: Token) -> bool:
        return await run_async(self._put_flow(token), self._port)

    async def adelete_token(self, key: TokenKey, *, only: str | None = None) -> bool:
        return await run_async(self._delete_flow(key, only), self._port)

    # -- the rest passes through ------------------------------------------------
    def acquire_lease(self, key: TokenKey, ttl: float) -> Lease | None:
        return self.inner.acquire_lease(key, ttl)

    def release_lease(self, lease: Lease) -> bool:
        return self.inner.release_lease(lease)

    async def aacquire_lease(self, key: TokenKey, ttl: float) -> Lease | None:
        return await self.inner.aacquire_lease(key, ttl)

    async def arelease_lease(self, lease: Lease) -> bool:
        return await self.inner.arelease_lease(lease)

    def get_installation(self, app_id: str, instance_id: str) -> Installation | None:
        return self.inner.get_installation(app_id, instance_id)

    def put_installation(self, installation: Installation) -> bool:
        return self.inner.put_installation(installation)

    def iter_installations(
        self, app_id: str, *, include_removed: bool = False
    ) -> Iterator[Installation]:
        return self.inner.iter_installations(app_id, include_removed=include_removed)

    async def aget_installation(self, app_id: str, instance_id: str) -> Installation | None:
        return await self.inner.aget_installation(app_id, instance_id)

    async def aput_installation(self, installation: Installation) -> bool:
        return await self.inner.aput_installation(installation)

    def close(self) -> None:
        self.inner.close()

    async def aclose(self) -> None:
        await self.inner.aclose()
