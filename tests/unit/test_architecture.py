"""The shape of ``src/rewards``: no module takes part in an import cycle, and only the
ledger writes balances and ledger rows.

Every import counts, also those inside functions and under ``TYPE_CHECKING`` (grimp
reads them all). Upward imports between the layers are checked by import-linter's
contracts (``[tool.importlinter]`` in pyproject.toml, run by ``make lint``)."""

from __future__ import annotations

import re
from pathlib import Path

import grimp


def _cycles(graph: grimp.ImportGraph) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(root: str) -> None:  # iterative: the graph is deep enough for recursion
        nonlocal counter
        work = [(root, iter(sorted(graph.find_modules_directly_imported_by(root))))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            module, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append(
                        (child, iter(sorted(graph.find_modules_directly_imported_by(child))))
                    )
                elif child in on_stack:
                    low[module] = min(low[module], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[module])
            if low[module] == index[module]:
                component = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.append(member)
                    if member == module:
                        break
                if len(component) > 1:
                    found.append(sorted(component))

    for module in sorted(graph.modules):
        if module not in index:
            visit(module)
    return found


def test_no_module_takes_part_in_an_import_cycle() -> None:
    graph = grimp.build_graph("rewards", cache_dir=None)
    assert len(graph.modules) > 50  # the whole package was read
    assert _cycles(graph) == []


def test_the_cycle_finder_finds_a_cycle() -> None:
    graph = grimp.ImportGraph()
    for name in ("pkg", "pkg.a", "pkg.b", "pkg.c"):
        graph.add_module(name)
    graph.add_import(importer="pkg.a", imported="pkg.b")
    graph.add_import(importer="pkg.b", imported="pkg.a")
    graph.add_import(importer="pkg.b", imported="pkg.c")
    assert _cycles(graph) == [["pkg.a", "pkg.b"]]


SOURCE = Path(__file__).resolve().parents[2] / "src" / "rewards"
LEDGER = SOURCE / "money" / "ledger.py"

# What writing balances or ledger rows looks like in this code base: a balance set in an
# UPDATE, a ledger row built, inserted or bulk-inserted.
_MONEY_WRITES = re.compile(
    r"values\(\s*balance_cents\s*="
    r"|(?<!class )WalletTransaction\("
    r"|insert\(\s*(?:table_of\()?WalletTransaction"
    r"|BulkInsert\([^)]*WalletTransaction"
)


def _money_writers() -> list[str]:
    return sorted(
        str(path.relative_to(SOURCE))
        for path in SOURCE.rglob("*.py")
        if "migrations" not in path.parts and _MONEY_WRITES.search(path.read_text())
    )


def test_only_the_ledger_writes_balances_and_ledger_rows() -> None:
    assert _money_writers() == ["money/ledger.py"]
    assert LEDGER.exists()


def test_the_money_write_pattern_finds_each_way_of_writing() -> None:
    for text in (
        "update(wallets).values(balance_cents=w.balance_cents + 1)",
        "session.add(WalletTransaction(wallet_id=1))",
        "insert(WalletTransaction.__table__)",
        "insert(table_of(WalletTransaction))",
        "BulkInsert(dialect, table_of(WalletTransaction), COLUMNS)",
    ):
        assert _MONEY_WRITES.search(text), text
    assert not _MONEY_WRITES.search("select(WalletTransaction.amount_cents)")
