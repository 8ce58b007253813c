"""What Slack says about a channel, and whether Quorum can work there: post and update its cards,
reply in their threads and answer clicks privately (`chat.postEphemeral`)."""

from __future__ import annotations

from dataclasses import dataclass

# Lets a bot post (but not post ephemerally) in public channels it has not joined.
POST_PUBLIC_SCOPE = "chat:write.public"


@dataclass(frozen=True, slots=True)
class ChannelInfo:
    """The fields of a `conversations.info` channel object that decide whether Quorum can use it."""

    id: str
    name: str | None = None
    is_private: bool = False
    is_archived: bool = False
    is_member: bool = False  # the bot is in the channel


def channel_refusal(
    channel_id: str, channel: ChannelInfo | None, *, scopes: frozenset[str] | None
) -> str | None:
    """None when Quorum can post, update and answer clicks in the channel; else why not, as a
    sentence for the operator. `scopes`: the bot token's scopes, None when Slack did not say."""
    if channel is None:
        return (
            f"Slack has no channel {channel_id} that the bot can see "
            "(a private channel must invite the bot first: /invite @Quorum)"
        )
    where = f"#{channel.name} ({channel_id})" if channel.name else channel_id
    if channel.is_archived:
        return f"{where} is archived; nothing can be posted there"
    if channel.is_member:
        return None
    if channel.is_private:
        return f"the bot is not in the private channel {where}; /invite @Quorum"
    if scopes is not None and POST_PUBLIC_SCOPE in scopes:
        # chat.postEphemeral needs membership even with chat:write.public (Slack's behaviour).
        return (
            f"the bot is not in {where}: it can post cards there ({POST_PUBLIC_SCOPE}) but "
            "cannot answer clicks privately; /invite @Quorum"
        )
    if scopes is not None:
        return (
            f"the bot is not in {where} and cannot post there without {POST_PUBLIC_SCOPE}; "
            "/invite @Quorum"
        )
    return f"the bot is not in {where}; /invite @Quorum"
