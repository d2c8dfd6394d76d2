"""Wix webhooks: the app's public key (``keys``), RS256 verification (``verify``,
needs the ``webhooks`` extra), the data claim's envelope (``envelope``, with
standardized events in ``domain``), typed events (``events``), deduplication
across the processes sharing a store (``dedup``), and what each event does to the
installation registry (``records``) and to an installation's plan (``plans``)."""
