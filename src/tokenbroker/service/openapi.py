"""The OpenAPI 3.1 document of the token API and the proxy, served at ``/v1/openapi.json``.

Written by hand (it is small, and it says what the code promises rather than what a
generator guesses); ``tests/service/test_token_api_docs.py`` checks it names every
route the service has.
"""

from __future__ import annotations

from typing import Any, Final

TOKEN_ROUTE: Final = "/v1/apps/{name}/instances/{instance_id}/token"  # noqa: S105 - a route
PROXY_ROUTE: Final = "/v1/apps/{name}/instances/{instance_id}/wix/{path}"
PROXY_METHODS: Final = ("get", "post", "put", "patch", "delete", "head", "options")

_ERROR: Final = {"$ref": "#/components/schemas/Error"}


def _answer(description: str, *, retry: bool = False) -> dict[str, Any]:
    answer: dict[str, Any] = {
        "description": description,
        "content": {"application/json": {"schema": _ERROR}},
    }
    if retry:
        answer["headers"] = {
            "Retry-After": {
                "description": "Seconds to wait before asking again.",
                "schema": {"type": "integer", "minimum": 1},
            }
        }
    return answer


_AUTH_ERRORS: Final = {
    "401": _answer(
        "No valid service key: missing, malformed, unknown or revoked (one answer for all)."
    ),
    "403": _answer("The key lacks the scope, or does not cover this app."),
    "404": _answer("No such app is served here (or no such route)."),
}
_TOKEN_ERRORS: Final = {
    "409": _answer("The app is not installed on the instance (or was removed)."),
    "429": _answer(
        "Wix rate-limits the app, or tokenbroker backs off from an instance Wix keeps refusing.",
        retry=True,
    ),
    "502": _answer("Wix answered the token request with an error."),
    "503": _answer("Wix cannot be reached (or its circuit is open), or the store is down."),
}
_PARAMETERS: Final = [
    {
        "name": "name",
        "in": "path",
        "required": True,
        "description": "The app's name in the config (`default` for the environment's app).",
        "schema": {"type": "string", "pattern": "^[a-z][a-z0-9_-]{0,62}$"},
    },
    {
        "name": "instance_id",
        "in": "path",
        "required": True,
        "description": "The Wix app instance id of the installation.",
        "schema": {"type": "string", "maxLength": 256},
    },
]


def _proxy_operation(method: str) -> dict[str, Any]:
    return {
        "operationId": f"proxy{method.capitalize()}",
        "summary": "Call the app's API as the installation, without seeing its token.",
        "description": (
            "Forwards to the app's API URL plus `/{path}`, query and body unchanged, with "
            "`Authorization` set to the instance's token and the service key removed. "
            "Hop-by-hop headers are dropped. The answer, whatever its status, is the "
            "API's own, streamed. Needs the `proxy` scope (or `token`, which implies it)."
        ),
        "tags": ["proxy"],
        "security": [{"serviceKey": []}],
        "parameters": [
            *_PARAMETERS,
            {
                "name": "path",
                "in": "path",
                "required": True,
                "description": (
                    "The API path, e.g. `apps/v1/instance`. Refused (400): `.` or `..` "
                    "segments (encoded or not), `//`, `%2f`, `%5c`, backslashes, `@`, an "
                    "absolute URL, control characters, non-ASCII."
                ),
                "schema": {"type": "string"},
            },
        ],
        "responses": {
            "default": {"description": "The API's own answer, as it came."},
            "400": _answer("A path that could leave the API URL, or a malformed instance id."),
            **_AUTH_ERRORS,
            "413": _answer("The body is over the proxy's limit (`--proxy-max-body`)."),
            "429": _answer(
                "Too many calls in flight for this key (`--key-concurrency`), or a "
                "token back-off (as for the token endpoint).",
                retry=True,
            ),
            **{code: answer for code, answer in _TOKEN_ERRORS.items() if code != "429"},
            "504": _answer("The API did not answer in time."),
        },
    }


def document() -> dict[str, Any]:
    """The OpenAPI document (a fresh dict each time: callers may change theirs)."""
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "tokenbroker token service",
            "version": "1",
            "description": (
                "Tokens for every installation of your apps, for services in any "
                "language, and a proxy that calls the app's API without handing out "
                "the token. Every answer carries `X-Request-Id`; every error is "
                "`{error, message, request_id}`."
            ),
        },
        "paths": {
            TOKEN_ROUTE: {
                "get": {
                    "operationId": "getToken",
                    "summary": "A valid access token for one installation.",
                    "description": (
                        "Served from the broker's near cache, single-flight and store: "
                        "many callers on a cold key make one request to Wix. Needs the "
                        "`token` scope. Answered with `Cache-Control: no-store`."
                    ),
                    "tags": ["tokens"],
                    "security": [{"serviceKey": []}],
                    "parameters": _PARAMETERS,
                    "responses": {
                        "200": {
                            "description": "The token.",
                            "headers": {
                                "Cache-Control": {"schema": {"type": "string", "const": "no-store"}}
                            },
                            "content": {
                                "application/json": {
                                    "schema": {"$ref": "#/components/schemas/Token"}
                                }
                            },
                        },
                        "400": _answer("A malformed instance id."),
                        **_AUTH_ERRORS,
                        **_TOKEN_ERRORS,
                    },
                }
            },
            PROXY_ROUTE: {method: _proxy_operation(method) for method in PROXY_METHODS},
        },
        "components": {
            "securitySchemes": {
                "serviceKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": (
                        "A service key from `tokenbroker service-key add` "
                        "(`tbk_<name>_<secret>`), sent once as `Authorization: Bearer <key>`."
                    ),
                }
            },
            "schemas": {
                "Token": {
                    "type": "object",
                    "required": ["access_token", "token_type", "expires_at", "refresh_at"],
                    "properties": {
                        "access_token": {
                            "type": "string",
                            "description": "Send it raw in `Authorization` (no `Bearer`).",
                        },
                        "token_type": {"type": "string"},
                        "expires_at": {"type": "string", "format": "date-time"},
                        "refresh_at": {
                            "type": "string",
                            "format": "date-time",
                            "description": "When tokenbroker gets a new one: come back then.",
                        },
                    },
                },
                "Error": {
                    "type": "object",
                    "required": ["error", "message", "request_id"],
                    "properties": {
                        "error": {
                            "type": "string",
                            "examples": ["unauthorized", "not_installed", "rate_limited"],
                        },
                        "message": {"type": "string"},
                        "request_id": {"type": "string"},
                    },
                },
            },
        },
    }
