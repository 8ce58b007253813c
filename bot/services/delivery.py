"""deliver_due: send decided requests' callbacks from the outbox, with backoff, exactly once."""

from __future__ import annotations

import logging

from bot.domain import events
from bot.domain.backoff import gives_up, next_attempt
from bot.domain.model import Delivery, DeliveryState
from bot.ports import DeliveryResult
from bot.services.deps import Deps
from bot.services.jobs import Job

log = logging.getLogger(__name__)


async def deliver_due(deps: Deps) -> int:
    """Claim due deliveries under a lease, attempt each once, record the outcome. Returns how
    many were attempted. A crash mid-attempt leaves the lease to expire and the row is retried,
    with the same webhook-id, so receivers can drop the duplicate."""
    now = deps.clock.now()
    async with deps.database.unit_of_work() as uow:
        claimed = list(
            await uow.outbox.claim_due(now, deps.tuning.batch_size, now + deps.tuning.lease)
        )
        await uow.commit()
    for delivery in claimed:
        notifier = deps.notifiers.get(delivery.target)
        if notifier is None:
            result = DeliveryResult(
                ok=False, detail=f"no adapter for {delivery.target!r}", permanent=True
            )
        else:
            try:
                result = await notifier.deliver(delivery)
            except Exception as exc:  # an adapter bug must not stop the other deliveries
                log.exception("delivery %s raised", delivery.id)
                result = DeliveryResult(ok=False, detail=f"internal error: {type(exc).__name__}")
        await _record(deps, delivery, result)
    if claimed:
        deps.wake(Job.ANNOUNCE)
    return len(claimed)


async def _record(deps: Deps, delivery: Delivery, result: DeliveryResult) -> None:
    now = deps.clock.now()
    delivery.attempts += 1
    delivery.last_error = None if result.ok else (result.detail or "failed")
    if result.ok:
        delivery.state = DeliveryState.DELIVERED
        delivery.delivered_at = now
        event = events.callback_delivered(delivery, now)
    elif result.permanent or gives_up(delivery.created_at, now, deps.tuning.retry_window):
        delivery.state = DeliveryState.FAILED
        event = events.callback_failed(delivery, now)
    else:
        delivery.next_attempt_at = next_attempt(
            delivery.attempts,
            now,
            base=deps.tuning.backoff_base,
            cap=deps.tuning.backoff_cap,
            jitter=deps.jitter(),
        )
        event = events.callback_retrying(delivery, now)
    log.info(
        "delivery %s for %s: %s (%s)",
        delivery.id,
        delivery.request_id,
        delivery.state.value,
        result.detail,
    )
    async with deps.database.unit_of_work() as uow:
        await uow.outbox.record_attempt(delivery)
        await uow.events.append(event)
        request = await uow.requests.get_for_update(delivery.request_id)
        if request is not None:
            await uow.requests.save(request)  # bump the revision: the card shows the status
        await uow.commit()
