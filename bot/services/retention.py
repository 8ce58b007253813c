"""Forget inbound webhook ids once no pipeline would redeliver them.

`processed_webhooks` makes a redelivered webhook (same id) answer with the request it opened
instead of opening another. Senders redeliver within days at most (Standard Webhooks senders
retry for about a day; a person can redeliver a GitHub.com delivery for 3 days, a GitHub
Enterprise Server one for 7), so ids older than the retention window (`QUORUM_WEBHOOK_RETENTION`,
8 days by default) are deleted, and the table stays the size of about a week of deployments. A
redelivery older than the window opens a new request.
"""

from __future__ import annotations

import logging

from bot.services.deps import Deps

log = logging.getLogger(__name__)

_CHUNK = 500  # ids per transaction: a short write, so votes queued behind it wait little


async def prune_webhook_log(deps: Deps) -> int:
    """Delete the ids received before now minus the retention window; how many were."""
    before = deps.clock.now() - deps.tuning.webhook_retention
    pruned = 0
    while True:
        async with deps.database.unit_of_work() as uow:
            deleted = await uow.webhooks.prune(before, _CHUNK)
            await uow.commit()
        pruned += deleted
        if deleted < _CHUNK:
            break
    if pruned:
        log.info("forgot %d inbound webhook ids received before %s", pruned, before.isoformat())
    return pruned
