"""Command line: ``rewards serve | migrate | evaluate | consume | rulesets check | simulate |
backtest``."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from importlib.metadata import version

from rewards.commands import backtest, consume, dispatch, evaluate, rulesets, simulate
from rewards.runtime import private_logs
from rewards.settings import (
    Settings,
    SettingsError,
    environment,
    format_api_keys,
    generate_api_keys,
)


def _serve(args: argparse.Namespace) -> int:
    from rewards.db.database import Database
    from rewards.db.migrate import upgrade
    from rewards.runtime.http_protocol import ServeConfig
    from rewards.runtime.workers import SpreadWorkers

    settings = Settings.from_env()
    if not settings.api_keys:
        keys = generate_api_keys()
        # Printed once; the worker processes read them back from the environment.
        os.environ["REWARDS_API_KEYS"] = format_api_keys(keys)
        print("REWARDS_API_KEYS was not set; generated keys for this run:", flush=True)
        for key, role in keys.items():
            print(f"  {role:<11} {key}", flush=True)
        settings = settings.with_changes(api_keys=keys)
    database = Database(settings.database_url)
    upgrade(database.write_engine)  # once, before the workers start
    database.dispose()
    print(
        f"rewards serving on http://{args.host}:{args.port} "
        f"(database {settings.database_url.split('@')[-1]}, rulesets {settings.rulesets_dir})",
        flush=True,
    )
    # Every worker, a single one included, runs under a supervisor that starts a new
    # worker when one exits: a worker restarts itself to give back the memory the rules
    # engine keeps after reloads (runtime.reload). Each worker has a listening socket of
    # its own (runtime.workers), kept by the supervisor, so connections made meanwhile
    # wait for the new worker. The workers read their settings from the environment
    # (create_app's factory).
    os.environ["REWARDS_SUPERVISED"] = "1"
    config = ServeConfig(
        "rewards.app:create_app",
        request_timeout=settings.request_timeout_seconds,
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        log_level=args.log_level,
        access_log=False,
    )
    dispatcher = None
    if settings.dispatch_in_serve:  # the supervisor, not a worker, carries the outbox
        from rewards.notify.dispatcher import run_in_thread

        dispatcher = run_in_thread(Database(settings.database_url), settings)
    try:
        SpreadWorkers(config, args.host, args.port).run()
    finally:
        if dispatcher is not None:
            thread, stop = dispatcher
            stop.set()
            thread.join(timeout=10)
    return 0


def _migrate(_: argparse.Namespace) -> int:
    from rewards.db.database import Database
    from rewards.db.migrate import current_revision, upgrade

    database = Database(Settings.from_env().database_url)
    upgrade(database.write_engine)
    print(f"database at revision {current_revision(database.write_engine)}")
    return 0


def _environment_help() -> str:
    rows = environment()
    width = max(len(name) for name, _, _ in rows)
    lines = ["environment (read at start-up by serve and by each worker):"]
    for name, default, meaning in rows:
        lines.append(f"  {name:<{width}}  {meaning}")
        lines.append(f"  {'':<{width}}  default: {default}")
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    root = argparse.ArgumentParser(prog="rewards", description="Loyalty rules engine.")
    root.add_argument("--version", action="version", version=f"%(prog)s {version('rewards')}")
    commands = root.add_subparsers(dest="command", required=True)
    serve = commands.add_parser(
        "serve",
        help="serve the HTTP API",
        description="Serve the HTTP API (migrating the database first) with N worker\n"
        "processes sharing the port, under a supervisor that replaces a worker that stops.",
        epilog=_environment_help(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    serve.add_argument(
        "--host", default="127.0.0.1", help="address to listen on (default: %(default)s)"
    )
    serve.add_argument("--port", type=int, default=8000, help="port (default: %(default)s)")
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        help="worker processes sharing the port, each with a socket of its own "
        "(default: %(default)s)",
    )
    serve.add_argument(
        "--log-level",
        default="info",
        choices=["critical", "error", "warning", "info", "debug", "trace"],
        help="uvicorn's log level (default: %(default)s)",
    )
    serve.set_defaults(run=_serve)
    migrate = commands.add_parser("migrate", help="upgrade the database schema to this version")
    migrate.set_defaults(run=_migrate)
    evaluate.register(commands)
    consume.register(commands)
    rulesets.register(commands)
    simulate.register(commands)
    backtest.register(commands)
    dispatch.register(commands)
    return root


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    private_logs.install()
    try:
        result: int = args.run(args)
    except SettingsError as error:  # a malformed REWARDS_* variable: one line, no traceback
        print(f"rewards: {error}", file=sys.stderr)
        return 2
    return result


if __name__ == "__main__":
    sys.exit(main())
