"""Token providers beyond Wix's, registered through the same plugin hook.

``oauth2``: the OAuth 2.0 client-credentials grant (RFC 6749 4.4) against any
token endpoint, configured by its provider options (``OAuth2Options``). This
layer imports only ``core`` (and ``plugins`` for ``hookimpl``): a provider
knows nothing of the broker that uses it.
"""

from __future__ import annotations

from .oauth2 import OAuth2Provider, oauth2_provider
from .options import OAuth2Options

__all__ = ["OAuth2Options", "OAuth2Provider", "oauth2_provider"]
