"""No module imports another package's private names (`_name`): `make lint` runs this.

import-linter (pyproject.toml) keeps the layers of `services` apart; this is
the rule it cannot see: a leading underscore means "this package's own", so
`from tests.support.postgres import _bin` in `bench/` (or a service reaching
into a private helper of the kernel) fails here. A private name may be
imported only by modules of the package that defines it — and by tests,
which may test anything.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOTS = ("services", "bench", "mesh", "scripts")  # tests/ may import anything


def module_of(path: Path) -> str:
    return ".".join(path.with_suffix("").parts)


def violations(repo: Path) -> list[str]:
    found = []
    for root in ROOTS:
        for path in sorted((repo / root).rglob("*.py")):
            relative = path.relative_to(repo)
            importer = module_of(relative)
            tree = ast.parse(path.read_text(), str(relative))
            for node in ast.walk(tree):
                if not isinstance(node, ast.ImportFrom) or node.level or not node.module:
                    continue
                owner = node.module.rsplit(".", 1)[0]  # the package the module belongs to
                for alias in node.names:
                    private = alias.name.startswith("_") and not alias.name.startswith("__")
                    if private and not (importer + ".").startswith(owner + "."):
                        found.append(
                            f"{relative}:{node.lineno}: imports {alias.name} from {node.module}, "
                            f"private to {owner}"
                        )
    return found


def main() -> int:
    found = violations(Path(__file__).resolve().parents[1])
    for line in found:
        print(line)
    print(f"private imports across packages: {len(found)}")
    return 1 if found else 0


if __name__ == "__main__":
    sys.exit(main())
