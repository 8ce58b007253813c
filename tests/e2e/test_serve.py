"""`quorum serve` as a real process: migrates, serves /healthz and /readyz, stops cleanly."""

from __future__ import annotations

import gc
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from aiohttp import web

from bot.app import SERVING_GC_THRESHOLD, tune_gc_for_serving
from tests.paths import EXAMPLE_POLICY, REPO


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=2) as resp:  # noqa: S310 - loopback only
            return resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def _serve(port: int, database_url: str, log: Path) -> subprocess.Popen[str]:
    """`python -m bot serve` with local development values, the example policy and `port`; its
    output goes to the file `log` (a pipe nobody reads fills up and blocks the server)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("QUORUM_", "SLACK_"))}
    env.update(
        QUORUM_DEV="1",
        QUORUM_PORT=str(port),
        QUORUM_CONFIG=str(EXAMPLE_POLICY),
        DATABASE_URL=database_url,
        PYTHONWARNINGS="default",  # show ResourceWarnings (unclosed sessions, pending tasks)
    )
    with log.open("w") as out:  # the child keeps its own descriptor
        return subprocess.Popen(
            [sys.executable, "-m", "bot", "serve"],
            cwd=REPO,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            text=True,
        )


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_serve_answers_health_and_stops_cleanly(tmp_path: Path, sig: signal.Signals) -> None:
    port = _free_port()
    log = tmp_path / "serve.log"
    proc = _serve(port, f"sqlite+aiosqlite:///{tmp_path / 'serve.db'}", log)
    try:
        deadline = time.monotonic() + 60
        status = 0
        while time.monotonic() < deadline:
            try:
                status, _ = _get(f"http://127.0.0.1:{port}/healthz")
                break
            except OSError:
                if proc.poll() is not None:
                    break
                time.sleep(0.1)
        assert status == 200, log.read_text() if proc.poll() is not None else "no answer"
        status, body = _get(f"http://127.0.0.1:{port}/readyz")
        assert status == 200
        assert b'"database": "ok"' in body
        proc.send_signal(sig)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    stderr = log.read_text()
    assert proc.returncode == 0, stderr
    assert "LOCAL DEVELOPMENT VALUE in use for SLACK_BOT_TOKEN" in stderr
    for bad in ("Traceback", "Task was destroyed", "Unclosed", "never awaited", "ERROR"):
        assert bad not in stderr, stderr
    assert (tmp_path / "serve.db").exists()


def test_readyz_reports_an_unreachable_database(tmp_path: Path) -> None:
    """The process is up but not ready when the database cannot be reached (every background
    job logs its failure meanwhile: a lot of output)."""
    port = _free_port()
    log = tmp_path / "serve.log"
    proc = _serve(port, "postgresql+asyncpg://nobody@127.0.0.1:1/nothing", log)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                assert _get(f"http://127.0.0.1:{port}/healthz")[0] == 200
                break
            except OSError:
                assert proc.poll() is None, log.read_text()
                time.sleep(0.1)
        status, body = _get(f"http://127.0.0.1:{port}/readyz")
        assert status == 503
        assert b'"database": "unreachable"' in body
    finally:
        proc.terminate()
        proc.wait(timeout=30)


async def test_the_serving_process_tunes_the_garbage_collector() -> None:
    """`quorum serve` freezes its start-up heap and collects the young generation less often
    (the vote path's objects live for a whole click; see `SERVING_GC_THRESHOLD`)."""
    app = web.Application()
    tune_gc_for_serving(app)
    before = gc.get_threshold()
    runner = web.AppRunner(app)
    try:
        assert gc.get_freeze_count() == 0
        await runner.setup()  # runs the start-up hooks
        assert gc.get_threshold() == SERVING_GC_THRESHOLD
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()  # this test process builds many apps: keep its garbage collectable
        gc.set_threshold(*before)
        await runner.cleanup()
