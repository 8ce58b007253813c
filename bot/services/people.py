"""Whether Slack vouches for a person now: the one place the use cases ask (votes, break glass)."""

from __future__ import annotations

from bot.domain.people import Installation, person_refusal
from bot.services.deps import Deps


class SlackUnavailable(Exception):
    """Slack could not be asked; callers refuse (separation of duties fails closed)."""


async def installation(deps: Deps) -> Installation:
    try:
        return await deps.directory.installation()
    except Exception as exc:
        raise SlackUnavailable("auth.test") from exc


async def refusal_for(deps: Deps, user_id: str, *, fresh: bool = False) -> str | None:
    """None when Slack vouches for `user_id` (a full, active, human member of the installation's
    workspace or org); else the sentence why not. Raises SlackUnavailable."""
    where = await installation(deps)
    try:
        person = await deps.directory.user(user_id, fresh=fresh)
    except Exception as exc:
        raise SlackUnavailable("users.info") from exc
    return person_refusal(user_id, person, where)
