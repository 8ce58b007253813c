"""`deployment_protection_rule` deliveries for tests, built from the real objects of
shared/fixtures/github/deployment_review.requested.json (no public example of this event exists),
signed like GitHub signs them, and validated against the octokit schema."""

from __future__ import annotations

import copy
import hashlib
import hmac
import json
from functools import cache
from typing import Any

from jsonschema import Draft7Validator
from referencing import Registry, Resource

from tests.paths import FIXTURES

GITHUB = FIXTURES / "github"
SHA = "5275a45b7e99c7fd7265b790392c10a74101a67a"


@cache
def _review_fixture() -> dict[str, Any]:
    data = json.loads((GITHUB / "deployment_review.requested.json").read_text())
    assert isinstance(data, dict)
    return data


@cache
def _validator() -> Draft7Validator:
    resources = []
    for path in [GITHUB / "deployment_protection_rule.schema.json", *GITHUB.glob("common/*.json")]:
        schema = json.loads(path.read_text())
        resources.append((schema["$id"], Resource.from_contents(schema)))
    registry: Registry[Any] = Registry().with_resources(resources)
    schema = json.loads((GITHUB / "deployment_protection_rule.schema.json").read_text())
    return Draft7Validator(schema, registry=registry)


def schema_errors(payload: dict[str, Any]) -> list[str]:
    return [error.message for error in _validator().iter_errors(payload)]


def _repository(full_name: str) -> dict[str, Any]:
    repo = copy.deepcopy(_review_fixture()["repository"])
    old = repo["full_name"]
    owner, name = full_name.split("/")
    text = json.dumps(repo).replace(old, full_name)
    repo = json.loads(text)
    repo["name"] = name
    repo["owner"]["login"] = owner
    return dict(repo)


def _user(login: str) -> dict[str, Any]:
    user = copy.deepcopy(_review_fixture()["sender"])
    return dict(json.loads(json.dumps(user).replace("ilmax", login)))


def _pull_request(full_name: str, number: int, author: dict[str, Any]) -> dict[str, Any]:
    base = f"https://api.github.com/repos/{full_name}"
    html = f"https://github.com/{full_name}/pull/{number}"
    repo = _repository(full_name)

    def side(ref: str) -> dict[str, Any]:
        return {"label": f"acme:{ref}", "ref": ref, "sha": SHA, "user": author, "repo": repo}

    def link(href: str) -> dict[str, str]:
        return {"href": href}

    return {
        "url": f"{base}/pulls/{number}",
        "id": 1419286779,
        "node_id": "PR_kwDOJMUtSc5Uml_7",
        "html_url": html,
        "diff_url": f"{html}.diff",
        "patch_url": f"{html}.patch",
        "issue_url": f"{base}/issues/{number}",
        "number": number,
        "state": "closed",
        "locked": False,
        "title": "Faster checkout",
        "user": author,
        "body": None,
        "created_at": "2023-07-04T09:00:00Z",
        "updated_at": "2023-07-04T09:20:00Z",
        "closed_at": "2023-07-04T09:20:00Z",
        "merged_at": "2023-07-04T09:20:00Z",
        "merge_commit_sha": SHA,
        "assignee": None,
        "assignees": [],
        "requested_reviewers": [],
        "requested_teams": [],
        "labels": [],
        "milestone": None,
        "commits_url": f"{base}/pulls/{number}/commits",
        "review_comments_url": f"{base}/pulls/{number}/comments",
        "review_comment_url": f"{base}/pulls/comments{{/number}}",
        "comments_url": f"{base}/issues/{number}/comments",
        "statuses_url": f"{base}/statuses/{SHA}",
        "head": side("feature/checkout"),
        "base": side("main"),
        "_links": {
            "self": link(f"{base}/pulls/{number}"),
            "html": link(html),
            "issue": link(f"{base}/issues/{number}"),
            "comments": link(f"{base}/issues/{number}/comments"),
            "review_comments": link(f"{base}/pulls/{number}/comments"),
            "review_comment": link(f"{base}/pulls/comments{{/number}}"),
            "commits": link(f"{base}/pulls/{number}/commits"),
            "statuses": link(f"{base}/statuses/{SHA}"),
        },
        "author_association": "MEMBER",
        "auto_merge": None,
        "active_lock_reason": None,
        "draft": False,
        "merged": True,
        "mergeable": None,
        "rebaseable": None,
        "mergeable_state": "unknown",
        "merged_by": author,
        "comments": 0,
        "review_comments": 0,
        "maintainer_can_modify": False,
        "commits": 1,
        "additions": 10,
        "deletions": 2,
        "changed_files": 1,
    }


def protection_rule(
    callback_url: str,
    *,
    repo: str = "acme/storefront",
    environment: str = "production",
    creator: str = "octo-web",
    deployment_id: int = 1_100_200,
    with_sha_ref: bool = False,
    installation_id: int | None = None,
) -> dict[str, Any]:
    """A delivery that satisfies the octokit schema; `with_sha_ref` adds the top-level `sha` and
    `ref` that current deliveries carry (and the schema's additionalProperties:false rejects)."""
    fixture = _review_fixture()
    author = _user(creator)
    api = f"https://api.github.com/repos/{repo}"
    payload: dict[str, Any] = {
        "action": "requested",
        "environment": environment,
        "event": "push",
        "deployment_callback_url": callback_url,
        "deployment": {
            "url": f"{api}/deployments/{deployment_id}",
            "id": deployment_id,
            "node_id": "DE_kwDOJMUtSc5BlEyY",
            "sha": SHA,
            "ref": "main",
            "task": "deploy",
            "payload": {},
            "original_environment": environment,
            "environment": environment,
            "description": None,
            "creator": author,
            "created_at": "2023-07-04T09:28:10Z",
            "updated_at": "2023-07-04T09:28:10Z",
            "statuses_url": f"{api}/deployments/{deployment_id}/statuses",
            "repository_url": api,
        },
        "pull_requests": [_pull_request(repo, 3, author)],
        "repository": _repository(repo),
        "sender": _user(creator),
        "installation": dict(fixture["installation"]),
        "organization": dict(fixture["organization"]),
    }
    if installation_id is not None:
        payload["installation"]["id"] = installation_id
    if with_sha_ref:
        payload["sha"] = SHA
        payload["ref"] = "refs/heads/main"
    return payload


def sign(secret: str, body: bytes) -> str:
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def headers_for(
    secret: str, body: bytes, *, delivery: str, event: str = "deployment_protection_rule"
) -> dict[str, str]:
    return {
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery,
        "X-Hub-Signature-256": sign(secret, body),
        "Content-Type": "application/json",
        "User-Agent": "GitHub-Hookshot/abc123",
    }
