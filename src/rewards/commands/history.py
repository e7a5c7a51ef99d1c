"""``rewards rulesets diff A B`` and ``rewards rulesets status``.

``diff`` prints the unified diff, file by file, between two ruleset versions stored in
the database's ruleset history (``--database``, default REWARDS_DATABASE_URL) or ruleset
folders (an argument naming a folder is read from disk): what changed between the
version that made some awards and today's, or between a stored version and a change not
yet published. ``status`` asks a running server (``GET /health``, no key needed) which
version it serves and whether its last reload was refused, with the problems.
"""

from __future__ import annotations

import argparse
import json
import sys
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from rewards.settings import Settings

DEFAULT_URL = "http://127.0.0.1:8000"  # what `rewards serve` listens on by default


def register(actions: Any) -> None:
    """Add ``diff`` and ``status`` to the ``rulesets`` sub-commands."""
    diff = actions.add_parser(
        "diff",
        help="unified diff between two stored ruleset versions (or folders)",
        description="Prints the unified diff of every file that differs between A and B, "
        "each a version from the ruleset history (GET /v1/rulesets/history) or a folder. "
        "Exit code 0 (also when nothing differs: it says so), 1 when a version is not "
        "stored or the database cannot be read.",
    )
    diff.add_argument("old", metavar="A", help="a stored version, or a ruleset folder")
    diff.add_argument("new", metavar="B", help="a stored version, or a ruleset folder")
    diff.add_argument(
        "--database",
        help="the database whose history to read (default: REWARDS_DATABASE_URL, else "
        "sqlite:///rewards.db in the working folder); it must exist: nothing is created",
    )
    diff.set_defaults(run=run_diff)
    status = actions.add_parser(
        "status",
        help="the version a running server serves and its last refused reload",
        description="Asks the server's GET /health: the ruleset version serving, and when "
        "its last reload was refused (status degraded) every problem as "
        "file:line:column: message. Exit code 0 when it is ok, 1 when degraded or when the "
        "server does not answer.",
    )
    status.add_argument(
        "--url", default=DEFAULT_URL, help="the server's address (default: %(default)s)"
    )
    status.set_defaults(run=run_status)


class _Missing(LookupError):
    pass


def run_diff(args: argparse.Namespace) -> int:
    from rewards.analyst.history import RulesetVersionNotFound, compare, version_files
    from rewards.db.database import Database
    from rewards.db.migrate import readable_problem
    from rewards.runtime.history import folder_files

    sides: dict[str, dict[str, str] | None] = {}
    for label in (args.old, args.new):
        folder = Path(label)
        if folder.is_dir():
            try:
                sides[label] = folder_files(folder)
            except (OSError, UnicodeDecodeError) as error:
                print(f"rewards rulesets diff: cannot read {folder}: {error}", file=sys.stderr)
                return 1
        else:
            sides[label] = None
    if any(files is None for files in sides.values()):
        url = args.database or Settings.from_env().database_url
        if unreadable := readable_problem(url):
            print(f"rewards rulesets diff: {unreadable}", file=sys.stderr)
            return 1
        database = Database(url)
        try:
            with database.session(write=False) as session:
                for label, files in sides.items():
                    if files is None:
                        sides[label] = version_files(session, label)
        except RulesetVersionNotFound as missing:
            print(
                f"rewards rulesets diff: {missing.detail} (nor a folder; the stored versions: "
                "GET /v1/rulesets/history)",
                file=sys.stderr,
            )
            return 1
        finally:
            database.dispose()
    old, new = sides[args.old], sides[args.new]
    assert old is not None and new is not None
    changes = [c for c in compare(old, new, args.old, args.new) if c.change != "unchanged"]
    for change in changes:
        sys.stdout.write(change.diff)
    if not changes:
        print(f"{args.old} and {args.new}: no differences")
    return 0


def run_status(args: argparse.Namespace) -> int:
    url = args.url.rstrip("/")
    if not url.startswith(("http://", "https://")):
        print(f"rewards rulesets status: {url!r} is not an http(s) address", file=sys.stderr)
        return 2
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=10) as response:
            health: dict[str, Any] = json.loads(response.read())
    except (urllib.error.URLError, OSError, ValueError) as error:
        reason = getattr(error, "reason", error)
        print(f"rewards rulesets status: {url} does not answer: {reason}", file=sys.stderr)
        return 1
    version = health.get("rulesets_version")
    errors = health.get("reload_errors") or []
    if health.get("status") == "ok" and not errors:
        print(f"{url}: serving rulesets version {version}")
        return 0
    print(
        f"{url}: serving rulesets version {version}; the last reload was refused "
        f"({len(errors)} problem(s)), version {version} keeps serving:"
    )
    for line in errors:
        print(f"  {line}")
    return 1
