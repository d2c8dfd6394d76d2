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

    ``status`` is the HTTP status (``None`` when there was no HTTP answer),
    ``wix_message`` the text of Wix's error body when there was one (its
    ``message``, an OAuth ``error_description``, or a plain-text body, with any
    secret scrubbed out), ``code`` its error code (``applicationError.code`` or
    an OAuth ``error``), and ``request_id`` the answer's ``x-wix-request-id``
    header: what Wix support asks for. The request id also ends the message, as
    `` (request id <id>)``; it is ``None`` when there was no HTTP answer.
    """

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        wix_message: str | None = None,
        code: str | None = None,
        request_id: str | None = None,
    ) -> None:
        super().__init__(with_request_id(message, request_id))
        self.status = status
        self.wix_message = wix_message
        self.code = code
        self.request_id = request_id


def with_request_id(message: str, request_id: str | None) -> str:
    """``message`` with `` (request id <id>)`` appended when there is an id."""
    return f"{message} (request id {request_id})" if request_id else message


class InvalidCredentials(ProviderError):
    """The app id or secret was refused (401/403, or OAuth ``invalid_client``). Never retried."""


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
        request_id: str | None = None,
    ) -> None:
        super().__init__(
            message, status=status, wix_message=wix_message, code=code, request_id=request_id
        )
        self.retry_after = retry_after


class TransientProviderError(ProviderError):
    """5xx, timeouts or connection errors that outlasted the retry budget."""
