#!/usr/bin/env python3
"""A minimal receiver for Quorum's `approval.decided` callbacks that verifies them first.

Quorum signs callbacks per Standard Webhooks (https://www.standardwebhooks.com/) with a key of
its own, never with the secret pipelines use to ask for a deploy:

- `v1a` (Ed25519): verify with Quorum's public key (`whpk_…`) from `GET /api/v1/keys` or
  `quorum keys`. Pin it in your receiver's configuration; `--keys-url` fetches it at start.
- `v1` (HMAC-SHA256): verify with the shared `QUORUM_CALLBACK_SECRET` (`whsec_…`).

Either way the signed content is `{webhook-id}.{webhook-timestamp}.{raw body}`, the timestamp
must be within 5 minutes, and `webhook-id` is the same on every retry (deduplicate on it).

    python examples/verify_callback.py --keys-url https://quorum.example.com/api/v1/keys
    python examples/verify_callback.py --public-key whpk_…
    python examples/verify_callback.py --secret whsec_…   # the callback secret, not the webhook one

It listens on 127.0.0.1 (`--port`, default: a free port), prints one JSON line per callback
(`{"verified": true, ...}` or `{"verified": false, "error": ...}`), answers 204 or 401, and
exits after `--count` verified callbacks (default: never). Needs only the standard library and
`cryptography`.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import hmac
import json
import sys
import time
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

TOLERANCE_SECONDS = 5 * 60
MAX_BODY_BYTES = 1024 * 1024


class Rejected(Exception):
    """The callback is not authentic; answer 401."""


def _b64(value: str, prefix: str) -> bytes:
    if not value.startswith(prefix):
        raise ValueError(f"expected '{prefix}…'")
    encoded = value[len(prefix) :]
    return base64.b64decode(encoded + "=" * (-len(encoded) % 4), validate=True)


class Verifier:
    def __init__(self, public_keys: list[str], secrets: list[str]) -> None:
        self.public_keys = [
            Ed25519PublicKey.from_public_bytes(_b64(k, "whpk_")) for k in public_keys
        ]
        self.secrets = [_b64(s, "whsec_") for s in secrets]

    def verify(self, body: bytes, headers: dict[str, str]) -> str:
        """The verified webhook-id; raises Rejected."""
        webhook_id = headers.get("webhook-id", "")
        stamp = headers.get("webhook-timestamp", "")
        signatures = headers.get("webhook-signature", "").split()
        if not webhook_id or not signatures:
            raise Rejected("missing webhook-id or webhook-signature")
        # Compare as integers before anything converts the timestamp: huge values are stale.
        if not (stamp.isascii() and stamp.isdigit() and len(stamp) <= 12):
            raise Rejected("webhook-timestamp is not a number of seconds")
        if abs(int(stamp) - time.time()) > TOLERANCE_SECONDS:
            raise Rejected("webhook-timestamp is outside the 5 minute window")
        content = f"{webhook_id}.{stamp}.".encode() + body
        for entry in signatures:
            version, _, encoded = entry.partition(",")
            try:
                signature = base64.b64decode(encoded, validate=True)
            except (binascii.Error, ValueError):
                continue
            if version == "v1a":
                for key in self.public_keys:
                    try:
                        key.verify(signature, content)
                    except InvalidSignature:
                        continue
                    return webhook_id
            elif version == "v1":
                for secret in self.secrets:
                    expected = hmac.new(secret, content, hashlib.sha256).digest()
                    if hmac.compare_digest(expected, signature):
                        return webhook_id
        raise Rejected("no signature matches a trusted key")


def fetch_public_keys(url: str) -> list[str]:
    with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - operator-given URL
        document: dict[str, Any] = json.load(response)
    return [key["public_key"] for key in document["keys"] if key.get("signature_version") == "v1a"]


def serve(verifier: Verifier, port: int, count: int | None) -> None:
    seen: set[str] = set()
    verified = 0

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            nonlocal verified
            length = int(self.headers.get("Content-Length") or 0)
            if length > MAX_BODY_BYTES:
                self._answer(413, {"verified": False, "error": "body too large"})
                return
            body = self.rfile.read(length)
            headers = {k.lower(): v for k, v in self.headers.items()}
            try:
                webhook_id = verifier.verify(body, headers)
            except Rejected as exc:
                self._answer(401, {"verified": False, "error": str(exc)})
                return
            event = json.loads(body)
            duplicate = webhook_id in seen  # a retry of a callback already acted on
            seen.add(webhook_id)
            verified += 1
            self._answer(
                204,
                {
                    "verified": True,
                    "duplicate": duplicate,
                    "webhook_id": webhook_id,
                    "request_id": event.get("request_id"),
                    "decision": event.get("decision"),
                },
            )

        def _answer(self, status: int, line: dict[str, Any]) -> None:
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()
            print(json.dumps(line), flush=True)

        def log_message(self, format: str, *args: Any) -> None:
            pass  # one JSON line per callback is all this prints

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    print(f"listening on http://127.0.0.1:{server.server_address[1]}/", flush=True)
    with server:
        while count is None or verified < count:
            server.handle_request()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--keys-url", help="Quorum's GET /api/v1/keys (fetched once, at start)")
    parser.add_argument("--public-key", action="append", default=[], help="a trusted whpk_ key")
    parser.add_argument("--secret", action="append", default=[], help="QUORUM_CALLBACK_SECRET")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--count", type=int, help="exit after this many verified callbacks")
    args = parser.parse_args(argv)
    public_keys = list(args.public_key)
    if args.keys_url:
        public_keys += fetch_public_keys(args.keys_url)
    if not public_keys and not args.secret:
        parser.error("give --keys-url, --public-key or --secret")
    serve(Verifier(public_keys, list(args.secret)), args.port, args.count)
    return 0


if __name__ == "__main__":
    sys.exit(main())
