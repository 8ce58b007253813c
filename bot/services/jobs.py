"""Names of the background jobs services can wake (registered in bot/app.py)."""

from enum import StrEnum


class Job(StrEnum):
    ANNOUNCE = "announce"  # post/update cards, vote thread replies
    DELIVERIES = "deliveries"  # pipeline callbacks from the outbox
    MESSAGES = "messages"  # the paced Slack message queue
    REQUESTERS = "requesters"  # ask Slack again who requested a request still "checking"
    TIMERS = "timers"  # SLA reminders, escalations, expiry
    FREEZES = "freezes"  # apply freeze starts/ends to open requests
    REVIEWS = "reviews"  # break-glass review reminders
    RETENTION = "retention"  # forget inbound webhook ids past their retention
