"""A generic OAuth 2.0 token endpoint (RFC 6749 4.4, client credentials) on loopback.

What the ``oauth2`` provider is tested against, as the Wix emulator is for ``wix``:
a real socket (the emulator's HTTP server, which reads requests strictly), and
the rules of RFC 6749 for the token endpoint:

* ``POST`` only (3.2), ``application/x-www-form-urlencoded`` only (4.4.2), no
  parameter twice (3.2); ``grant_type=client_credentials`` (4.4.2);
* the client authenticates with HTTP Basic, each part form-urlencoded (2.3.1), or
  with ``client_id`` and ``client_secret`` in the body, never both (2.3);
* success is ``{"access_token", "token_type", "expires_in"}`` with
  ``Cache-Control: no-store`` (5.1); errors ``{"error", "error_description"}``
  (5.2): ``invalid_request``, ``invalid_client`` (401 with ``WWW-Authenticate``
  when it came through the header), ``unsupported_grant_type``, ``invalid_scope``.

Every answer carries an ``x-request-id``. Like the emulator it imports only the
standard library and ``attrs`` (and the emulator's server and knob checks).
"""

from __future__ import annotations

from .rules import AUTH_METHODS, REQUEST_ID_HEADER
from .server import OAuth2Server

__all__ = ["AUTH_METHODS", "REQUEST_ID_HEADER", "OAuth2Server"]
