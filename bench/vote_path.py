"""Vote-path benchmark: signed vote clicks at concurrency 50 against a running Quorum (SQLite)
and, in the same run, against a bolt AsyncApp whose handler only acks.

Prints both throughputs, p50/p99 acknowledgement latency and the ratio (target: ratio >= 0.5,
p99 <= 50 ms). Each server runs in its own process; the fake Slack Web API in a third; the load
generator here. Run: `.venv/bin/python bench/vote_path.py [--clicks 5000] [--concurrency 50]`.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import hmac
import json
import multiprocessing as mp
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import aiohttp

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

SIGNING_SECRET = "bench-signing-secret-0123456789"
WEBHOOK_SECRET = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"
SLACK_TOKEN = "xoxb-fake-token-0000"
MEMBERS = [f"U{i:06d}" for i in range(6000)]
APPROVALS = 50  # per request: every click on a fresh (request, user) pair is a durable write


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _policy() -> dict[str, Any]:
    return {
        "version": 1,
        "defaults": {"channel": "C0BENCH"},
        "teams": {"crowd": {"channel": "C0BENCH", "members": MEMBERS}},
        "services": {"svc": {"owner": "crowd"}},
        "environments": {
            "bench": {
                "rules": [{"name": "crowd-review", "from": "owner", "approvals": APPROVALS}],
                "self_approval": True,
            }
        },
    }


# --- child processes -------------------------------------------------------------------------


async def _serve(app: Any, port: int, ready: Any) -> None:
    """Serve `app` on 127.0.0.1:`port`, report its base URL on `ready`, run until killed."""
    from aiohttp import web

    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    ready.put(f"http://127.0.0.1:{port}")
    await asyncio.Event().wait()


def _run_fake_slack(ready: Any) -> None:
    from tests.fakes.slack_api import FakeSlack

    async def main() -> None:
        async with FakeSlack(SLACK_TOKEN) as fake:
            ready.put(fake.base_url)
            await asyncio.Event().wait()

    asyncio.run(main())


def _run_quorum(port: int, slack_url: str, db_path: str, ready: Any) -> None:
    import logging

    from bot.app import build_app, tune_gc_for_serving
    from bot.policy import Policy
    from bot.settings import load_settings
    from storage.migrate import upgrade

    logging.basicConfig(level=logging.WARNING)
    url = f"sqlite+aiosqlite:///{db_path}"

    async def main() -> None:
        await upgrade(url)
        settings = load_settings(
            {
                "SLACK_BOT_TOKEN": SLACK_TOKEN,
                "SLACK_SIGNING_SECRET": SIGNING_SECRET,
                "SLACK_API_URL": slack_url,
                "QUORUM_WEBHOOK_SECRET": WEBHOOK_SECRET,
                "DATABASE_URL": url,
            }
        )
        app = build_app(settings, Policy.from_mapping(_policy(), "bench.yml"))
        tune_gc_for_serving(app)  # as `quorum serve` does
        await _serve(app, port, ready)

    asyncio.run(main())


def _run_ack_only(port: int, slack_url: str, ready: Any) -> None:
    import logging

    from aiohttp import web
    from slack_bolt.adapter.aiohttp import to_aiohttp_response, to_bolt_request
    from slack_bolt.async_app import AsyncAck, AsyncApp
    from slack_sdk.web.async_client import AsyncWebClient

    logging.basicConfig(level=logging.WARNING)

    async def main() -> None:
        bolt = AsyncApp(
            client=AsyncWebClient(token=SLACK_TOKEN, base_url=slack_url),
            signing_secret=SIGNING_SECRET,
            process_before_response=True,
        )

        @bolt.action("quorum.approve")
        async def only_ack(ack: AsyncAck) -> None:
            await ack()

        async def handle(request: web.Request) -> web.Response:
            return await to_aiohttp_response(
                await bolt.async_dispatch(await to_bolt_request(request))
            )

        app = web.Application()
        app.router.add_post("/slack/events", handle)
        await _serve(app, port, ready)

    asyncio.run(main())


# --- load generator --------------------------------------------------------------------------


def _click_body(user: str, request_id: str, card_ts: str = "1.2") -> bytes:
    """A click on the request's card, from the fake Slack's workspace for Quorum's app (the
    vote path checks all three)."""
    from handlers.action_ids import encode_button_value
    from tests.fakes.slack_api import APP_ID, TEAM_ID

    payload = {
        "type": "block_actions",
        "user": {"id": user, "username": user, "name": user, "team_id": TEAM_ID},
        "api_app_id": APP_ID,
        "token": "verification_token",
        "container": {"type": "message", "message_ts": card_ts, "channel_id": "C0BENCH"},
        "trigger_id": f"trigger-{user}",
        "team": {"id": TEAM_ID, "domain": "bench"},
        "channel": {"id": "C0BENCH", "name": "bench"},
        "actions": [
            {
                "action_id": "quorum.approve",
                "block_id": "quorum.actions",
                "value": encode_button_value(request_id),
                "type": "button",
                "action_ts": "1.2",
            }
        ],
    }
    return urlencode({"payload": json.dumps(payload)}).encode()


def _signed(body: bytes) -> dict[str, str]:
    stamp = str(int(time.time()))
    sig = hmac.new(SIGNING_SECRET.encode(), f"v0:{stamp}:".encode() + body, hashlib.sha256)
    return {
        "X-Slack-Request-Timestamp": stamp,
        "X-Slack-Signature": "v0=" + sig.hexdigest(),
        "Content-Type": "application/x-www-form-urlencoded",
    }


async def _open_requests(base: str, count: int, tag: int) -> list[str]:
    from datetime import UTC, datetime

    from bot.pipelines.signing import StandardWebhookSigner

    signer = StandardWebhookSigner(WEBHOOK_SECRET)
    ids = []
    async with aiohttp.ClientSession() as http:
        for i in range(count):
            raw = json.dumps(
                {
                    "service": "svc",
                    "environment": "bench",
                    "version": f"v{tag}.{i}",
                    "requested_by": {"slack": "U999999"},
                }
            ).encode()
            headers = signer.sign(f"msg_bench_{tag}_{i}", datetime.now(UTC), raw)
            headers["content-type"] = "application/json"
            async with http.post(f"{base}/webhooks/generic", data=raw, headers=headers) as resp:
                data = await resp.json()
                assert resp.status == 202, data
                ids.append(data["id"])
    return ids


async def _drive(url: str, bodies: list[bytes], concurrency: int) -> tuple[float, list[float], int]:
    """Send every body with `concurrency` workers; (seconds, latencies in s, non-200 count)."""
    latencies: list[float] = []
    errors = 0
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector) as http:

        async def worker() -> None:
            nonlocal errors
            while not queue.empty():
                body = queue.get_nowait()
                started = time.perf_counter()
                async with http.post(url, data=body, headers=_signed(body)) as resp:
                    await resp.read()
                    if resp.status != 200:
                        errors += 1
                latencies.append(time.perf_counter() - started)

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        return time.perf_counter() - started, latencies, errors


def _pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def _start(procs: list[mp.process.BaseProcess], target: Callable[..., None], *args: Any) -> str:
    """Start `target` in a fresh process; returns the base URL it reports once it listens."""
    ctx = mp.get_context("spawn")
    ready = ctx.Queue()
    proc = ctx.Process(target=target, args=(*args, ready), daemon=True)
    proc.start()
    procs.append(proc)
    url = str(ready.get(timeout=60))
    return url


async def _verify(db_path: str, requests: list[str], expected_votes: int) -> tuple[int, int]:
    from storage.db import create_engine
    from storage.uow import SqlDatabase

    database = SqlDatabase(create_engine(f"sqlite+aiosqlite:///{db_path}"))
    votes = decided = 0
    async with database.unit_of_work() as uow:
        for request_id in requests:
            votes += len(await uow.votes.list_for(request_id))
            request = await uow.requests.get(request_id)
            decided += int(request is not None and not request.state.is_open)
    await database.dispose()
    return votes, decided


def _cpu_seconds(pid: int | None, task: int | None = None) -> float:
    """User + system CPU time of a child process (or of one of its threads) so far (/proc)."""
    if pid is None:
        return 0.0
    path = f"/proc/{pid}/stat" if task is None else f"/proc/{pid}/task/{task}/stat"
    fields = Path(path).read_text().rsplit(")", 1)[1].split()
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks


PIDS: dict[str, int | None] = {}

PROFILE: dict[str, str] = {}


def _profile(pid: int | None, tag: int) -> subprocess.Popen[bytes] | None:
    """With --profile DIR: sample the Quorum process with py-spy during its round (collapsed
    stacks in DIR/round-N.txt, for flame graphs or `sort | uniq` style reading)."""
    if "dir" not in PROFILE or pid is None:
        return None
    out = Path(PROFILE["dir"]) / f"round-{tag + 1}.txt"
    tool = shutil.which("py-spy") or sys.exit("--profile needs py-spy (pip install py-spy)")
    command = [tool, "record", "-p", str(pid), "-r", "200", "--nonblocking", "--gil"]
    spy = subprocess.Popen(  # noqa: S603 - a fixed command line of our own
        [*command, "-f", "raw", "-o", str(out)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    time.sleep(1.0)  # py-spy attaches before the load starts
    return spy


def _wait_for_cards(db_path: str, requests: list[str], timeout: float = 60.0) -> dict[str, str]:
    """Approvers click buttons on cards that are in the channel: wait until every card is posted
    (read-only, straight from the SQLite file); each request's card ts."""
    import sqlite3

    deadline = time.monotonic() + timeout
    marks = ",".join("?" * len(requests))
    while time.monotonic() < deadline:
        with sqlite3.connect(f"file:{db_path}?mode=ro", uri=True) as db:
            query = (
                f"SELECT count(*) FROM requests WHERE message_ts IS NOT NULL AND id IN ({marks})"  # noqa: S608
            )
            (posted,) = db.execute(query, requests).fetchone()  # placeholders only
            if posted == len(requests):
                rows = db.execute(
                    f"SELECT id, message_ts FROM requests WHERE id IN ({marks})",  # noqa: S608
                    requests,
                ).fetchall()
                return {str(rid): str(ts) for rid, ts in rows}
        time.sleep(0.1)
    raise RuntimeError(f"only {posted} of {len(requests)} cards were posted")


def _round(
    base: str, ack_base: str, db_path: str, n_requests: int, concurrency: int, tag: int
) -> dict[str, Any]:
    requests = asyncio.run(_open_requests(base, n_requests, tag))
    cards = _wait_for_cards(db_path, requests)
    # Interleave requests so concurrent clicks hit many requests, as in a busy workspace.
    bodies = [
        _click_body(MEMBERS[u], requests[r], cards[requests[r]])
        for u in range(APPROVALS)
        for r in range(n_requests)
    ]
    q_main = _cpu_seconds(PIDS["quorum"], PIDS["quorum"])  # the event loop's thread
    q_cpu = _cpu_seconds(PIDS["quorum"]), _cpu_seconds(PIDS["slack"])
    spy = _profile(PIDS["quorum"], tag)
    gen = time.process_time()  # the load generator's own CPU (this process)
    q_secs, q_lat, q_err = asyncio.run(_drive(f"{base}/slack/events", bodies, concurrency))
    q_gen = time.process_time() - gen
    if spy is not None:
        spy.send_signal(signal.SIGINT)
        spy.wait(30)
    q_cpu = _cpu_seconds(PIDS["quorum"]) - q_cpu[0], _cpu_seconds(PIDS["slack"]) - q_cpu[1]
    q_main = _cpu_seconds(PIDS["quorum"], PIDS["quorum"]) - q_main
    a_cpu = _cpu_seconds(PIDS["ack"])
    gen = time.process_time()
    a_secs, a_lat, a_err = asyncio.run(_drive(f"{ack_base}/slack/events", bodies, concurrency))
    a_gen = time.process_time() - gen
    a_cpu = _cpu_seconds(PIDS["ack"]) - a_cpu
    return {
        "q_cpu_ms": q_cpu[0] * 1000 / len(bodies),
        "q_main_ms": q_main * 1000 / len(bodies),
        "slack_cpu_ms": q_cpu[1] * 1000 / len(bodies),
        "a_cpu_ms": a_cpu * 1000 / len(bodies),
        "gen_ms": (q_gen * 1000 / len(bodies), a_gen * 1000 / len(bodies)),
        "requests": requests,
        "q_tput": len(bodies) / q_secs,
        "a_tput": len(bodies) / a_secs,
        "q_lat": q_lat,
        "a_lat": a_lat,
        "errors": q_err + a_err,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clicks", type=int, default=3000, help="clicks per round")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds (median kept)")
    parser.add_argument("--concurrency", type=int, default=50)
    parser.add_argument(
        "--profile", metavar="DIR", help="sample Quorum with py-spy during its rounds into DIR"
    )
    args = parser.parse_args()
    if args.profile:
        Path(args.profile).mkdir(parents=True, exist_ok=True)
        PROFILE["dir"] = args.profile
    n_requests = max(1, args.clicks // APPROVALS)
    clicks = n_requests * APPROVALS

    tmp = tempfile.mkdtemp(prefix="quorum-bench-")
    db_path = str(Path(tmp) / "bench.db")
    procs: list[mp.process.BaseProcess] = []
    rounds: list[dict[str, Any]] = []
    try:
        slack_url = _start(procs, _run_fake_slack)
        base = _start(procs, _run_quorum, _free_port(), slack_url, db_path)
        ack_base = _start(procs, _run_ack_only, _free_port(), slack_url)
        PIDS.update(slack=procs[0].pid, quorum=procs[1].pid, ack=procs[2].pid)
        warm = [_click_body("U999998", "req_warmup") for _ in range(200)]  # refused: unknown
        asyncio.run(_drive(f"{base}/slack/events", warm, args.concurrency))
        asyncio.run(_drive(f"{ack_base}/slack/events", warm, args.concurrency))
        for tag in range(args.rounds):
            rounds.append(_round(base, ack_base, db_path, n_requests, args.concurrency, tag))
        every = [r for one in rounds for r in one["requests"]]
        votes, decided = asyncio.run(_verify(db_path, every, clicks * args.rounds))
    finally:
        for proc in procs:
            proc.terminate()
            proc.join(10)

    print(
        f"{args.rounds} rounds of {clicks} clicks on {n_requests} requests, "
        f"concurrency {args.concurrency}; each round: Quorum, then the ack-only app"
    )
    for i, one in enumerate(rounds, start=1):
        print(
            f"  round {i}: quorum {one['q_tput']:6.0f}/s p99 {_pct(one['q_lat'], 0.99):6.1f} ms"
            f" | ack-only {one['a_tput']:6.0f}/s p99 {_pct(one['a_lat'], 0.99):6.1f} ms"
            f" | ratio {one['q_tput'] / one['a_tput']:.2f}"
            f" | CPU per click: quorum {one['q_cpu_ms']:.2f} ms (event loop thread"
            f" {one['q_main_ms']:.2f} ms; fake Slack"
            f" {one['slack_cpu_ms']:.2f} ms), ack-only {one['a_cpu_ms']:.2f} ms"
            f" | load generator {one['gen_ms'][0]:.2f} / {one['gen_ms'][1]:.2f} ms"
        )
    middle = sorted(rounds, key=lambda r: r["q_tput"] / r["a_tput"])[len(rounds) // 2]
    q_lat, a_lat = middle["q_lat"], middle["a_lat"]
    print(
        f"median round, quorum (SQLite, durable votes): {middle['q_tput']:6.0f} clicks/s  "
        f"p50 {_pct(q_lat, 0.5):5.1f} ms  p99 {_pct(q_lat, 0.99):5.1f} ms"
    )
    print(
        f"median round, bolt ack-only ceiling:          {middle['a_tput']:6.0f} clicks/s  "
        f"p50 {_pct(a_lat, 0.5):5.1f} ms  p99 {_pct(a_lat, 0.99):5.1f} ms"
    )
    print(
        f"ratio quorum/ack-only: {middle['q_tput'] / middle['a_tput']:.2f}  "
        "(target >= 0.5; p99 target <= 50 ms)"
    )
    print(
        f"non-200 answers: {sum(r['errors'] for r in rounds)}; recorded votes: "
        f"{votes}/{clicks * args.rounds}; decided requests: {decided}/{len(every)}; "
        f"mean quorum latency {statistics.fmean(q_lat) * 1000:.1f} ms"
    )


if __name__ == "__main__":
    main()
