"""What auditors read: a request's hash-chained trail over the API, and `quorum audit verify`
detecting an altered entry in a real database file."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

from handlers.action_ids import ActionId
from tests.e2e.harness import API_TOKEN, SRE, Env, running_env
from tests.e2e.test_intake_errors import _openapi_validator
from tests.paths import REPO


async def test_the_trail_of_a_decided_request(env: Env) -> None:
    request_id = await env.open()
    for user in ("U0WEB2", "U0WEB3", SRE[0]):
        await env.quorum.click(ActionId.approve, user, request_id)
    await env.pipeline.wait_for(1)
    await env.slack.wait_for(
        "chat.update", lambda c: "pipeline notified" in str(c.args.get("blocks"))
    )
    assert env.quorum.http is not None
    url = f"{env.quorum.url}/api/v1/requests/{request_id}/events"
    async with env.quorum.http.get(url, headers={"Authorization": f"Bearer {API_TOKEN}"}) as resp:
        assert resp.status == 200
        body = await resp.json()
    validator = _openapi_validator("AuditEvent")
    for entry in body["events"]:
        validator.validate(entry)
    kinds = [e["kind"] for e in body["events"]]
    assert kinds[0] == "request.opened"
    assert kinds.count("vote.recorded") == 3
    assert kinds.index("request.approved") > max(
        i for i, kind in enumerate(kinds) if kind == "vote.recorded"
    )
    assert "callback.queued" in kinds
    assert "callback.delivered" in kinds
    seqs = [e["seq"] for e in body["events"]]
    assert seqs == sorted(seqs)
    async with env.quorum.http.get(url, headers={"Authorization": "Bearer wrong"}) as resp:
        assert resp.status == 401
    missing = f"{env.quorum.url}/api/v1/requests/req_missing/events"
    async with env.quorum.http.get(
        missing, headers={"Authorization": f"Bearer {API_TOKEN}"}
    ) as resp:
        assert resp.status == 404


def _verify(db: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QUORUM_", "SLACK_"))}
    env["DATABASE_URL"] = f"sqlite+aiosqlite:///{db}"
    return subprocess.run(
        [sys.executable, "-m", "bot", "audit", "verify"],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


async def test_audit_verify_detects_an_altered_entry(tmp_path: Path) -> None:
    db = tmp_path / "audit.db"
    async with running_env(f"sqlite+aiosqlite:///{db}") as env:
        request_id = await env.open()
        await env.quorum.click(ActionId.approve, "U0WEB2", request_id)
        await env.slack.wait_for("chat.postMessage", lambda c: c.args.get("thread_ts") is not None)

    intact = _verify(db)
    assert intact.returncode == 0, intact.stderr
    assert intact.stdout.startswith("ok: audit trail intact")

    with sqlite3.connect(db) as conn:  # an insider rewrites who voted
        (seq,) = conn.execute("SELECT seq FROM events WHERE kind = 'vote.recorded'").fetchone()
        conn.execute(
            "UPDATE events SET actor = 'U0SOMEONE', "
            "data = replace(data, 'U0WEB2', 'U0SOMEONE') WHERE seq = ?",
            (seq,),
        )
    tampered = _verify(db)
    assert tampered.returncode == 1
    assert f"entry #{seq}" in tampered.stderr
