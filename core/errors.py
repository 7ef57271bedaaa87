"""Errors are data: every refusal the center gives carries its HTTP status, a stable ``error_id`` and details.

Domain modules raise subclasses of ``DomainError`` (``UnknownTicket``,
``IllegalTransition``, ``NotLocated``, …) and know nothing of HTTP beyond the
status number a refusal of that kind deserves; one middleware
(``core.web.app``) turns any of them into the same JSON reply::

    {"error": "no such ticket", "error_id": "unknown-ticket", "details": {"number": "…"}}

Clients and tests branch on ``error_id``, which never changes; ``error`` is the
English sentence for people and may be reworded.
"""

from __future__ import annotations

from typing import Any, ClassVar


class DomainError(Exception):
    """A refusal with a status, a stable identifier and details; its message is safe to show to the client."""

    status: ClassVar[int] = 400
    error_id: ClassVar[str] = "invalid-request"

    def __init__(self, message: str = "", *, details: dict[str, Any] | None = None,
                 error_id: str | None = None, status: int | None = None) -> None:
        super().__init__(message)
        self.details: dict[str, Any] = dict(details or {})
        # An instance may be more precise than its class (a refusal with several causes).
        if error_id is not None:
            self.error_id = error_id  # type: ignore[misc]
        if status is not None:
            self.status = status  # type: ignore[misc]


class BadRequest(DomainError):
    """Input the API refuses (malformed, out of range, fails its schema)."""

    status = 400
    error_id = "invalid-request"


class NotFound(DomainError):
    status = 404
    error_id = "not-found"
