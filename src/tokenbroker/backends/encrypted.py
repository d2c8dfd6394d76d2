"""Encryption at rest: access tokens are Fernet-encrypted before any backend sees them.

Keys come from ``TOKENBROKER_ENCRYPTION_KEY``: one or more Fernet keys, comma-separated,
newest first. The newest encrypts; every key decrypts, so keys can be rotated by
prepending a new one and dropping the old one once its tokens have been refreshed
(4 hours for Wix). A stored token that no key decrypts (a dropped key, a plaintext
token from before encryption was turned on, a damaged value) reads as missing, with a
warning: the broker fetches a new one and overwrites it.

The wrapper works over any ``Store``: backends never see a plaintext token, and
plugins get encryption without writing a line for it.

Encryption cannot be turned off by accident. An encrypted store keeps a marker
(a reserved installation record, readable without the key) holding a *canary*
encrypted with the newest key. A process without the key runs its store behind
``PlaintextGuard``, which refuses, with a ``ConfigError`` naming
``TOKENBROKER_ENCRYPTION_KEY``, to read or write tokens of a marked store, or to
hand out or overwrite anything that looks like ciphertext; a process whose keys
open neither the canary nor the tokens is refused the same way. Rotating keys
(a new key first, the old one after it) re-encrypts the canary with the new key.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Final

import attrs

from ..core.clock import to_datetime
from ..core.errors import ConfigError
from ..core.flow import Flow, run_async, run_sync
from ..core.installation import Installation
from ..core.ops import DeleteToken, GetInstallation, GetToken, PutInstallation, PutToken
from ..core.protocols import Store
from .wrapper import StoreWrapper

if TYPE_CHECKING:
    from cryptography.fernet import MultiFernet

    from ..core.token import Token, TokenKey

log = logging.getLogger("tokenbroker.store")

PREFIX: Final = "fernet:"
ENV: Final = "TOKENBROKER_ENCRYPTION_KEY"
MARKER_APP: Final = "tokenbroker~meta"
MARKER_INSTANCE: Final = "encryption"
"""The reserved installation record that says a store's tokens are encrypted."""
_CANARY: Final = b"tokenbroker encryption canary"


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


def _marker_canary(marker: Installation | None) -> str | None:
    canary = marker.extra.get("canary") if marker is not None else None
    return canary if isinstance(canary, str) and canary else None


def _marker(canary: str) -> Installation:
    now = to_datetime(time.time())
    return Installation(
        app_id=MARKER_APP,
        instance_id=MARKER_INSTANCE,
        installed_at=now,
        updated_at=now,
        extra={"encrypted": True, "canary": canary},
    )


class EncryptedStore(StoreWrapper):
    """A ``Store`` whose access tokens are encrypted in the wrapped store."""

    def __init__(self, inner: Store, keys: str | Sequence[str]) -> None:
        super().__init__(inner)
        self._fernet = make_fernet(keys)
        self._newest = make_fernet(parse_keys(keys)[:1])
        self._checked = False
        self._warned: set[str] = set()
        self._lock = threading.Lock()

    # -- the marker ---------------------------------------------------------------
    def _check_flow(self) -> Flow[None]:
        """Mark the store as encrypted, or make sure these keys are the store's."""
        if self._checked:
            return
        from cryptography.fernet import InvalidToken  # noqa: PLC0415

        marker = yield from GetInstallation(MARKER_APP, MARKER_INSTANCE)
        canary = _marker_canary(marker)
        if canary is None:
            sealed = self._fernet.encrypt(_CANARY).decode()
            yield from PutInstallation(_marker(sealed))
        else:
            try:
                self._fernet.decrypt(canary.encode())
            except InvalidToken:
                raise ConfigError(
                    f"{ENV}: none of its keys opens the tokens in {self.url}: they were "
                    "encrypted with another key; give that key too (newest first)"
                ) from None
            try:
                self._newest.decrypt(canary.encode())
            except InvalidToken:  # keys were rotated: the canary follows the newest
                rotated = self._fernet.rotate(canary.encode()).decode()
                yield from PutInstallation(_marker(rotated))
        with self._lock:
            self._checked = True

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
            self._warn(value, "stored token for %s is not encrypted; treating it as missing", token)
            return None
        try:
            plain = self._fernet.decrypt(value[len(PREFIX) :].encode()).decode()
        except (InvalidToken, UnicodeDecodeError):
            self._warn(
                value,
                "stored token for %s cannot be decrypted with any configured key; "
                "treating it as missing",
                token,
            )
            return None
        return attrs.evolve(token, access_token=plain)

    def _warn(self, value: str, message: str, token: Token) -> None:
        """Warn once per unreadable value: a read and the write after it see it twice."""
        with self._lock:
            if value in self._warned:
                return
            if len(self._warned) > 10_000:
                self._warned.clear()
            self._warned.add(value)
        log.warning(message, token.key)

    def _ciphertext_of(self, stored: Token | None, only: str) -> str | None:
        """The stored ciphertext of plaintext ``only``, if that is what is stored.

        Fernet ciphertexts differ each time, so ``delete_token(only=...)`` compares
        plaintexts here and then compare-and-deletes the exact stored ciphertext.
        """
        opened = self._open(stored)
        if stored is None or opened is None or opened.access_token != only:
            return None
        return stored.access_token

    def _unreadable(self, stored: Token | None) -> str | None:
        """The stored value if no key opens it (it may then be replaced)."""
        if stored is None or self._open(stored) is not None:
            return None
        return stored.access_token

    # -- flows ------------------------------------------------------------------
    def _get_flow(self, key: TokenKey) -> Flow[Token | None]:
        yield from self._check_flow()
        return self._open((yield from GetToken(key)))

    def _put_flow(self, token: Token, fence: int) -> Flow[bool]:
        yield from self._check_flow()
        sealed = self._seal(token)
        if (yield from PutToken(sealed, fence)):
            return True
        # Refused as older than what is stored: fine, unless what is stored is
        # unreadable (damaged, or plaintext from before encryption), which counts
        # as missing and is overwritten. The marker check above has made sure that
        # these keys are the store's, so a colleague's ciphertext is never lost.
        unreadable = self._unreadable((yield from GetToken(token.key)))
        if unreadable is None:
            return False
        yield from DeleteToken(token.key, only=unreadable)
        return (yield from PutToken(sealed, fence))

    def _delete_flow(self, key: TokenKey, only: str | None) -> Flow[bool]:
        if only is None:
            return (yield from DeleteToken(key))
        target = self._ciphertext_of((yield from GetToken(key)), only)
        return target is not None and (yield from DeleteToken(key, only=target))

    # -- tokens -----------------------------------------------------------------
    def get_token(self, key: TokenKey) -> Token | None:
        return run_sync(self._get_flow(key), self._port)

    def put_token(self, token: Token, *, fence: int = 0) -> bool:
        return run_sync(self._put_flow(token, fence), self._port)

    def delete_token(self, key: TokenKey, *, only: str | None = None) -> bool:
        return run_sync(self._delete_flow(key, only), self._port)

    async def aget_token(self, key: TokenKey) -> Token | None:
        return await run_async(self._get_flow(key), self._port)

    async def aput_token(self, token: Token, *, fence: int = 0) -> bool:
        return await run_async(self._put_flow(token, fence), self._port)

    async def adelete_token(self, key: TokenKey, *, only: str | None = None) -> bool:
        return await run_async(self._delete_flow(key, only), self._port)


class PlaintextGuard(StoreWrapper):
    """The store of a process without ``TOKENBROKER_ENCRYPTION_KEY``.

    Tokens pass through as plaintext, unless the store is encrypted: then every
    token read and write is a ``ConfigError`` naming the setting, so ciphertext
    is never handed out and plaintext never written over it. Deleting passes
    (forgetting a token needs no key).
    """

    def __init__(self, inner: Store) -> None:
        super().__init__(inner)
        self._checked = False

    def _refusal(self) -> ConfigError:
        return ConfigError(
            f"the tokens in {self.url} are encrypted: set {ENV} to the store's key "
            "(without it no token is read or written)"
        )

    def _check_flow(self) -> Flow[None]:
        if self._checked:
            return
        if _marker_canary((yield from GetInstallation(MARKER_APP, MARKER_INSTANCE))):
            raise self._refusal()
        self._checked = True

    def _plain(self, stored: Token | None) -> Token | None:
        # A store encrypted before markers existed: its tokens still say so.
        if stored is not None and stored.access_token.startswith(PREFIX):
            raise self._refusal()
        return stored

    def _get_flow(self, key: TokenKey) -> Flow[Token | None]:
        yield from self._check_flow()
        return self._plain((yield from GetToken(key)))

    def _put_flow(self, token: Token, fence: int) -> Flow[bool]:
        yield from self._check_flow()
        self._plain((yield from GetToken(token.key)))
        return (yield from PutToken(token, fence))

    def get_token(self, key: TokenKey) -> Token | None:
        return run_sync(self._get_flow(key), self._port)

    def put_token(self, token: Token, *, fence: int = 0) -> bool:
        return run_sync(self._put_flow(token, fence), self._port)

    async def aget_token(self, key: TokenKey) -> Token | None:
        return await run_async(self._get_flow(key), self._port)

    async def aput_token(self, token: Token, *, fence: int = 0) -> bool:
        return await run_async(self._put_flow(token, fence), self._port)
