"""Wix webhooks: the app's public key (``keys``), RS256 verification (``verify``,
needs the ``webhooks`` extra), typed events (``events``) and what each event
does to the installation registry (``records``)."""
