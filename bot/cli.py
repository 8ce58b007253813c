"""The `quorum` command line: serve, migrate, check-config, config-schema, explain, keys."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from bot.domain.model import Risk
from bot.identity import describe_requester
from bot.pipelines.callback_keys import PublicKeyInfo
from bot.policy import Policy, PolicyError, load_policy, policy_json_schema, summary
from bot.routing import RoutingError, explain, route
from bot.services.live_check import LiveReport, check_live
from bot.settings import Settings, SettingsError, load_settings

EXIT_OK = 0
EXIT_INVALID = 1  # the policy (or another input) is invalid
EXIT_SETTINGS = 2  # a setting is missing or malformed

log = logging.getLogger("quorum")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="quorum", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    sub.add_parser("serve", help="run the HTTP server (applies migrations first on SQLite)")
    sub.add_parser("migrate", help="apply database migrations up to the newest revision")
    check = sub.add_parser("check-config", help="validate a policy file")
    check.add_argument("path", nargs="?", help="policy file (default: $QUORUM_CONFIG)")
    check.add_argument(
        "--live",
        action="store_true",
        help="also check every Slack id against the workspace (needs SLACK_BOT_TOKEN)",
    )
    sub.add_parser("config-schema", help="print the JSON Schema of the policy file")
    audit = sub.add_parser("audit", help="check the tamper-evident audit trail")
    audit_sub = audit.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    audit_sub.add_parser("verify", help="recompute the hash chain; exit 1 if an entry was altered")
    keys = sub.add_parser(
        "keys", help="print the public key callbacks are signed with (see `keys generate`)"
    )
    keys_sub = keys.add_subparsers(dest="keys_command", metavar="ACTION")
    generate = keys_sub.add_parser(
        "generate", help="write a new Ed25519 callback signing key file (mode 0600)"
    )
    generate.add_argument("--out", required=True, help="the key file to create (never replaced)")
    exp = sub.add_parser("explain", help="show how a request would be routed, without sending it")
    exp.add_argument("--service", help="service name (or use --repository)")
    exp.add_argument("--repository", help="repository, matched against services' repo globs")
    exp.add_argument("--environment", required=True)
    exp.add_argument("--risk", choices=[r.value for r in Risk])
    exp.add_argument("--requested-by", help="the requester's Slack id, GitHub login or email")
    exp.add_argument("--config", help="policy file (default: $QUORUM_CONFIG)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    try:
        return _main(argv)
    except BrokenPipeError:  # `quorum config-schema | head`: the reader left, not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


def _main(argv: Sequence[str] | None) -> int:
    args = _parser().parse_args(argv)
    command: str = args.command
    if command == "config-schema":
        print(json.dumps(policy_json_schema(), indent=2))
        return EXIT_OK
    if command == "keys" and args.keys_command == "generate":
        return _keys_generate(Path(args.out))  # needs no settings
    try:
        settings = load_settings()
    except SettingsError as exc:
        for problem in exc.problems:
            print(f"quorum: setting {problem}", file=sys.stderr)
        return EXIT_SETTINGS
    _configure_logging(settings.quorum_log_level)
    if command == "check-config":
        path = Path(args.path) if args.path else settings.quorum_config
        return _check_config_live(path, settings) if args.live else _check_config(path)
    if command == "explain":
        return _explain(args, Path(args.config) if args.config else settings.quorum_config)
    if command == "migrate":
        return _migrate(settings)
    if command == "audit":
        return _audit_verify(settings)
    if command == "keys":
        return _keys_show(settings)
    return _serve(settings)


def _configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    logging.Formatter.converter = time.gmtime  # log timestamps in UTC, like everything else
    logging.getLogger("apscheduler").setLevel(logging.WARNING)  # one line per sweep otherwise


def _load_or_report(path: Path) -> Policy | None:
    """The policy, or None after printing every error in it."""
    try:
        return load_policy(path)
    except PolicyError as exc:
        for error in exc.errors:
            print(error, file=sys.stderr)
        return None


def _check_config(path: Path) -> int:
    policy = _load_or_report(path)
    if policy is None:
        return EXIT_INVALID
    print(summary(policy))
    return EXIT_OK


def _check_config_live(path: Path, settings: Settings) -> int:
    from handlers.slack_chat import ChatError

    token = settings.slack_bot_token
    if token is None or "SLACK_BOT_TOKEN" in settings.uses_dev_values():
        print(
            "quorum: setting SLACK_BOT_TOKEN: missing (check-config --live asks Slack with the "
            "bot token; a local development value cannot)",
            file=sys.stderr,
        )
        return EXIT_SETTINGS
    policy = _load_or_report(path)
    if policy is None:
        return EXIT_INVALID
    try:
        report = asyncio.run(_ask_slack(policy, token.get_secret_value(), settings.slack_api_url))
    except ChatError as exc:  # carries the method and Slack's error code, never the token
        print(f"quorum: could not reach Slack: {exc.method}: {exc.error_code}", file=sys.stderr)
        return EXIT_SETTINGS
    for finding in report.findings:
        note = "warning: " if finding.warning else ""
        print(f"{path}: {finding.path}: {note}{finding.message}", file=sys.stderr)
    if report.problems:
        return EXIT_INVALID
    print(summary(policy))
    print(
        f"live: {_count(report.users, 'user')}, {_count(report.usergroups, 'user group')}, "
        f"{_count(report.channels, 'channel')} checked"
    )
    return EXIT_OK


async def _ask_slack(policy: Policy, token: str, base_url: str | None) -> LiveReport:
    import aiohttp

    from bot.clock import SystemClock
    from handlers.slack_chat import make_web_client
    from handlers.slack_directory import SlackDirectory

    async with aiohttp.ClientSession() as session:
        directory = SlackDirectory(make_web_client(token, base_url, session=session), SystemClock())
        return await check_live(policy, directory, directory)


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _explain(args: argparse.Namespace, path: Path) -> int:
    try:
        policy = load_policy(path)
    except PolicyError as exc:
        for error in exc.errors:
            print(error, file=sys.stderr)
        return EXIT_INVALID
    if not args.service and not args.repository:
        print("quorum explain: give --service or --repository", file=sys.stderr)
        return EXIT_INVALID
    risk = Risk(args.risk) if args.risk else None
    try:
        routed = route(
            policy,
            service=args.service,
            repository=args.repository,
            environment=args.environment,
            risk=risk,
        )
    except RoutingError as exc:
        print(f"quorum explain: {exc}", file=sys.stderr)
        return EXIT_INVALID
    print(explain(policy, routed))
    if args.requested_by:
        print(describe_requester(policy, routed, args.requested_by))
    return EXIT_OK


def _migrate(settings: Settings) -> int:
    from storage.migrate import upgrade

    asyncio.run(upgrade(settings.database_url_value))
    print("migrated: database is at the newest revision")
    return EXIT_OK


def _audit_verify(settings: Settings) -> int:
    from bot.services.audit import verify_trail
    from storage.db import create_engine
    from storage.uow import SqlDatabase

    async def run() -> int | None:
        database = SqlDatabase(create_engine(settings.database_url_value))
        try:
            return await verify_trail(database)
        finally:
            await database.dispose()

    broken = asyncio.run(run())
    if broken is not None:
        print(
            f"audit trail TAMPERED: entry #{broken} does not match its hash or does not link "
            "to the entry before it",
            file=sys.stderr,
        )
        return EXIT_INVALID
    print("ok: audit trail intact (every entry links to the one before and its hash recomputes)")
    return EXIT_OK


def _keys_generate(path: Path) -> int:
    from datetime import UTC, datetime

    from bot.pipelines.callback_keys import CallbackKey

    key = CallbackKey.generate(datetime.now(UTC))
    try:
        key.write(path)
    except FileExistsError:
        print(f"quorum keys generate: {path} exists; not replacing a key", file=sys.stderr)
        return EXIT_INVALID
    except OSError as exc:
        print(f"quorum keys generate: {path}: {exc.strerror or 'cannot write'}", file=sys.stderr)
        return EXIT_INVALID
    print(f"wrote {path} (mode 0600); set QUORUM_CALLBACK_SIGNING_KEY_FILE={path}")
    _print_key(key.public)
    return EXIT_OK


def _keys_show(settings: Settings) -> int:
    from bot.pipelines.callback_keys import CallbackKey, CallbackKeyError

    path = settings.quorum_callback_signing_key_file
    if path is None:
        print(
            "quorum: setting QUORUM_CALLBACK_SIGNING_KEY_FILE: missing (create a key with "
            "`quorum keys generate --out FILE`)",
            file=sys.stderr,
        )
        return EXIT_SETTINGS
    try:
        key = CallbackKey.from_file(path)
    except CallbackKeyError as exc:
        print(f"quorum: setting QUORUM_CALLBACK_SIGNING_KEY_FILE: {exc}", file=sys.stderr)
        return EXIT_SETTINGS
    _print_key(key.public)
    return EXIT_OK


def _print_key(key: PublicKeyInfo) -> None:
    print(f"key_id: {key.key_id}")
    print(f"algorithm: {key.algorithm} (Standard Webhooks {key.signature_version})")
    print(f"created: {key.created.isoformat().replace('+00:00', 'Z')}")
    print(f"public_key: {key.public_key}")


def _serve(settings: Settings) -> int:
    from bot.app import serve

    try:
        settings.require_for_serve()
    except SettingsError as exc:
        for problem in exc.problems:
            print(f"quorum: setting {problem}", file=sys.stderr)
        return EXIT_SETTINGS
    try:
        policy = load_policy(settings.quorum_config)
    except PolicyError as exc:
        for error in exc.errors:
            print(error, file=sys.stderr)
        return EXIT_INVALID
    from bot.pipelines.callback_keys import CallbackKeyError

    try:
        serve(settings, policy)
    except CallbackKeyError as exc:  # raised while building the app, before it serves
        print(f"quorum: setting QUORUM_CALLBACK_SIGNING_KEY_FILE: {exc}", file=sys.stderr)
        return EXIT_SETTINGS
    return EXIT_OK
