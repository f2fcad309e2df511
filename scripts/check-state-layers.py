#!/usr/bin/env python3
"""Keeps the layers of control-plane/src/state (see its module docs) from growing back into a
cycle: no entity module imports another entity module, the rules layer or the apply path, and
command.rs (the types) imports no module of the apply path. Run by .ci/run; exits non-zero and
names each offending import.

Only top-level `use` items count (a test module's `use super::*` is indented)."""

import pathlib
import re
import sys

STATE = pathlib.Path(__file__).resolve().parent.parent / "control-plane/src/state"
ENTITIES = ["application", "session", "task", "executor", "node"]
# What each checked file may import from its siblings.
ALLOWED = {
    **{e: {"command", "model", "tx", "queue", "cache", "StateConfig"} for e in ENTITIES},
    "command": set(),
}
USE = re.compile(r"^(?:pub(?:\([a-z]+\))? )?use (?:super|crate::state)::(.+?);", re.M | re.S)


def first_segments(tree: str) -> list[str]:
    """The sibling modules a use tree names: `a::x` -> a, `{a, b::{c}}` -> a, b."""
    tree = tree.strip()
    if not tree.startswith("{"):
        return [tree.split("::")[0].strip()]
    depth, item, items = 0, "", []
    for ch in tree[1:-1]:
        if ch == "," and depth == 0:
            items.append(item)
            item = ""
            continue
        depth += ch == "{"
        depth -= ch == "}"
        item += ch
    items.append(item)
    return [i.split("::")[0].strip() for i in items if i.strip() and i.strip() != "self"]


def main() -> int:
    problems = []
    for name, allowed in ALLOWED.items():
        source = (STATE / f"{name}.rs").read_text()
        for match in USE.finditer(source):
            line = source.count("\n", 0, match.start()) + 1
            for module in first_segments(match.group(1)):
                if module not in allowed:
                    problems.append(f"state/{name}.rs:{line}: imports `{module}`")
    for problem in problems:
        print(problem + " (cross-entity rules belong in state/rules/)", file=sys.stderr)
    if not problems:
        print("state layers: no entity imports another; command.rs imports no lifecycle module")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
