"""The exceptions tokenbroker raises, all under one base class.

Messages never contain the app secret or an access token: they are built from
status codes, Wix's own ``message`` field (with any secret scrubbed out) and
URLs with their password removed.
"""

from __future__ import annotations


class TokenBrokerError(Exception):
    """Base class of every error tokenbroker raises on purpose."""


class ConfigError(TokenBrokerError, ValueError):
    """A setting is missing or malformed; the message names it."""


class StorageError(TokenBrokerError):
    """A storage backend failed; the message carries the URL without its password.

    A plain ``StorageError`` means the store answered but cannot be used as
    configured (wrong password, unknown database, permissions, not a database,
    read-only): it is raised at once and never waited out. An outage is the
    subclass ``StoreUnavailable``.
    """


class StoreUnavailable(StorageError):
    """The store could not be reached (connection refused, reset or timed out).

    Long-running processes ride this out in degraded mode; one-shot commands fail.
    """


class ProviderError(TokenBrokerError):
    """The token provider answered with something we cannot use.

    ``status`` is the HTTP status (``None`` when there was no HTTP answer) and
    ``wix_message`` the ``message`` field of Wix's error body, when there was one.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        wix_message: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.wix_message = wix_message
        self.code = code


class InvalidCredentials(ProviderError):
    """The app id or secret was refused (401/403). Never retried."""


class InstanceNotInstalled(ProviderError):
    """Wix says the app is not installed on this instance."""


class RateLimited(ProviderError):
    """Wix answered 429; ``retry_after`` is the wait it asked for, in seconds, if any."""

    def __init__(
        self,
        message: str,
        *,
        retry_after: float | None = None,
        status: int | None = 429,
        wix_message: str | None = None,
        code: str | None = None,
    ) -> None:
        super().__init__(message, status=status, wix_message=wix_message, code=code)
        self.retry_after = retry_after


class TransientProviderError(ProviderError):
    """5xx, timeouts or connection errors that outlasted the retry budget."""
