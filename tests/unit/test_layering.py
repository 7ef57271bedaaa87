"""The layering of the code: import contracts (import-linter, in pyproject.toml) and no import circles."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import grimp

REPO = Path(__file__).resolve().parents[2]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def _lint(cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": str(cwd)}
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=300)


def test_the_import_contracts_are_kept() -> None:
    result = _lint(REPO)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_a_forbidden_import_breaks_its_contract(tmp_path: Path) -> None:
    # A copy of the code where the ticket lifecycle (a domain module) imports aiohttp.
    for name in ("core", "telephony"):
        shutil.copytree(REPO / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__", "static"))
    shutil.copytree(REPO / "sip-lab", tmp_path / "siplab", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(REPO / "pyproject.toml", tmp_path / "pyproject.toml")
    lifecycle = tmp_path / "core" / "calls" / "lifecycle.py"
    lifecycle.write_text(lifecycle.read_text() + "\nimport aiohttp  # noqa: E402,F401\n")
    result = _lint(tmp_path)
    assert result.returncode == 1, result.stdout + result.stderr
    assert "Domain modules import neither aiohttp, telephony nor the lab BROKEN" in result.stdout
    assert "core.calls.lifecycle -> aiohttp" in result.stdout


def _cycles(graph: grimp.ImportGraph, modules: set[str]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0

    def visit(node: str) -> None:
        nonlocal counter
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        for nxt in graph.find_modules_directly_imported_by(node) & modules:
            if nxt not in index:
                visit(nxt)
                low[node] = min(low[node], low[nxt])
            elif nxt in on_stack:
                low[node] = min(low[node], index[nxt])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for module in sorted(modules):
        if module not in index:
            visit(module)
    return found


def test_no_module_imports_itself_through_others() -> None:
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 5000))
    graph = grimp.build_graph("core", "telephony")
    modules = set(graph.modules)
    assert _cycles(graph, modules) == []


def test_no_two_packages_import_each_other() -> None:
    graph = grimp.build_graph("core", "telephony")
    packages = {m.rsplit(".", 1)[0] for m in graph.modules if m.count(".") >= 2} | {"core", "telephony"}
    # Package-level graph: an import between two modules is an import between their (sub)packages.
    circles = []
    for a in sorted(packages):
        for b in sorted(packages):
            if a < b and not a.startswith(b + ".") and not b.startswith(a + "."):
                if graph.chain_exists(a, b, as_packages=True) and graph.chain_exists(b, a, as_packages=True):
                    circles.append((a, b))
    assert circles == []
