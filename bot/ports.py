"""The ports the use cases depend on: storage (unit of work), chat, directory, pipelines and clock.

Implemented by `storage/` (unit of work), `handlers/slack_chat.py` (chat, directory) and
`bot/pipelines/<provider>.py` (pipeline delivery). Services see only these Protocols.
"""

from __future__ import annotations

from collections.abc import Collection, Hashable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any, Protocol

from bot.domain.channels import ChannelInfo
from bot.domain.model import (
    ApprovalRequest,
    Delegation,
    Delivery,
    Event,
    Freeze,
    OutgoingMessage,
    ProcessedWebhook,
    RecordedEvent,
    Vote,
)
from bot.domain.mrkdwn import Mrkdwn
from bot.domain.people import Installation, SlackUser
from bot.domain.quorum import Tally


class Clock(Protocol):
    def now(self) -> datetime:
        """The current time, timezone-aware UTC."""
        ...


class ConcurrencyError(Exception):
    """A write lost a race (stale revision, or a unique constraint such as one vote per voter)."""


class DuplicateVoteError(ConcurrencyError):
    """The voter (or the person clicking) already has a vote on this request."""


@dataclass(frozen=True, slots=True)
class RequestLock:
    """What `RequestRepository.lock_many` reads of a locked request: a copy of it at `revision`
    is what is stored once its card position is taken from here."""

    revision: int
    channel: str
    message_ts: str | None
    card_revision: int


@dataclass(frozen=True, slots=True)
class CardDue:
    """A request whose card is out of date (`RequestRepository.list_cards_due`)."""

    request_id: str
    posted: bool  # the card is in Slack (else it is yet to be posted)
    open: bool  # the request is still pending


@dataclass(frozen=True, slots=True)
class CardRef:
    """Where a request's card is; `message_ts` None: not posted yet."""

    request_id: str
    channel: str
    message_ts: str | None


@dataclass(frozen=True, slots=True)
class SyncedCard:
    """The card of `request_id`, at (`channel`, `message_ts`), now shows `revision`."""

    request_id: str
    revision: int
    channel: str
    message_ts: str


class RequestRepository(Protocol):
    async def add(self, request: ApprovalRequest) -> None: ...

    async def get(self, request_id: str) -> ApprovalRequest | None: ...

    async def get_for_update(self, request_id: str) -> ApprovalRequest | None:
        """Like `get`, but locks the row until the unit of work ends (SELECT … FOR UPDATE)."""
        ...

    async def get_many(self, request_ids: Sequence[str]) -> Mapping[str, ApprovalRequest]:
        """Several requests at once (missing ids are left out)."""
        ...

    async def get_many_for_update(
        self, request_ids: Sequence[str]
    ) -> Mapping[str, ApprovalRequest]:
        """`get_for_update` for several requests at once (missing ids are left out)."""
        ...

    async def lock_many(self, request_ids: Sequence[str]) -> Mapping[str, RequestLock]:
        """Lock several requests and return their revisions and card positions (the columns
        written without a revision bump), without loading the rest."""
        ...

    async def save_many(
        self, requests: Sequence[ApprovalRequest], *, only: Sequence[str] | None = None
    ) -> None:
        """`save` for several requests read and locked in this unit of work; `only` limits
        the write to the named fields (the revision is always bumped)."""
        ...

    async def touch_many(self, request_ids: Sequence[str]) -> None:
        """Bump the revision of each request (in id order; missing ids are ignored), so that
        their cards are redrawn: for changes stored elsewhere, such as a callback's outcome."""
        ...

    async def save(self, request: ApprovalRequest) -> None:
        """Write back a changed request. Bumps `revision`; raises ConcurrencyError when the stored
        revision is no longer the one that was read."""
        ...

    async def list_open(self) -> Sequence[ApprovalRequest]: ...

    async def list_cards_due(self, limit: int, *, skip: Collection[str] = ()) -> Sequence[CardDue]:
        """Requests whose Slack card has not been posted yet or shows an older revision, oldest
        first, without loading them; pending requests in `skip` whose card is posted are left
        out (their updates are paced)."""
        ...

    async def mark_cards_synced(self, cards: Sequence[SyncedCard]) -> None:
        """Record where each card is and the revision it now shows (never goes back: a
        revision at or below the recorded one changes nothing). Does not bump `revision`."""
        ...

    async def count_open(self) -> int: ...

    async def list_due(self, now: datetime, limit: int) -> Sequence[ApprovalRequest]:
        """Requests whose `next_due_at` is at or before `now`, earliest first."""
        ...

    async def next_due_at(self) -> datetime | None:
        """The earliest `next_due_at` of any request (None when nothing is due ever)."""
        ...

    async def find_by_external_ref(self, source: str, external_ref: str) -> ApprovalRequest | None:
        """The newest request `source` opened for the provider's deployment `external_ref`."""
        ...

    async def list_reviews_open(self, limit: int) -> Sequence[ApprovalRequest]:
        """Break-glass requests whose post-incident review is not recorded, earliest due first."""
        ...


class VoteRepository(Protocol):
    async def add(self, vote: Vote) -> None:
        """Raises DuplicateVoteError when the voter or the actor already voted on the request."""
        ...

    async def add_many(self, votes: Sequence[Vote]) -> None:
        """Insert several votes at once (group commit). The caller holds the requests' locks and
        has ruled out duplicates; DuplicateVoteError here means the unit of work must be rolled
        back."""
        ...

    async def list_for(self, request_id: str) -> Sequence[Vote]:
        """The request's votes in the order they were cast."""
        ...

    async def list_for_many(self, request_ids: Sequence[str]) -> Mapping[str, Sequence[Vote]]:
        """The votes of several requests, each list in the order cast."""
        ...

    async def list_unannounced(self, limit: int) -> Sequence[tuple[Vote, CardRef]]:
        """Votes not yet posted as a thread reply, oldest first, each with its request's card."""
        ...

    async def mark_announced(self, request_id: str, voter: str, at: datetime) -> None: ...


class EventLog(Protocol):
    async def append(self, event: Event) -> None:
        """Append to the hash-chained audit trail."""
        ...

    async def append_many(self, events: Sequence[Event]) -> None:
        """Append several events, in order, reading the chain's tail once."""
        ...

    async def list_for(self, request_id: str) -> Sequence[Event]: ...

    async def list_recorded(self, request_id: str) -> Sequence[RecordedEvent]:
        """The request's entries with their sequence numbers and hashes, in chain order."""
        ...

    async def verify_chain(self) -> int | None:
        """None when the whole chain verifies, else the sequence number of the first bad entry."""
        ...


class Outbox(Protocol):
    async def add(self, delivery: Delivery) -> None:
        """Queue a delivery in the unit of work; it is stored at the latest when the unit of
        work commits (several added together may be written in one statement)."""
        ...

    async def get_for_request(self, request_id: str) -> Sequence[Delivery]: ...

    async def get_for_requests(
        self, request_ids: Sequence[str]
    ) -> Mapping[str, Sequence[Delivery]]:
        """`get_for_request` for several requests in one read (every id is a key)."""
        ...

    async def count_for_request(self, request_id: str, kind: str) -> int:
        """How many deliveries of `kind` were ever queued for the request (progress budgets)."""
        ...

    async def claim_due(
        self, now: datetime, limit: int, lease_until: datetime
    ) -> Sequence[Delivery]:
        """Pending deliveries due at `now`, leased until `lease_until` so that no other worker
        takes them meanwhile (FOR UPDATE SKIP LOCKED where the database has it)."""
        ...

    async def record_attempts(self, deliveries: Sequence[Delivery]) -> None:
        """Persist the outcome of each attempt (state, attempts, next_attempt_at, last_error,
        delivered_at) and release the leases."""
        ...

    async def next_due_at(self) -> datetime | None: ...

    async def count_pending(self) -> int:
        """Deliveries not yet delivered nor given up."""
        ...


class WebhookLog(Protocol):
    async def get(self, source: str, webhook_id: str) -> ProcessedWebhook | None: ...

    async def add(self, record: ProcessedWebhook) -> None:
        """Raises ConcurrencyError when (source, webhook_id) was already recorded."""
        ...

    async def prune(self, before: datetime, limit: int) -> int:
        """Forget up to `limit` ids received before `before`, oldest first; how many were."""
        ...


@dataclass(frozen=True, slots=True)
class SlackAnswer:
    """The HTTP answer Quorum gave a signed Slack request (replayed verbatim to a replay)."""

    status: int
    content_type: str | None
    body: str


class SlackReplayLog(Protocol):
    """Signed Slack requests already taken, keyed by a digest of signature and timestamp."""

    async def claim_many(self, keys: Sequence[str], at: datetime) -> set[str]:
        """Take every key not taken before (insert-first: a unique key, so two replicas
        claiming one key at once cannot both win); the keys this call took."""
        ...

    async def answers(self, keys: Sequence[str]) -> Mapping[str, SlackAnswer | None]:
        """For each stored key: its first answer, or None while it is not answered yet."""
        ...

    async def record_answers(self, answers: Mapping[str, SlackAnswer]) -> None:
        """Store the answers of keys taken earlier."""
        ...

    async def prune(self, before: datetime, limit: int) -> int:
        """Forget up to `limit` keys taken before `before`, oldest first; how many were."""
        ...


class FreezeRepository(Protocol):
    async def add(self, freeze: Freeze) -> None: ...

    async def get(self, freeze_id: str) -> Freeze | None: ...

    async def list_current(self, now: datetime) -> Sequence[Freeze]:
        """Freezes not ended by `now` (active or upcoming)."""
        ...

    async def end(self, freeze_id: str, at: datetime, by: str) -> None: ...


class DelegationRepository(Protocol):
    async def add(self, delegation: Delegation) -> None: ...

    async def list_active(self, now: datetime) -> Sequence[Delegation]: ...

    async def list_current(self, now: datetime) -> Sequence[Delegation]:
        """Delegations in force at `now` or later: not ended, not revoked by `now` (the
        domain's `active_delegators` picks those in force at a given moment)."""
        ...

    async def list_by_delegator(self, delegator: str, now: datetime) -> Sequence[Delegation]: ...

    async def revoke(self, delegation_id: str, at: datetime) -> None: ...


class MessageQueue(Protocol):
    """Slack messages to send, durably queued and paced (reminders, escalations, notices)."""

    async def add(self, message: OutgoingMessage) -> bool:
        """Queue it; False (nothing written) when its dedupe_key was queued before."""
        ...

    async def claim_due(
        self, now: datetime, limit: int, lease_until: datetime
    ) -> Sequence[OutgoingMessage]: ...

    async def record_attempt(self, message: OutgoingMessage) -> None: ...

    async def count_pending(self) -> int: ...


class UnitOfWork(Protocol):
    """One transaction. `async with uow:` begins; leaving without `commit()` rolls back."""

    requests: RequestRepository
    votes: VoteRepository
    events: EventLog
    outbox: Outbox
    webhooks: WebhookLog
    freezes: FreezeRepository
    delegations: DelegationRepository
    messages: MessageQueue
    slack_replays: SlackReplayLog

    async def __aenter__(self) -> UnitOfWork: ...

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None: ...

    async def commit(self) -> None: ...

    async def rollback(self) -> None: ...

    async def write_mark(self) -> Hashable | None:
        """In a writing unit of work: a value equal to an earlier unit of work's
        `committed_mark` exactly when nothing else was committed to the database since that
        commit (by this process or another), so what that unit of work read and wrote is still
        what is stored. None when the database cannot tell cheaply (then re-read)."""
        ...

    @property
    def committed_mark(self) -> Hashable | None:
        """After `commit()`, when `write_mark()` was taken: the mark a later unit of work sees
        if nothing else is committed in between. Else None."""
        ...


class UnitOfWorkFactory(Protocol):
    def __call__(self) -> UnitOfWork: ...


class Database(Protocol):
    """The storage as a whole: units of work plus health."""

    def unit_of_work(self, *, read_only: bool = False) -> UnitOfWork:
        """A unit of work; `read_only=True` never takes the write lock (and must not write)."""
        ...

    async def ping(self) -> None:
        """Raise when the database cannot be reached."""
        ...


class ChatRateLimited(Exception):
    """Raised by a `Chat` when Slack answered 429: try again after `retry_after` seconds (None
    when Slack did not say). Implementations subclass it together with their own error type."""

    retry_after: float | None = None


class ChatUnavailable(Exception):
    """Raised by a `Chat` when Slack could not be reached or answered with a server error (5xx):
    an outage, not a fault of the message, so a queue keeps it however long the outage lasts.
    Implementations subclass it together with their own error type."""


@dataclass(frozen=True, slots=True)
class PostedMessage:
    channel: str
    ts: str


class Chat(Protocol):
    """What Quorum says in Slack. `blocks` are Block Kit dicts rendered by handlers/blocks.py;
    every `text` is a `Mrkdwn` (bot/domain/mrkdwn.py): escaped, with only Quorum's own mentions."""

    async def post_message(
        self,
        channel: str,
        text: Mrkdwn,
        blocks: Sequence[dict[str, Any]] | None = None,
        thread_ts: str | None = None,
    ) -> PostedMessage: ...

    async def update_message(
        self, channel: str, ts: str, text: Mrkdwn, blocks: Sequence[dict[str, Any]] | None = None
    ) -> None: ...

    async def post_ephemeral(self, channel: str, user: str, text: Mrkdwn) -> None: ...

    async def open_modal(self, trigger_id: str, view: dict[str, Any]) -> None: ...

    async def send_dm(
        self, user: str, text: Mrkdwn, blocks: Sequence[dict[str, Any]] | None = None
    ) -> None: ...

    async def permalink(self, channel: str, ts: str) -> str | None: ...


class Directory(Protocol):
    """Who is who in Slack."""

    async def usergroup_members(self, usergroup: str, *, fresh: bool = False) -> frozenset[str]:
        """The group's members, cached briefly.

        `fresh` (a deciding vote): as Slack answered within the last second."""
        ...

    async def user(self, user_id: str, *, fresh: bool = False) -> SlackUser | None:
        """Who Slack says `user_id` is (`users.info`), cached briefly.

        `fresh`: as Slack answered within the last second.
        None when Slack does not know the user; raises when Slack cannot be asked."""
        ...

    async def installation(self) -> Installation:
        """The workspace, org and app Quorum's token belongs to (asked once, then kept)."""
        ...

    def known_installation(self) -> Installation | None:
        """The installation if it was learnt already, without asking Slack."""
        ...

    def known_usergroup_members(self, usergroup: str) -> frozenset[str] | None:
        """The group's members as Slack last listed them, without asking; None if never asked."""
        ...

    async def user_by_email(self, email: str) -> str | None: ...

    async def user_timezone(self, user: str) -> str | None: ...


class Workspace(Protocol):
    """What Slack says about the policy's user groups and channels (`check-config --live`)."""

    async def usergroup(self, usergroup: str) -> frozenset[str] | None:
        """The group's members, asked now; None when Slack has no such group."""
        ...

    async def channel(self, channel: str) -> ChannelInfo | None:
        """The channel (`conversations.info`); None when Slack has none the bot can see."""
        ...

    async def scopes(self) -> frozenset[str] | None:
        """The bot token's OAuth scopes; None when Slack does not say."""
        ...


@dataclass(frozen=True, slots=True)
class DeliveryResult:
    """The outcome of one delivery attempt. `permanent` errors (most 4xx) are not retried."""

    ok: bool
    detail: str = ""
    permanent: bool = False


class PipelineNotifier(Protocol):
    """Delivers a decision back to the pipeline that asked (one implementation per provider)."""

    def delivery_payload(self, request: ApprovalRequest, votes: Sequence[Vote]) -> dict[str, Any]:
        """What to deliver for the decided `request`, stored in the outbox in the same
        transaction as the decision, so every retry sends the same thing."""
        ...

    async def deliver(self, delivery: Delivery) -> DeliveryResult: ...


@dataclass(frozen=True, slots=True)
class CardStatus:
    """What the card shows besides the request and its votes. Each note is shown escaped unless
    it is a `Mrkdwn` (bot/domain/mrkdwn.py), which is shown as it is (e.g. a freeze's `<@U…>`)."""

    callback: str | None = None  # "pipeline notified" / "retrying, attempt 4: HTTP 503"
    warnings: tuple[str, ...] = ()
    frozen_note: str | None = None
    next_timer: str | None = None
    offer_break_glass: bool = False  # the policy allows break-glass and it was not used yet


class Announcer(Protocol):
    """Quorum's voice in Slack, in domain terms (implemented over `Chat` by handlers/)."""

    async def show_card(
        self, request: ApprovalRequest, tally: Tally, votes: Sequence[Vote], status: CardStatus
    ) -> PostedMessage:
        """Post the card when `request.message_ts` is None, else update that message in place."""
        ...

    async def post_votes(self, card: CardRef, votes: Sequence[Vote]) -> None:
        """One thread reply under the (posted) card recording the votes, a line each."""
        ...

    async def post_decision(self, request: ApprovalRequest, tally: Tally) -> None: ...

    async def tell(self, channel: str, user: str, text: Mrkdwn) -> None:
        """An ephemeral message only `user` sees."""
        ...

    async def ask_reject_reason(self, trigger_id: str, request: ApprovalRequest) -> None:
        """Open the modal that asks for a rejection reason."""
        ...
