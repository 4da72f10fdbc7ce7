"""Fail unless the running environment holds exactly the pins of floor-constraints.txt.

Run by `make test-floor` before its tests, so a resolver that silently picked a
newer release can never make the floor job test something else.
"""

from __future__ import annotations

import sys
from importlib.metadata import version
from pathlib import Path

CONSTRAINTS = Path(__file__).parents[1] / "floor-constraints.txt"


def pins() -> dict[str, str]:
    found = {}
    for line in CONSTRAINTS.read_text().splitlines():
        line = line.split("#", 1)[0].strip()
        if "==" in line:
            name, pinned = line.split("==", 1)
            found[name.strip()] = pinned.strip()
    return found


def main() -> int:
    wrong = {name: version(name) for name, pinned in pins().items() if version(name) != pinned}
    if wrong:
        print(f"floor environment does not hold the pinned versions: {wrong}", file=sys.stderr)
        return 1
    print("floor versions: " + ", ".join(f"{n} {v}" for n, v in pins().items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
