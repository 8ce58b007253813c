"""Who Slack says a person is, and whether Quorum may let them act: full members of the
installation's own workspace (or Enterprise Grid org) only. Fails closed: a person Slack does not
vouch for is refused, with the sentence shown to them.

Also the click's binding to the installation and to the request's card (`interaction_refusal`).
"""

from __future__ import annotations

from dataclasses import dataclass

from bot.domain import mrkdwn
from bot.domain.mrkdwn import Mrkdwn, md


@dataclass(frozen=True, slots=True)
class SlackUser:
    """The fields of a `users.info` user object that decide whether Quorum trusts the person."""

    id: str
    team_id: str | None
    enterprise_id: str | None = None
    deleted: bool = False
    is_bot: bool = False
    is_app_user: bool = False
    is_restricted: bool = False  # a multi-channel guest
    is_ultra_restricted: bool = False  # a single-channel guest
    is_stranger: bool = False  # Slack Connect: a user of another organisation
    name: str | None = None
    email: str | None = None


@dataclass(frozen=True, slots=True)
class Installation:
    """The workspace (and org) Quorum is installed in and its own app, as `auth.test` and
    `bots.info` report them for the bot token."""

    team_id: str
    enterprise_id: str | None = None
    app_id: str | None = None
    bot_user_id: str | None = None


def person_refusal(
    user_id: str, person: SlackUser | None, installation: Installation
) -> Mrkdwn | None:
    """None when `person` is a full, active, human member of the installation's workspace or
    org; else why not, as the sentence shown to them (or about them, in `check-config --live`)."""
    if person is None:
        return md("Slack does not know the user {}, so Quorum cannot count them.", user_id)
    if person.id != user_id:
        return md("Slack answered for {} when asked about {}.", person.id, user_id)
    who = mrkdwn.user(user_id)
    if person.deleted:
        return md("{}'s Slack account is deactivated.", who)
    if person.is_bot or person.is_app_user or user_id == installation.bot_user_id:
        return md("{} is a bot or app user; only people may approve deployments.", who)
    if person.is_restricted or person.is_ultra_restricted:
        return md("{} is a guest of this workspace; guests may not approve deployments.", who)
    if person.is_stranger or not same_organisation(
        person.team_id, person.enterprise_id, installation
    ):
        return md(
            "{} belongs to another organisation (Slack Connect); only members of this "
            "workspace may approve deployments.",
            who,
        )
    return None


def same_organisation(
    team_id: str | None, enterprise_id: str | None, installation: Installation
) -> bool:
    """The workspace itself, or (Enterprise Grid) another workspace of the same org. An unknown
    team is never the same."""
    if installation.enterprise_id:
        return enterprise_id == installation.enterprise_id
    return team_id is not None and team_id == installation.team_id


@dataclass(frozen=True, slots=True)
class Interaction:
    """Where a click or form submission says it came from (every field as Slack's payload has it;
    none is trusted until compared)."""

    team_id: str | None
    enterprise_id: str | None
    api_app_id: str | None
    user_team_id: str | None
    channel: str | None = None
    message_ts: str | None = None
    is_stranger: bool = False


def interaction_refusal(interaction: Interaction, installation: Installation) -> str | None:
    """None when the interaction was sent for Quorum's own app in its own workspace or org."""
    if installation.app_id is not None and interaction.api_app_id != installation.app_id:
        return "This click was not sent for Quorum's Slack app; it was not recorded."
    if not same_organisation(interaction.team_id, interaction.enterprise_id, installation):
        return "This click came from another workspace; only this workspace may approve."
    if interaction.is_stranger or (
        interaction.user_team_id is not None
        and not installation.enterprise_id
        and interaction.user_team_id != installation.team_id
    ):
        return (
            "You belong to another organisation (Slack Connect); only members of this "
            "workspace may approve deployments."
        )
    return None


def card_refusal(interaction: Interaction, card_channel: str, card_ts: str | None) -> str | None:
    """None when the click was on the request's own card (its channel and message)."""
    if card_ts is None or interaction.channel != card_channel or interaction.message_ts != card_ts:
        return (
            "This button is not on the request's card, so the click was not recorded. "
            "Use the buttons on the card in the request's channel."
        )
    return None
