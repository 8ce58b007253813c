"""Loading and validating quorum.yml: the examples load, and every class of error reads exactly as
documented, with the file name and the key path."""

from __future__ import annotations

import copy
import re
from datetime import time, timedelta
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest
import yaml
from pydantic import ValidationError

from bot.domain.model import RejectMode, Risk
from bot.policy import (
    OnExpire,
    Policy,
    PolicyError,
    UnknownServiceMode,
    load_policy,
    policy_json_schema,
    summary,
)
from tests.paths import SPEC_EXAMPLE as SPEC_EXAMPLE_FILE

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "quorum.yml"
SPEC_EXAMPLE = SPEC_EXAMPLE_FILE
FIXTURES = Path(__file__).parent / "policies"


def base() -> dict[str, Any]:
    """A small valid policy that each error case breaks in one place."""
    return {
        "version": 1,
        "defaults": {"channel": "C0DEPLOYS"},
        "teams": {
            "web": {"channel": "C0WEB", "members": ["U0WEB1", "U0WEB2"]},
            "sre": {"usergroup": "S0SREONCALL"},
        },
        "services": {"storefront": {"owner": "web", "repos": ["acme/storefront"]}},
        "environments": {
            "production": {
                "rules": [
                    {"name": "owner-review", "from": "owner", "approvals": 2},
                    {"name": "sre-signoff", "from": "sre", "approvals": 1},
                ],
            },
        },
    }


_DELETE = object()
_STEP = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def changed(*edits: tuple[str, Any]) -> dict[str, Any]:
    """`base()` with values set (or deleted) at dotted key paths such as `a.b[1].c`."""
    data = base()
    for path, value in edits:
        steps: list[str | int] = [
            int(index) if index else key for key, index in _STEP.findall(path)
        ]
        node: Any = data
        for step in steps[:-1]:
            node = node[step]
        if value is _DELETE:
            del node[steps[-1]]
        else:
            node[steps[-1]] = copy.deepcopy(value)
    return data


def errors_of(data: object) -> list[str]:
    with pytest.raises(PolicyError) as info:
        Policy.from_mapping(data, "quorum.yml")
    return info.value.errors


# --- the examples ----------------------------------------------------------------------------


@pytest.mark.parametrize("path", [EXAMPLE, SPEC_EXAMPLE], ids=["examples", "spec"])
def test_the_examples_load(path: Path) -> None:
    policy = load_policy(path)

    assert set(policy.teams) == {"payments", "web", "sre", "security", "release-managers", "cab"}
    assert policy.timezone == "Europe/London"
    production = policy.environments["production"]
    assert production.reject is RejectMode.ANY
    assert production.self_approval is False
    assert production.require_change_ticket is True
    assert [(r.name, r.from_, r.approvals) for r in production.rules] == [
        ("owner-review", "owner", 2),
        ("sre-signoff", "sre", 1),
    ]
    assert production.sla is not None
    assert production.sla.remind_after == timedelta(minutes=15)
    assert [(s.after, s.to) for s in production.sla.escalate] == [
        (timedelta(hours=1), "sre"),
        (timedelta(hours=4), "cab"),
    ]
    assert production.sla.expire_after == timedelta(hours=24)
    staging = policy.environments["staging"]
    assert staging.risk is Risk.LOW
    assert staging.sla is not None
    assert staging.sla.on_expire is OnExpire.APPROVE
    assert policy.services["payments-api"].risk is Risk.HIGH
    assert [r.name for r in policy.risk[Risk.HIGH].extra_rules] == ["security-review"]
    (freeze,) = policy.freezes
    assert freeze.zone == "Europe/London"  # from the top-level timezone
    assert freeze.duration == timedelta(hours=96)
    assert policy.release_managers == "release-managers"
    assert policy.break_glass is not None
    assert policy.break_glass.review_within == timedelta(hours=72)
    assert policy.identities.slack_for_github("Octo-Payments-Dev") == "U0PAYDEV1"
    assert policy.identities.email_lookup is True
    assert policy.defaults.unknown_service is UnknownServiceMode.ROUTE


def test_the_shipped_example_shows_business_hours() -> None:
    policy = load_policy(EXAMPLE)
    sla = policy.environments["uat"].sla
    assert sla is not None
    assert sla.business_hours is not None
    assert sla.business_hours.days == ("mon", "tue", "wed", "thu", "fri")
    assert (sla.business_hours.start, sla.business_hours.end) == (time(9, 0), time(17, 30))
    assert sla.business_hours.timezone == "Europe/London"
    assert policy.environments["uat"].reject is RejectMode.QUORUM


def test_summary() -> None:
    assert summary(load_policy(SPEC_EXAMPLE)) == "ok: 6 teams, 2 services, 2 environments"
    assert summary(load_policy(EXAMPLE)) == "ok: 6 teams, 2 services, 3 environments"
    single = changed(("teams", {"web": {"members": ["U0WEB1", "U0WEB2"]}}))
    del single["services"]
    single["environments"]["production"]["rules"] = [{"name": "r", "from": "web", "approvals": 1}]
    assert summary(Policy.from_mapping(single)) == "ok: 1 team, 0 services, 1 environment"


def test_unquoted_clock_times_are_read_as_text() -> None:
    policy = load_policy(FIXTURES / "business_hours_unquoted.yml")
    sla = policy.environments["uat"].sla
    assert sla is not None
    assert sla.business_hours is not None
    assert (sla.business_hours.start, sla.business_hours.end) == (time(9, 0), time(17, 30))
    assert sla.business_hours.timezone == "America/New_York"


def test_models_are_frozen() -> None:
    policy = Policy.from_mapping(base())
    with pytest.raises(ValidationError, match="frozen"):
        policy.version = 2  # type: ignore[misc, assignment]
    with pytest.raises(ValidationError, match="frozen"):
        policy.environments["production"].rules[0].approvals = 5  # type: ignore[misc]


def test_a_usergroup_team_is_not_limited_by_its_static_members() -> None:
    data = changed(("environments.production.rules[1].approvals", 5))
    assert Policy.from_mapping(data).environments["production"].rules[1].approvals == 5


# --- errors: one per class, exact text --------------------------------------------------------

ERROR_CASES: list[tuple[str, tuple[tuple[str, Any], ...], list[str]]] = [
    (
        "unknown team in a rule",
        (("environments.production.rules[1].from", "sre2"),),
        [
            "quorum.yml: environments.production.rules[1].from: unknown team 'sre2' "
            "(known: sre, web)"
        ],
    ),
    (
        "unknown owner team",
        (("services.storefront.owner", "webb"),),
        ["quorum.yml: services.storefront.owner: unknown team 'webb' (known: sre, web)"],
    ),
    (
        "unknown escalation team",
        (("environments.production.sla", {"escalate": [{"after": "1h", "to": "cab"}]}),),
        [
            "quorum.yml: environments.production.sla.escalate[0].to: unknown team 'cab' "
            "(known: sre, web)"
        ],
    ),
    (
        "unknown break-glass teams",
        (
            (
                "break_glass",
                {
                    "allowed": "rm",
                    "extra_rules": [{"name": "second", "from": "rm", "approvals": 1}],
                },
            ),
        ),
        [
            "quorum.yml: break_glass.allowed: unknown team 'rm' (known: sre, web)",
            "quorum.yml: break_glass.extra_rules[0].from: unknown team 'rm' (known: sre, web)",
        ],
    ),
    (
        "unknown release managers",
        (("release_managers", "rm"),),
        ["quorum.yml: release_managers: unknown team 'rm' (known: sre, web)"],
    ),
    (
        "unknown team in a risk tier",
        (
            (
                "risk",
                {"high": {"extra_rules": [{"name": "sec", "from": "security", "approvals": 1}]}},
            ),
        ),
        ["quorum.yml: risk.high.extra_rules[0].from: unknown team 'security' (known: sre, web)"],
    ),
    (
        "approvals below one",
        (("environments.production.rules[1].approvals", 0),),
        ["quorum.yml: environments.production.rules[1].approvals: must be at least 1, got 0"],
    ),
    (
        "approvals not a number",
        (("environments.production.rules[1].approvals", "two"),),
        [
            "quorum.yml: environments.production.rules[1].approvals: "
            "expected a whole number, got 'two'"
        ],
    ),
    (
        "more owner approvals than the owning team has members",
        (("environments.production.rules[0].approvals", 3),),
        [
            "quorum.yml: environments.production.rules[0].approvals: needs 3 approvals from "
            "the owning team, but service 'storefront' is owned by 'web', which has only "
            "2 static members"
        ],
    ),
    (
        "more approvals than a static team has members",
        (("environments.production.rules[1]", {"name": "web", "from": "web", "approvals": 3}),),
        [
            "quorum.yml: environments.production.rules[1].approvals: needs 3 approvals but "
            "team 'web' has only 2 static members"
        ],
    ),
    (
        "team with neither members nor usergroup",
        (("teams.sre", {"channel": "C0SRE"}),),
        ["quorum.yml: teams.sre: a team needs members, a usergroup, or both"],
    ),
    (
        "team named owner",
        (("teams.owner", {"members": ["U0OWN1"]}),),
        [
            "quorum.yml: teams.owner: 'owner' is reserved: in a rule, from: owner means "
            "the service's owning team"
        ],
    ),
    (
        "duplicate member",
        (("teams.web.members", ["U0WEB1", "U0WEB2", "U0WEB1"]),),
        ["quorum.yml: teams.web.members[2]: duplicate member 'U0WEB1'"],
    ),
    (
        "bad duration",
        (("environments.production.sla", {"expire_after": "1 day"}),),
        [
            "quorum.yml: environments.production.sla.expire_after: invalid duration '1 day': "
            "expected a duration such as 30s, 15m, 4h, 2d, 1w or 1h30m (units largest first)"
        ],
    ),
    (
        "duration without a unit",
        (("environments.production.sla", {"remind_after": 15}),),
        [
            "quorum.yml: environments.production.sla.remind_after: expected a duration such "
            "as 30s, 15m, 4h, 2d, 1w or 1h30m, got a number (15) (write the unit)"
        ],
    ),
    (
        "bad cron",
        (
            (
                "freezes",
                [{"name": "q", "cron": "61 * * * *", "duration": "1h", "reason": "close"}],
            ),
        ),
        [
            "quorum.yml: freezes[0].cron: invalid cron expression '61 * * * *': a field is "
            "malformed or out of range (minute 0-59, hour 0-23, day-of-month 1-31, "
            "month 1-12, day-of-week 0-6)"
        ],
    ),
    (
        "cron with the wrong number of fields",
        (("freezes", [{"name": "q", "cron": "0 18 28", "duration": "1h", "reason": "close"}]),),
        [
            "quorum.yml: freezes[0].cron: invalid cron expression '0 18 28': expected 5 fields "
            '(minute hour day-of-month month day-of-week), e.g. "0 18 28 3,6,9,12 *"'
        ],
    ),
    (
        "bad top-level zone",
        (("timezone", "Mars/Olympus"),),
        [
            "quorum.yml: timezone: unknown time zone 'Mars/Olympus' "
            "(expected an IANA name such as Europe/London or UTC)"
        ],
    ),
    (
        "bad freeze zone",
        (
            (
                "freezes",
                [
                    {
                        "name": "q",
                        "cron": "0 18 * * *",
                        "zone": "Europe/Londn",
                        "duration": "1h",
                        "reason": "close",
                    }
                ],
            ),
        ),
        [
            "quorum.yml: freezes[0].zone: unknown time zone 'Europe/Londn' "
            "(expected an IANA name such as Europe/London or UTC)"
        ],
    ),
    (
        "auto-approve where the environment's risk is not low",
        (("environments.production.sla", {"expire_after": "2h", "on_expire": "approve"}),),
        [
            "quorum.yml: environments.production.sla.on_expire: approve is only allowed where "
            "the environment's risk is low (its risk is not set; add risk: low to environment "
            "'production' or use reject)"
        ],
    ),
    (
        "auto-approve without an expiry",
        (
            ("environments.production.risk", "low"),
            ("environments.production.sla", {"on_expire": "approve"}),
        ),
        ["quorum.yml: environments.production.sla.on_expire: approve needs expire_after"],
    ),
    (
        "escalation ladder going down and past expiry",
        (
            (
                "environments.production.sla",
                {
                    "escalate": [{"after": "4h", "to": "sre"}, {"after": "1h", "to": "web"}],
                    "expire_after": "3h",
                },
            ),
        ),
        [
            "quorum.yml: environments.production.sla.escalate[0].after: must be shorter than "
            "expire_after (3h)",
            "quorum.yml: environments.production.sla.escalate[1].after: must be later than the "
            "previous step (4h): escalation steps go up in time",
        ],
    ),
    (
        "reminder after expiry",
        (("environments.production.sla", {"remind_after": "2h", "expire_after": "2h"}),),
        [
            "quorum.yml: environments.production.sla.remind_after: must be shorter than "
            "expire_after (2h)"
        ],
    ),
    (
        "business hours the wrong way round",
        (
            (
                "environments.production.sla",
                {"business_hours": {"start": "17:30", "end": "09:00"}},
            ),
        ),
        [
            "quorum.yml: environments.production.sla.business_hours: start (17:30) must be "
            "before end (09:00); windows across midnight are not supported"
        ],
    ),
    (
        "business hours with a bad day and time",
        (
            (
                "environments.production.sla",
                {"business_hours": {"days": ["mon", "funday"], "start": "9am", "end": "17:00"}},
            ),
        ),
        [
            "quorum.yml: environments.production.sla.business_hours.days[1]: expected 'mon', "
            "'tue', 'wed', 'thu', 'fri', 'sat' or 'sun', got 'funday'",
            "quorum.yml: environments.production.sla.business_hours.start: expected a time of "
            'day as "HH:MM" (24-hour, e.g. "09:00"), got \'9am\'',
        ],
    ),
    (
        "freeze naming an unknown environment and service",
        (
            (
                "freezes",
                [
                    {
                        "name": "q",
                        "environments": ["prod"],
                        "services": ["shop"],
                        "cron": "0 18 * * *",
                        "duration": "1h",
                        "reason": "close",
                    }
                ],
            ),
        ),
        [
            "quorum.yml: freezes[0].environments[0]: unknown environment 'prod' "
            "(known: production)",
            "quorum.yml: freezes[0].services[0]: unknown service 'shop' (known: storefront)",
        ],
    ),
    (
        "duplicate freeze names",
        (
            (
                "freezes",
                [
                    {"name": "q", "cron": "0 18 * * *", "duration": "1h", "reason": "a"},
                    {"name": "q", "cron": "0 19 * * *", "duration": "1h", "reason": "b"},
                ],
            ),
        ),
        ["quorum.yml: freezes[1].name: duplicate freeze name 'q' (also freezes[0])"],
    ),
    (
        "identity that is not a Slack user id",
        (("identities", {"github": {"octo": "X123"}}),),
        [
            "quorum.yml: identities.github.octo: 'X123' is not a Slack user id "
            "(expected e.g. U0123ABCD)"
        ],
    ),
    (
        "identity email key that is not an email address",
        (("identities", {"email": {"pat.acme.example": "U0PAT1"}}),),
        [
            "quorum.yml: identities.email['pat.acme.example']: invalid key: "
            "'pat.acme.example' is not an email address"
        ],
    ),
    (
        "member that is not a Slack user id",
        (("teams.web.members[1]", "u0web2"),),
        [
            "quorum.yml: teams.web.members[1]: 'u0web2' is not a Slack user id "
            "(expected e.g. U0123ABCD)"
        ],
    ),
    (
        "channel that is not a channel id",
        (("defaults.channel", "#deploys"),),
        [
            "quorum.yml: defaults.channel: '#deploys' is not a Slack channel id "
            "(expected e.g. C0123ABCD)"
        ],
    ),
    (
        "unknown top-level key",
        (("colour", "red"),),
        [
            "quorum.yml: colour: unknown key 'colour' (allowed: version, timezone, defaults, "
            "teams, services, environments, risk, freezes, release_managers, break_glass, "
            "identities, gitlab, delegation)"
        ],
    ),
    (
        "unknown nested key",
        (("teams.web.colour", "red"),),
        [
            "quorum.yml: teams.web.colour: unknown key 'colour' "
            "(allowed: channel, members, usergroup)"
        ],
    ),
    (
        "misspelt rule key",
        (("environments.production.rules[1]", {"name": "s", "form": "sre", "approvals": 1}),),
        [
            "quorum.yml: environments.production.rules[1].form: unknown key 'form' "
            "(allowed: name, from, approvals)",
            "quorum.yml: environments.production.rules[1].from: required key is missing",
        ],
    ),
    (
        "missing required key",
        (("defaults.channel", _DELETE),),
        ["quorum.yml: defaults.channel: required key is missing"],
    ),
    (
        "unsupported version",
        (("version", 2),),
        ["quorum.yml: version: expected 1, got 2"],
    ),
    (
        "unknown reject mode",
        (("environments.production.reject", "some"),),
        ["quorum.yml: environments.production.reject: expected 'any' or 'quorum', got 'some'"],
    ),
    (
        "unknown risk",
        (("services.storefront.risk", "extreme"),),
        ["quorum.yml: services.storefront.risk: expected 'low', 'medium' or 'high', got 'extreme'"],
    ),
    (
        "unknown risk tier",
        (("risk", {"extreme": {"extra_rules": []}}),),
        [
            "quorum.yml: risk.extreme: invalid key: expected 'low', 'medium' or 'high', "
            "got 'extreme'"
        ],
    ),
    (
        "flag that is not a boolean",
        (("environments.production.self_approval", "no"),),
        ["quorum.yml: environments.production.self_approval: expected true or false, got 'no'"],
    ),
    (
        "environment without rules",
        (("environments.production.rules", []),),
        ["quorum.yml: environments.production.rules: must not be empty"],
    ),
    (
        "list where a mapping belongs",
        (("teams.web", ["U0WEB1"]),),
        ["quorum.yml: teams.web: expected a mapping, got a list"],
    ),
    (
        "duplicate rule name",
        (("environments.production.rules[1].name", "owner-review"),),
        [
            "quorum.yml: environments.production.rules[1].name: duplicate rule name "
            "'owner-review' (also environments.production.rules[0].name)"
        ],
    ),
    (
        "risk rule reusing an environment rule name",
        (
            (
                "risk",
                {"high": {"extra_rules": [{"name": "sre-signoff", "from": "sre", "approvals": 1}]}},
            ),
        ),
        [
            "quorum.yml: risk.high.extra_rules[0].name: rule name 'sre-signoff' is already used "
            "by environments.production.rules[1].name; rule names must be unique within a request"
        ],
    ),
]


@pytest.mark.parametrize(
    ("edits", "expected"),
    [pytest.param(edits, expected, id=name) for name, edits, expected in ERROR_CASES],
)
def test_each_error_reads_exactly(edits: tuple[tuple[str, Any], ...], expected: list[str]) -> None:
    assert errors_of(changed(*edits)) == expected


def test_three_independent_errors_are_reported_at_once() -> None:
    with pytest.raises(PolicyError) as info:
        load_policy(FIXTURES / "three_errors.yml")
    source = str(FIXTURES / "three_errors.yml")
    assert info.value.errors == [
        f"{source}: environments.production.rules[1].from: unknown team 'sre2' (known: sre, web)",
        f"{source}: environments.production.sla.expire_after: invalid duration '1 day': expected "
        "a duration such as 30s, 15m, 4h, 2d, 1w or 1h30m (units largest first)",
        f"{source}: freezes[0].cron: invalid cron expression '0 18 31 13 *': a field is "
        "malformed or out of range (minute 0-59, hour 0-23, day-of-month 1-31, month 1-12, "
        "day-of-week 0-6)",
    ]
    assert str(info.value) == "\n".join(info.value.errors)


def test_errors_name_the_file_as_given(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(FIXTURES)
    with pytest.raises(PolicyError) as info:
        load_policy("three_errors.yml")
    assert all(line.startswith("three_errors.yml: ") for line in info.value.errors)


def test_errors_come_in_file_order() -> None:
    data = changed(
        ("release_managers", "nobody"),
        ("teams.web.colour", "red"),
        ("environments.production.rules[0].from", "nobody"),
    )
    paths = [line.split(": ")[1] for line in errors_of(data)]
    assert paths == [
        "teams.web.colour",
        "environments.production.rules[0].from",
        "release_managers",
    ]


@pytest.mark.parametrize(
    ("fixture", "expected"),
    [
        (
            "syntax_error.yml",
            "line 4, column 13: invalid YAML: expected ',' or ']', but got ':' "
            "(while parsing a flow sequence)",
        ),
        (
            "duplicate_key.yml",
            "line 7, column 3: invalid YAML: duplicate key 'web' (first 'web' at line 5)",
        ),
        ("top_level_list.yml", "expected a mapping at the top level, got a list"),
    ],
)
def test_unreadable_files(fixture: str, expected: str) -> None:
    path = FIXTURES / fixture
    with pytest.raises(PolicyError) as info:
        load_policy(path)
    assert info.value.errors == [f"{path}: {expected}"]


def test_empty_and_missing_files(tmp_path: Path) -> None:
    empty = tmp_path / "quorum.yml"
    empty.write_text("# nothing yet\n")
    with pytest.raises(PolicyError, match=r"quorum\.yml: the file is empty"):
        load_policy(empty)
    with pytest.raises(PolicyError, match=r"absent\.yml: cannot read the file: No such file"):
        load_policy(tmp_path / "absent.yml")


# --- accessors -------------------------------------------------------------------------------


def test_service_lookup_by_name_then_repository_glob() -> None:
    policy = load_policy(SPEC_EXAMPLE)

    assert policy.service_for("payments-api", None) == (
        "payments-api",
        policy.services["payments-api"],
    )
    found = policy.service_for(None, "acme/storefront-checkout")
    assert found is not None
    assert found[0] == "storefront"
    found = policy.service_for(None, "ACME/Storefront")
    assert found is not None
    assert found[0] == "storefront"  # repository paths are case-insensitive
    # The name wins over the repository when both are given.
    found = policy.service_for("payments-api", "acme/storefront")
    assert found is not None
    assert found[0] == "payments-api"
    assert policy.service_for("unknown", "acme/unknown") is None
    assert policy.service_for(None, None) is None


def test_first_matching_glob_in_file_order_wins() -> None:
    data = base()
    data["services"] = {
        "specific": {"owner": "web", "repos": ["acme/api-*"]},
        "catch-all": {"owner": "web", "repos": ["acme/*"]},
    }
    policy = Policy.from_mapping(data)
    assert policy.service_for(None, "acme/api-gateway") == ("specific", policy.services["specific"])
    assert policy.service_for(None, "acme/docs") == ("catch-all", policy.services["catch-all"])


def test_team_and_environment_accessors() -> None:
    policy = Policy.from_mapping(base())
    team = policy.team("web")
    assert team is not None
    assert team.static_size == 2
    sre = policy.team("sre")
    assert sre is not None
    assert sre.static_size is None  # resolved live from Slack
    assert policy.team("nobody") is None
    assert policy.environment("production") is not None
    assert policy.environment("prod") is None


def test_risk_tiers_add_up() -> None:
    data = base()
    data["risk"] = {
        "high": {"extra_rules": [{"name": "security", "from": "sre", "approvals": 1}]},
        "medium": {"extra_rules": [{"name": "peer", "from": "web", "approvals": 1}]},
    }
    policy = Policy.from_mapping(data)
    assert [(t, r.name) for t, r in policy.risk_rules(Risk.LOW)] == []
    assert [(t, r.name) for t, r in policy.risk_rules(Risk.MEDIUM)] == [(Risk.MEDIUM, "peer")]
    assert [(t, r.name) for t, r in policy.risk_rules(Risk.HIGH)] == [
        (Risk.MEDIUM, "peer"),
        (Risk.HIGH, "security"),
    ]


def test_identity_lookups() -> None:
    data = changed(
        ("identities", {"github": {"Octo": "U0OCTO1"}, "email": {"Pat@Acme.Example": "U0PAT1"}})
    )
    identities = Policy.from_mapping(data).identities
    assert identities.slack_for_github("octo") == "U0OCTO1"
    assert identities.slack_for_github("someone") is None
    assert identities.slack_for_email(" pat@acme.example ") == "U0PAT1"
    assert identities.email_lookup is False


# --- JSON Schema -----------------------------------------------------------------------------


def test_json_schema_accepts_the_examples() -> None:
    schema = policy_json_schema()
    jsonschema.Draft202012Validator.check_schema(schema)
    for path in (EXAMPLE, SPEC_EXAMPLE):
        jsonschema.validate(yaml.safe_load(path.read_text()), schema)


def test_json_schema_describes_durations_and_rejects_unknown_keys() -> None:
    schema = policy_json_schema()
    after = schema["$defs"]["EscalationStep"]["properties"]["after"]
    assert after["type"] == "string"
    assert re.fullmatch(after["pattern"], "1h30m")
    assert not re.fullmatch(after["pattern"], "90")
    assert "from" in schema["$defs"]["RulePolicy"]["properties"]
    data = base()
    data["colour"] = "red"
    with pytest.raises(jsonschema.ValidationError, match="colour"):
        jsonschema.validate(data, schema)


def _paths(node: Any, prefix: tuple[str | int, ...] = ()) -> list[tuple[str | int, ...]]:
    out = [prefix] if prefix else []
    if isinstance(node, dict):
        for key, value in node.items():
            out += _paths(value, (*prefix, key))
    elif isinstance(node, list):
        for index, value in enumerate(node):
            out += _paths(value, (*prefix, index))
    return out


_EXAMPLE_DATA: dict[str, Any] = yaml.safe_load(EXAMPLE.read_text())


def _full() -> dict[str, Any]:
    return copy.deepcopy(_EXAMPLE_DATA)


@pytest.mark.parametrize("junk", [None, [], {}, 7, True, "x", [{"a": 1}], [[1]], {"k": [None]}])
def test_any_malformed_value_gives_a_policy_error_and_never_crashes(junk: Any) -> None:
    for path in _paths(_full()):
        data = _full()
        node: Any = data
        for step in path[:-1]:
            node = node[step]
        node[path[-1]] = copy.deepcopy(junk)
        lines: list[str] = ["quorum.yml: (valid)"]
        try:
            Policy.from_mapping(data, "quorum.yml")
        except PolicyError as exc:
            lines = exc.errors
        assert lines
        assert all(line.startswith("quorum.yml: ") for line in lines), path
