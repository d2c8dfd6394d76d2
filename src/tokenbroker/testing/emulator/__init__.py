"""A stand-in for the Wix endpoints tokenbroker talks to, served on loopback.

No network reaches Wix from the places tokenbroker is built and tested, so every HTTP
test of the Wix provider runs against this emulator instead. It listens on a real
socket (``http.server.ThreadingHTTPServer`` in a daemon thread) so the code under test
exercises its real transport: connection pools, keep-alive, timeouts, concurrency.

It answers the way DESIGN.md says Wix does:

* ``POST /oauth2/token`` issues a token for an installed app instance,
* ``POST /apps/v1/bi-event`` accepts ``APP_FINISHED_CONFIGURATION``,
* ``GET /apps/v1/instance`` describes the installation,

and lets a test inject faults (errors, non-JSON answers, 429s, slow answers), revoke
tokens, move time through an injected clock, hold requests in flight, and count what
it received.

The package depends only on the standard library and ``attrs`` so that it can be
used, or run as ``tokenbroker emulator``, without the rest of the package. Its
modules: ``server`` (HTTP, knowing nothing of Wix), ``responses`` (Wix's answer
shapes), ``endpoints`` (Wix's records and endpoints) and ``state`` (the
:class:`WixEmulator` a test drives).
"""

from __future__ import annotations

from .endpoints import BI_EVENT_ENDPOINT, ENDPOINTS, INSTANCE_ENDPOINT, TOKEN_ENDPOINT
from .state import WixEmulator

__all__ = [
    "BI_EVENT_ENDPOINT",
    "ENDPOINTS",
    "INSTANCE_ENDPOINT",
    "TOKEN_ENDPOINT",
    "WixEmulator",
]
