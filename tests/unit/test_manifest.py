"""manifest.yml validates against Slack's official manifest schema, offline."""

import json
from typing import Any

import jsonschema
import pytest
import yaml
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT7

from tests.paths import FIXTURES, REPO

_SCHEMA_DIR = FIXTURES / "slack"
_REMOTE = "https://raw.githubusercontent.com/slackapi/manifest-schema/v0.5.0/schemas/"


def _validator() -> jsonschema.Draft7Validator:
    registry: Registry[Any] = Registry()
    for version in ("1.0.0", "2.0.0"):
        contents = json.loads((_SCHEMA_DIR / f"manifest.schema.{version}.json").read_text())
        resource = Resource.from_contents(contents, default_specification=DRAFT7)
        registry = registry.with_resource(f"{_REMOTE}manifest.schema.{version}.json", resource)
    schema = json.loads((_SCHEMA_DIR / "manifest.schema.json").read_text())
    return jsonschema.Draft7Validator(schema, registry=registry)


def _manifest() -> dict[str, Any]:
    data = yaml.safe_load((REPO / "manifest.yml").read_text())
    assert isinstance(data, dict)
    return data


def test_manifest_validates_against_slacks_schema() -> None:
    errors = sorted(_validator().iter_errors(_manifest()), key=str)
    assert errors == []


def test_schema_rejects_a_broken_manifest() -> None:
    """The validator is live: a manifest with a bad scope type fails."""
    broken = _manifest()
    broken["oauth_config"]["scopes"]["bot"] = "chat:write"
    assert list(_validator().iter_errors(broken))


@pytest.mark.parametrize("command", ["/freeze", "/unfreeze", "/approvals"])
def test_slash_commands_point_at_the_events_endpoint(command: str) -> None:
    commands = {c["command"]: c for c in _manifest()["features"]["slash_commands"]}
    assert commands[command]["url"].endswith("/slack/events")


def test_interactivity_and_scopes_cover_what_quorum_calls() -> None:
    manifest = _manifest()
    assert manifest["settings"]["interactivity"]["request_url"].endswith("/slack/events")
    scopes = set(manifest["oauth_config"]["scopes"]["bot"])
    needed = {
        "chat:write",
        "commands",
        "im:write",
        "users:read",
        "users:read.email",
        "usergroups:read",
    }
    assert needed <= scopes
