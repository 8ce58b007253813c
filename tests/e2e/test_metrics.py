"""`GET /metrics`: Prometheus text with traffic by route and status, ack latency and backlog."""

from __future__ import annotations

from handlers.action_ids import ActionId
from tests.e2e.harness import Env


def _value(text: str, sample: str) -> float:
    for line in text.splitlines():
        if line.startswith(sample + " "):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{sample} not in metrics:\n{text}")


async def test_metrics_show_traffic_latency_and_backlog(env: Env) -> None:
    request_id = await env.open()
    await env.quorum.click(ActionId.approve, "U0WEB2", request_id)
    await env.quorum.click(ActionId.approve, "U0NOBODY", request_id)
    status, _ = await env.quorum.webhook(b"{not json")
    assert status == 400
    assert env.quorum.http is not None
    async with env.quorum.http.get(f"{env.quorum.url}/metrics") as resp:
        assert resp.status == 200
        assert resp.headers["Content-Type"].startswith("text/plain")
        text = await resp.text()
    slack_ok = 'quorum_http_requests_total{route="/slack/events",status="200"}'
    assert _value(text, slack_ok) == 2
    assert _value(text, 'quorum_http_requests_total{route="/webhooks/{source}",status="400"}') == 1
    assert _value(text, 'quorum_http_requests_total{route="/webhooks/{source}",status="202"}') == 1
    ack_count = 'quorum_http_request_duration_seconds_count{route="/slack/events"}'
    assert _value(text, ack_count) == 2
    assert (
        _value(text, 'quorum_http_request_duration_seconds_bucket{le="3.0",route="/slack/events"}')
        == 2
    )
    assert _value(text, "quorum_open_requests") == 1
    assert _value(text, "quorum_callbacks_pending") == 0
