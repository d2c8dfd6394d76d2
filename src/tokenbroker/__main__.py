"""``python -m tokenbroker``."""

from .cli import main

main()
