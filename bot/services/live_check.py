"""`quorum check-config --live`: every Slack id in the policy checked against the workspace:
people are full, active, human members of it, user groups exist (and who in them never counts),
channels exist and the bot can work there."""

from __future__ import annotations

import asyncio
import re
from collections.abc import Awaitable, Iterable, Sequence
from dataclasses import dataclass
from typing import TypeVar

from bot.domain.channels import channel_refusal
from bot.domain.people import person_refusal
from bot.policy import Policy
from bot.policy.slack_ids import SlackIdKind, SlackIdRef, slack_ids
from bot.ports import Directory, Workspace

T = TypeVar("T")

# Lookups in flight at once: users.info is a Tier 4 method, and the client waits out 429s.
CONCURRENCY = 8

_MENTION = re.compile(r"<@([A-Z0-9]+)>")


@dataclass(frozen=True, slots=True)
class Finding:
    """One thing wrong at `path` (a key path as policy errors print it). A `warning` does not
    make the policy unusable (a user group member who will never count)."""

    path: str
    message: str
    warning: bool = False


@dataclass(frozen=True, slots=True)
class LiveReport:
    findings: tuple[Finding, ...]
    users: int  # distinct users asked about (policy ids and user group members)
    usergroups: int
    channels: int

    @property
    def problems(self) -> tuple[Finding, ...]:
        return tuple(f for f in self.findings if not f.warning)


async def check_live(
    policy: Policy, directory: Directory, workspace: Workspace, *, concurrency: int = CONCURRENCY
) -> LiveReport:
    """Ask Slack about every user, user group and channel the policy names, each once; the
    findings are in the policy's key order. Raises whatever the ports raise when Slack cannot
    be asked (a missing user, group or channel is a finding, not an error)."""
    refs = slack_ids(policy)
    limit = asyncio.Semaphore(concurrency)

    async def each(calls: Iterable[Awaitable[T]]) -> list[T]:
        async def bounded(call: Awaitable[T]) -> T:
            async with limit:
                return await call

        return list(await asyncio.gather(*(bounded(call) for call in calls)))

    installation = await directory.installation()
    scopes = await workspace.scopes()
    group_ids = _ids(refs, SlackIdKind.USERGROUP)
    channel_ids = _ids(refs, SlackIdKind.CHANNEL)
    groups = dict(zip(group_ids, await each(map(workspace.usergroup, group_ids)), strict=True))
    user_ids = list(
        dict.fromkeys(
            [
                *_ids(refs, SlackIdKind.USER),
                *(member for members in groups.values() for member in members or ()),
            ]
        )
    )
    people = dict(zip(user_ids, await each(directory.user(uid) for uid in user_ids), strict=True))
    channels = dict(zip(channel_ids, await each(map(workspace.channel, channel_ids)), strict=True))

    findings: list[Finding] = []
    for ref in refs:
        if ref.kind is SlackIdKind.USER:
            refusal: str | None = person_refusal(ref.id, people[ref.id], installation)
            if refusal is not None:
                findings.append(Finding(ref.path, _plain(refusal)))
        elif ref.kind is SlackIdKind.USERGROUP:
            members = groups[ref.id]
            if members is None:
                findings.append(Finding(ref.path, f"Slack has no user group {ref.id}"))
            elif not members:
                findings.append(
                    Finding(ref.path, f"user group {ref.id} has no members", warning=True)
                )
            for member in sorted(members or ()):
                refusal = person_refusal(member, people[member], installation)
                if refusal is not None:
                    findings.append(Finding(ref.path, _as_member(member, refusal), warning=True))
        else:
            refusal = channel_refusal(ref.id, channels[ref.id], scopes=scopes)
            if refusal is not None:
                findings.append(Finding(ref.path, refusal))
    return LiveReport(
        findings=tuple(findings),
        users=len(user_ids),
        usergroups=len(group_ids),
        channels=len(channel_ids),
    )


def _ids(refs: Sequence[SlackIdRef], kind: SlackIdKind) -> list[str]:
    return list(dict.fromkeys(ref.id for ref in refs if ref.kind is kind))


def _plain(sentence: str) -> str:
    """A sentence written for Slack, in the policy errors' style: `<@U1>` mentions become the
    bare id, and there is no closing full stop."""
    return _MENTION.sub(r"\1", sentence).rstrip(".")


def _as_member(member: str, refusal: str) -> str:
    # "member U1 is a guest …" where the sentence starts with the person, else "member U1: …"
    lead = "member " if refusal.startswith(f"<@{member}>") else f"member {member}: "
    return f"{lead}{_plain(refusal)} (members who fail these checks never count)"
