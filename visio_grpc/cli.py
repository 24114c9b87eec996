"""The `visio` command line: serve, and manage API keys in the server's database."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from visio_grpc.config import Settings
from visio_grpc.domain.errors import VisioError
from visio_grpc.domain.keys import DEFAULT_OWNER
from visio_grpc.gateway import GatewayError
from visio_grpc.server import StartupError, VisioApp, open_storage, run_until_signalled


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="visio", description="Visio face-recognition service.")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the gRPC server and the Envoy REST gateway")
    serve.add_argument("--database", help="database URL (default: VISIO_DATABASE_URL or sqlite+aiosqlite:///visio.db)")
    serve.add_argument("--host", help="address to bind (default 127.0.0.1; 0.0.0.0 opens it to the network)")
    serve.add_argument("--grpc-port", type=int, help="native gRPC port (0 picks a free one)")
    serve.add_argument("--http-port", type=int, help="gateway port for REST and gRPC (0 picks a free one)")
    serve.add_argument("--no-gateway", action="store_true", help="serve gRPC only, without Envoy")
    serve.add_argument("--workers", type=int, help="engine worker processes (default: one per core)")
    serve.add_argument(
        "--no-first-key", action="store_true", help="do not create and print an API key when the database has none"
    )

    keys = commands.add_parser("keys", help="create, list and revoke API keys")
    keys_commands = keys.add_subparsers(dest="keys_command", required=True)
    create = keys_commands.add_parser("create", help="create a key; it is printed alone on the last line")
    create.add_argument("--owner", default=DEFAULT_OWNER, help="the tenant the key's faces belong to")
    keys_commands.add_parser("list", help="show key prefixes, owners, creation times and status")
    revoke = keys_commands.add_parser("revoke", help="revoke a key at once")
    revoke.add_argument("prefix", help="the key's prefix, as shown by 'visio keys list'")
    for sub in (create, keys_commands.choices["list"], revoke):
        sub.add_argument("--database", help="database URL (default: VISIO_DATABASE_URL or the server default)")
    return parser


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    for flag, name in (("database", "database_url"), ("host", "host"), ("grpc_port", "grpc_port"),
                       ("http_port", "http_port"), ("workers", "workers")):
        value = getattr(args, flag, None)
        if value is not None:
            overrides[name] = value
    if getattr(args, "no_gateway", False):
        overrides["gateway"] = False
    return Settings(**overrides)


async def _serve(settings: Settings, create_first_key: bool) -> None:
    if create_first_key:
        storage = await open_storage(settings.database_url)
        try:
            if not await storage.keys.list():
                new = await storage.keys.create(DEFAULT_OWNER)
                print("No API key existed, so one was created (shown only once; 'visio keys create' makes more):")
                print(f"VISIO_API_KEY={new.secret}", flush=True)
        finally:
            await storage.close()
    await run_until_signalled(VisioApp(settings))


async def _keys(settings: Settings, args: argparse.Namespace) -> None:
    storage = await open_storage(settings.database_url)
    try:
        if args.keys_command == "create":
            new = await storage.keys.create(args.owner)
            print(f"Created key {new.key.prefix} for owner {new.key.owner!r}; it is shown only once:")
            print(new.secret)
        elif args.keys_command == "list":
            keys = await storage.keys.list()
            print(f"{'PREFIX':<14} {'OWNER':<20} {'CREATED (UTC)':<20} STATUS")
            for key in keys:
                status = "active" if key.active else f"revoked {key.revoke_time:%Y-%m-%d %H:%M:%S}"
                print(f"{key.prefix:<14} {key.owner:<20} {key.create_time:%Y-%m-%d %H:%M:%S}  {status}")
        elif args.keys_command == "revoke":
            asked_at = datetime.now(UTC)
            key = await storage.keys.revoke(args.prefix)
            if key.revoke_time is not None and key.revoke_time < asked_at:
                print(f"Key {key.prefix} of owner {key.owner!r} was already revoked on {key.revoke_time:%Y-%m-%d %H:%M:%S} UTC.")
            else:
                print(f"Revoked key {key.prefix} of owner {key.owner!r}.")
    finally:
        await storage.close()


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        settings = _settings(args)
    except ValidationError as error:
        problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in error.errors())
        print(f"visio: invalid settings ({problems}); see the settings table in the README", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "serve":
            asyncio.run(_serve(settings, create_first_key=not args.no_first_key))
        else:
            asyncio.run(_keys(settings, args))
    except (VisioError, StartupError, GatewayError) as error:
        print(f"visio: {error}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
