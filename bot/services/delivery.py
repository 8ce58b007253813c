"""deliver_due: send decided requests' callbacks from the outbox, with backoff, exactly once."""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime

from bot.domain import events
from bot.domain.backoff import gives_up, next_attempt
from bot.domain.model import Delivery, DeliveryState, Event
from bot.ports import DeliveryResult
from bot.services.deps import Deps
from bot.services.jobs import Job

log = logging.getLogger(__name__)


async def deliver_due(deps: Deps) -> int:
    """Claim due deliveries under a lease, attempt them (concurrently: one slow pipeline does
    not hold up the others), record every outcome in one transaction. Returns how many were
    attempted. A crash before the outcomes are recorded leaves the leases to expire and those
    rows are retried, with the same webhook-id, so receivers can drop the duplicate."""
    now = deps.clock.now()
    async with deps.database.unit_of_work() as uow:
        claimed = list(
            await uow.outbox.claim_due(now, deps.tuning.batch_size, now + deps.tuning.lease)
        )
        await uow.commit()
    if not claimed:
        return 0
    results = await asyncio.gather(*(_attempt(deps, delivery) for delivery in claimed))
    await _record(deps, list(zip(claimed, results, strict=True)))
    deps.wake(Job.ANNOUNCE)
    return len(claimed)


async def _attempt(deps: Deps, delivery: Delivery) -> DeliveryResult:
    notifier = deps.notifiers.get(delivery.target)
    if notifier is None:
        detail = f"no adapter for {delivery.target!r}"
        return DeliveryResult(ok=False, detail=detail, permanent=True)
    try:
        return await notifier.deliver(delivery)
    except Exception as exc:  # an adapter bug must not stop the other deliveries
        log.exception("delivery %s raised", delivery.id)
        return DeliveryResult(ok=False, detail=f"internal error: {type(exc).__name__}")


def _outcome(deps: Deps, delivery: Delivery, result: DeliveryResult, now: datetime) -> Event:
    """Apply the attempt's result to `delivery`; the audit event that records it."""
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
    return event


async def _record(deps: Deps, attempted: list[tuple[Delivery, DeliveryResult]]) -> None:
    now = deps.clock.now()
    recorded = [_outcome(deps, delivery, result, now) for delivery, result in attempted]
    deliveries = [delivery for delivery, _ in attempted]
    async with deps.database.unit_of_work() as uow:
        await uow.outbox.record_attempts(deliveries)
        await uow.events.append_many(recorded)
        # Bump the requests' revisions: their cards show the callback's status.
        await uow.requests.touch_many([delivery.request_id for delivery in deliveries])
        await uow.commit()
