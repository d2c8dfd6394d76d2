"""What every backend's failure classifier shares: the verdict and its words.

``sql/failures.py`` and ``redis/failures.py`` each read their own drivers'
errors; both answer with a ``Diagnosis``, and ``Diagnosis.error`` turns it into
the one error the store raises: ``StoreUnavailable`` for an outage (ridden out
by long-running processes), else a plain ``StorageError`` that says what is wrong.
"""

from __future__ import annotations

from typing import Final

import attrs

from ..core.errors import StorageError, StoreUnavailable

# What each message says is wrong; the tests and the docs' failure model use these words.
UNREACHABLE: Final = "store unreachable"
AUTHENTICATION: Final = "authentication failed (check the user and password in the store URL)"


@attrs.frozen
class Diagnosis:
    """``outage``: wait it out; ``problem``: what is wrong, in words, when known."""

    outage: bool
    problem: str | None = None

    def error(self, what: str, url: str, reason: str, *, limit: int | None = None) -> StorageError:
        """The error for ``what`` failing on ``url`` (redacted) with the driver's
        ``reason``; its message cut at ``limit`` characters, when given."""
        problem = f"{self.problem}: " if self.problem else ""
        message = f"{what} failed on {url}: {problem}{reason}"[:limit]
        return StoreUnavailable(message) if self.outage else StorageError(message)


OUTAGE: Final = Diagnosis(outage=True, problem=UNREACHABLE)
OTHER: Final = Diagnosis(outage=False)
