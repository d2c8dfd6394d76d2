"""Storage backends: memory, SQL (SQLAlchemy), Redis, the encryption wrapper and
the one record codec they share. Backends import only ``core``; a URL picks one
through ``tokenbroker.plugins.resolve.store_from_url``."""
