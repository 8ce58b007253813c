"""Known domain errors: each carries the sentence to show the user, so an edge can show it as is."""

from __future__ import annotations

from bot.domain.eligibility import Refusal, RefusalCode


class DomainError(Exception):
    """A refusal or failure the user caused or can act on; `message` is safe to show them."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class RequestNotFound(DomainError):
    def __init__(self, request_id: str) -> None:
        super().__init__(f"There is no deployment request with id {request_id}.")
        self.request_id = request_id


class VoteRefused(DomainError):
    """A vote that was not recorded; `refusal.message` says exactly why."""

    def __init__(self, refusal: Refusal) -> None:
        super().__init__(refusal.message)
        self.refusal = refusal

    @property
    def code(self) -> RefusalCode:
        return self.refusal.code
