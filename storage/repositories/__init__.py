"""Repositories of the unit of work: map table rows to the domain dataclasses and back.

Each repository works inside the one AsyncSession of its unit of work; nothing here commits.
Domain objects never carry SQLAlchemy state: every read builds fresh dataclasses.
"""

from storage.repositories._common import canonical_json, event_hash
from storage.repositories.delegations import SqlDelegationRepository
from storage.repositories.events import EVENT_CHAIN_LOCK_KEY, GENESIS_HASH, SqlEventLog
from storage.repositories.freezes import SqlFreezeRepository
from storage.repositories.messages import SqlMessageQueue
from storage.repositories.outbox import SqlOutbox
from storage.repositories.requests import SqlRequestRepository
from storage.repositories.slack_replays import SqlSlackReplayLog
from storage.repositories.votes import SqlVoteRepository
from storage.repositories.webhooks import SqlWebhookLog

__all__ = [
    "EVENT_CHAIN_LOCK_KEY",
    "GENESIS_HASH",
    "SqlDelegationRepository",
    "SqlEventLog",
    "SqlFreezeRepository",
    "SqlMessageQueue",
    "SqlOutbox",
    "SqlRequestRepository",
    "SqlSlackReplayLog",
    "SqlVoteRepository",
    "SqlWebhookLog",
    "canonical_json",
    "event_hash",
]
