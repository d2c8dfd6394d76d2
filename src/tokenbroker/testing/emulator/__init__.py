"""A stand-in for the Wix endpoints tokenbroker talks to, served on loopback.

No network reaches Wix from the places tokenbroker is built and tested, so every HTTP
test of the Wix provider runs against this emulator instead. It listens on a real
socket (a thread per connection) so the code under test exercises its real transport:
connection pools, keep-alive, timeouts, concurrency.

It answers the way DESIGN.md says Wix does:

* ``POST /oauth2/token`` issues a token for an installed app instance,
* ``POST /apps/v1/bi-event`` accepts ``APP_FINISHED_CONFIGURATION``,
* ``GET /apps/v1/instance`` describes the installation,

and lets a test inject faults (errors, non-JSON answers, 429s, slow answers), revoke
tokens, move time through an injected clock, hold requests in flight, and count what
it received. It reads requests as strictly as a real server: malformed ones get a 400
(or the status HTTP prescribes), bodies are bounded, and a connection that does not
deliver its request in time is closed. Every knob checks its value when it is set.

Its modules import only the standard library and ``attrs``, nothing else of
tokenbroker, so the emulator never depends on the code it tests; importing it still
runs ``tokenbroker/__init__``, so it is used with tokenbroker installed. The modules:
``wire`` (reading HTTP/1.1 requests, strictly), ``server`` (connections, knowing
nothing of Wix), ``responses`` (Wix's answer shapes), ``endpoints`` (Wix's records and
endpoints), ``faults`` (the injected faults), ``checks`` (knob values) and ``state``
(the ``WixEmulator`` a test drives).
"""

from __future__ import annotations

from .endpoints import BI_EVENT_ENDPOINT, ENDPOINTS, INSTANCE_ENDPOINT, TOKEN_ENDPOINT
from .server import BindError
from .state import WixEmulator

__all__ = [
    "BI_EVENT_ENDPOINT",
    "ENDPOINTS",
    "INSTANCE_ENDPOINT",
    "TOKEN_ENDPOINT",
    "BindError",
    "WixEmulator",
]
