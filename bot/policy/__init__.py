"""The `quorum.yml` policy: pydantic models, loading, and validation reporting every error at once.

Each error reads `<file>: <key.path[i]>: <what was wrong and what was expected>`.
"""

from bot.policy.loading import load_policy, policy_json_schema, summary
from bot.policy.model import (
    BreakGlassPolicy,
    BusinessHours,
    DefaultsPolicy,
    DelegationPolicy,
    EnvironmentPolicy,
    EscalationStep,
    GitLabPolicy,
    IdentitiesPolicy,
    Policy,
    RecurringFreeze,
    RiskTier,
    RulePolicy,
    ServicePolicy,
    SlaPolicy,
    TeamPolicy,
)
from bot.policy.types import OWNER, WEEKDAYS, OnExpire, PolicyError, UnknownServiceMode

__all__ = [
    "OWNER",
    "WEEKDAYS",
    "BreakGlassPolicy",
    "BusinessHours",
    "DefaultsPolicy",
    "DelegationPolicy",
    "EnvironmentPolicy",
    "EscalationStep",
    "GitLabPolicy",
    "IdentitiesPolicy",
    "OnExpire",
    "Policy",
    "PolicyError",
    "RecurringFreeze",
    "RiskTier",
    "RulePolicy",
    "ServicePolicy",
    "SlaPolicy",
    "TeamPolicy",
    "UnknownServiceMode",
    "load_policy",
    "policy_json_schema",
    "summary",
]
