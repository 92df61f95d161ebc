"""Imports point down only: each package imports from the packages below it in docs/design.md."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "src" / "qnnlab"


def layers() -> dict[str, int]:
    """Package -> layer number, from the numbered list under '## Layers' in docs/design.md."""
    text = (ROOT / "docs" / "design.md").read_text().split("## Layers", 1)[1].split("\n## ", 1)[0]
    found = {}
    for number, line in re.findall(r"^(\d+)\. (.*)$", text, re.M):
        for name in re.findall(r"`(\w+)`", line.split(":")[0]):
            found[name] = int(number)
    return found


def imported_packages(file: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(file.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "qnnlab":
            parts = node.module.split(".")
            names |= {parts[1]} if len(parts) > 1 else {alias.name for alias in node.names}
        elif isinstance(node, ast.Import):
            names |= {a.name.split(".")[1] for a in node.names if a.name.startswith("qnnlab.")}
    return names


def package_of(file: Path) -> str:
    part = file.relative_to(PACKAGE).parts[0]
    return part.removesuffix(".py")


def test_every_package_is_placed_in_a_layer():
    placed = layers()
    packages = {package_of(f) for f in PACKAGE.rglob("*.py")} - {"__init__"}
    assert packages <= set(placed), f"not in docs/design.md's layers: {sorted(packages - set(placed))}"


def test_imports_point_down_only():
    placed = layers()
    upward = []
    for file in sorted(PACKAGE.rglob("*.py")):
        own = package_of(file)
        if own == "__init__":
            continue
        for target in imported_packages(file):
            if target != own and placed.get(target, 0) >= placed[own]:
                upward.append(
                    f"{file.relative_to(ROOT)} (layer {placed[own]}) imports {target} (layer {placed.get(target)})"
                )
    assert not upward, "\n".join(upward)
