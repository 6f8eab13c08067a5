"""The rooms' arrows (docs/architecture.md): each package imports only the rooms its arrows reach, not
even inside a function. `photobot` (the composition root) and `benchmarks` may import any of them."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
OURS = {"bot", "inference", "storage", "training", "photobot", "benchmarks", "tests"}
MAY_IMPORT = {
    "bot": {"bot", "inference", "storage"},
    "inference": {"inference"},
    "storage": {"storage"},
    "training": {"training", "inference", "storage"},
}


def imported_rooms(path: Path) -> set[str]:
    rooms = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            rooms |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            rooms.add(node.module.split(".")[0])
    return rooms & OURS


@pytest.mark.parametrize("room", sorted(MAY_IMPORT))
def test_a_room_imports_only_the_rooms_its_arrows_reach(room: str) -> None:
    crossings = {
        str(path.relative_to(ROOT)): sorted(imported_rooms(path) - MAY_IMPORT[room])
        for path in sorted((ROOT / room).rglob("*.py"))
    }
    assert {path: rooms for path, rooms in crossings.items() if rooms} == {}
