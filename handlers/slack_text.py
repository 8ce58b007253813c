"""The slash commands' replies (`/freeze`, `/unfreeze`, `/approvals`) as `Mrkdwn`.

Pure rendering, like handlers/blocks.py for the card: every value that a person typed or a
pipeline sent (reasons, versions, services, environments, targets) is escaped, and only the
mentions Quorum means are kept (`mrkdwn.user` of well-formed ids, `mrkdwn.channel`). Built with
bot/domain/mrkdwn.py, so a reply is a `Mrkdwn` or it does not type-check.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from zoneinfo import ZoneInfo

from bot.domain import mrkdwn
from bot.domain.freezes import FreezeWindow
from bot.domain.model import ApprovalRequest, Delegation
from bot.domain.mrkdwn import Mrkdwn, md
from bot.domain.when import describe
from bot.services.commands import Pending
from bot.services.delegations import Delegated
from bot.services.freezes import Ended, Started, scope_text


def internal_error(reference: str) -> Mrkdwn:
    return md("Something went wrong on Quorum's side (reference {}).", reference)


def freeze_started(user: str, started: Started, zone: ZoneInfo, now: datetime) -> Mrkdwn:
    f = started.freeze
    until = md("until {}", describe(f.ends_at, zone, now)) if f.ends_at else "until further notice"
    where = mrkdwn.join(", ", (mrkdwn.channel(c) for c in started.channels))
    return md(
        ":snowflake: {} froze deployments {} {}: {} ({}; announced in {}). End it early with {}.",
        mrkdwn.user(user),
        scope_text(f.environments, f.services),
        until,
        f.reason,
        mrkdwn.code(f.id),
        where,
        mrkdwn.code(f"/unfreeze {f.id}"),
    )


def freeze_ended(user: str, target: str, ended: Ended, zone: ZoneInfo, now: datetime) -> Mrkdwn:
    lines: list[Mrkdwn] = []
    if ended.freezes:
        names = mrkdwn.join(
            ", ",
            (
                md("{} ({})", mrkdwn.code(f.id), scope_text(f.environments, f.services))
                for f in ended.freezes
            ),
        )
        lines.append(md(":sunny: {} ended {}.", mrkdwn.user(user), names))
    else:
        lines.append(md("No ad-hoc freeze covers {}.", target))
    for window in ended.still_frozen_by:
        ends = describe(window.ends_at, zone, now) if window.ends_at else "further notice"
        lines.append(
            md(
                "Still frozen by the calendar window *{}* until {} (from the policy; a release "
                "manager can break glass for an urgent deploy).",
                window.recurring,
                ends,
            )
        )
    return mrkdwn.join("\n", lines)


def help_text(help_: str, unknown: str | None) -> Mrkdwn:
    """The /approvals help (its `<request-id>` placeholders escaped), after `I don't know …`."""
    if unknown is None:
        return mrkdwn.escape(help_)
    return md("I don't know {}.\n{}", mrkdwn.code(f"/approvals {unknown}"), help_)


def _envs(environments: Sequence[str]) -> Mrkdwn:
    return md("in {}", ", ".join(environments)) if environments else md("in every environment")


def delegated(made: Delegated, zone: ZoneInfo, now: datetime) -> Mrkdwn:
    d = made.delegation
    caveat = (
        md(
            " It will not be honoured in {} (the policy's delegation.not_honoured_in).",
            ", ".join(made.not_honoured_in),
        )
        if made.not_honoured_in
        else ""
    )
    return md(
        "{} may now vote on your behalf {} until {} ({}).{} End it with {}.",
        mrkdwn.user(d.delegate),
        _envs(d.environments),
        describe(d.ends_at, zone, now),
        mrkdwn.code(d.id),
        caveat,
        mrkdwn.code("/approvals undelegate"),
    )


def undelegated(revoked: Sequence[Delegation]) -> Mrkdwn:
    names = mrkdwn.join(", ", (mrkdwn.user(d.delegate) for d in revoked))
    return md("Ended your delegation to {}.", names)


def review_recorded(request: ApprovalRequest) -> Mrkdwn:
    return md("Recorded the post-incident review of {}. Thank you.", mrkdwn.code(request.id))


def freeze_list(windows: Sequence[FreezeWindow], zone: ZoneInfo, now: datetime) -> Mrkdwn:
    if not windows:
        return md("No freezes are active or scheduled.")
    lines = [md("*Freezes* (times in your time zone):")]
    for w in windows:
        ends = describe(w.ends_at, zone, now) if w.ends_at else "further notice"
        if w.active_at(now):
            when = md(":snowflake: *now* until {}", ends)
        else:
            when = md("from {} until {}", describe(w.starts_at, zone, now), ends)
        who = (
            md("by {} ({})", mrkdwn.user(w.created_by), mrkdwn.code(w.id))
            if w.created_by
            else md("calendar *{}*", w.recurring)
        )
        lines.append(
            md("• {} {}, {}: {}", when, scope_text(w.environments, w.services), who, w.reason)
        )
    return mrkdwn.join("\n", lines)


def _title(request: ApprovalRequest) -> str:
    version = f" {request.details.version}" if request.details.version else ""
    return f"{request.service or 'unknown service'} → {request.environment}{version}"


def card_link(request: ApprovalRequest) -> Mrkdwn:
    """A link to the request's card labelled with its (escaped) title, and its id."""
    if request.message_ts is None:
        return md("{} ({}, card not posted yet)", _title(request), mrkdwn.code(request.id))
    ts = request.message_ts.replace(".", "")
    url = f"https://slack.com/archives/{request.channel}/p{ts}"
    return md("{} ({})", mrkdwn.link(url, _title(request)), mrkdwn.code(request.id))


def pending(found: Pending, zone: ZoneInfo, now: datetime) -> Mrkdwn:
    lines: list[Mrkdwn] = []
    if found.waiting:
        lines.append(md("*Waiting on you* ({}):", len(found.waiting)))
        for item in found.waiting:
            frozen = (
                md(" — :snowflake: frozen, approvable when the freeze ends") if item.frozen else ""
            )
            lines.append(md("• {}{}", card_link(item.request), frozen))
    else:
        lines.append(md("Nothing is waiting on you."))
    if found.reviews:
        lines.append(md("*Post-incident reviews to record* (break glass):"))
        for request in found.reviews:
            due = request.review_due_at
            overdue = due is not None and due <= now
            when = describe(due, zone, now) if due else "no deadline"
            flag = md(":warning: *overdue*, was due") if overdue else md("due")
            command = mrkdwn.code(f"/approvals review {request.id} <summary>")
            lines.append(md("• {} {} {}: {}", card_link(request), flag, when, command))
    return mrkdwn.join("\n", lines)


def delegations(
    given: Sequence[Delegation], received: Sequence[Delegation], zone: ZoneInfo, now: datetime
) -> Mrkdwn:
    def listed(heading: Mrkdwn, people: Sequence[tuple[str, Delegation]]) -> list[Mrkdwn]:
        if not people:
            return []
        return [heading] + [
            md(
                "• {} {} until {}",
                mrkdwn.user(who),
                _envs(d.environments),
                describe(d.ends_at, zone, now),
            )
            for who, d in people
        ]

    lines = listed(md("*You delegated to:*"), [(d.delegate, d) for d in given]) + listed(
        md("*You may vote on behalf of:*"), [(d.delegator, d) for d in received]
    )
    if not lines:
        return md("You have no delegations, and nobody delegated to you.")
    return mrkdwn.join("\n", lines)


def glass_broken(request: ApprovalRequest) -> Mrkdwn:
    extra = [r for r in request.rules if r.origin == "break-glass"]
    needs = ", ".join(f"{r.name} ({r.approvals} from {r.team})" for r in extra) or "none"
    return md(
        ":rotating_light: Glass broken on {}: the freeze no longer holds it; extra approvals "
        "required: {}. It was announced in {}.",
        mrkdwn.code(request.id),
        needs,
        mrkdwn.channel(request.channel),
    )
