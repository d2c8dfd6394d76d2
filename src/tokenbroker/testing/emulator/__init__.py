"""A stand-in for the Wix endpoints tokenbroker talks to, served on loopback.

No network reaches Wix from the places tokenbroker is built and tested, so every HTTP
test of the Wix provider runs against this emulator instead. It listens on a real
socket (a thread per connection) so the code under test exercises its real transport:
connection pools, keep-alive, timeouts, concurrency.

It answers as Wix documents, as Wix's SDK (``@wix/sdk``, ``@wix/app-management``) reads
the answers, and, where neither says, as assumed (each behaviour's source is in a
comment beside it):

* ``POST /oauth2/token`` (Create Access Token) issues a token for an installed app
  instance; an instance not installed is answered ``not_installed_status``,
* ``POST /oauth2/token-info`` (Token Info) describes any token it issued, or answers
  ``{"active": false}``,
* ``POST /apps/v1/bi-event`` (Send BI Event) records any ``eventName``,
* ``GET /apps/v1/instance`` (Get App Instance) describes the installation with Wix's
  documented fields,
* ``POST /oauth/access`` (Wix's legacy OAuth, "custom authentication") exchanges the
  one-time code of ``authorization_code`` for a refresh token and a 5-minute access
  token, and refresh tokens for access tokens (rotating them, by default),

and the same two app-management endpoints on the paths the SDK's generated modules call
on a host of their own (``/devcenter/bi-events/v1/bi-event``,
``/devcenter/app-instance/v1/instance``). Errors come in Wix's standard shape or, with
``error_shape="ietf"``, in RFC 6749's; every answer carries an ``x-wix-request-id``. A
``Bearer `` prefix on ``Authorization`` is accepted and counted.

For the user's side it issues dashboard and widget tokens (``issue_token``) and signs
the legacy ``instance`` parameter (``sign_instance``). It lets a test inject faults
(errors, non-JSON answers, 429s, slow answers), revoke tokens, move time through an
injected clock, hold requests in flight, and count what it received. It reads requests
as strictly as a real server: malformed ones get a 400 (or the status HTTP prescribes),
bodies are bounded, and a connection that does not deliver its request in time is
closed. Every knob checks its value when it is set.

Its modules import only the standard library and ``attrs``, nothing else of
tokenbroker, so the emulator never depends on the code it tests; importing it still
runs ``tokenbroker/__init__``, so it is used with tokenbroker installed. The modules:
``wire`` (reading HTTP/1.1 requests, strictly), ``server`` (connections, knowing
nothing of Wix), ``responses`` (Wix's answer shapes), ``records`` (installations and
issued tokens), ``endpoints`` (the app's endpoints), ``identity`` (Token Info and the
user-side credentials), ``legacy`` (codes and refresh tokens), ``faults`` (the
injected faults), ``checks`` (knob values) and
``state`` (the ``WixEmulator`` a test drives).
"""

from __future__ import annotations

from .endpoints import (
    ACCESS_ENDPOINT,
    BI_EVENT_ENDPOINT,
    ENDPOINTS,
    INSTANCE_ENDPOINT,
    TOKEN_ENDPOINT,
    TOKEN_INFO_ENDPOINT,
)
from .observation import REQUEST_ID_HEADER
from .server import BindError
from .state import WixEmulator

__all__ = [
    "ACCESS_ENDPOINT",
    "BI_EVENT_ENDPOINT",
    "ENDPOINTS",
    "INSTANCE_ENDPOINT",
    "REQUEST_ID_HEADER",
    "TOKEN_ENDPOINT",
    "TOKEN_INFO_ENDPOINT",
    "BindError",
    "WixEmulator",
]
