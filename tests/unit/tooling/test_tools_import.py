"""Every bench and script imports: nothing type-checks them, and a rename in the services
must not leave one broken until someone runs it (bench/search_latency.py was, once)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
# Run with the deploy tools' own environment (.venv-deploy), checked by `make lint`.
DEPLOY_VENV = {"scripts/check_terraform.py", "scripts/validate_chart.py"}

IMPORT_ALL = """
import importlib.util, sys, traceback
sys.path.insert(0, sys.argv[1])
failed = []
for path in sys.argv[2:]:
    spec = importlib.util.spec_from_file_location("tool_under_test", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["tool_under_test"] = module
    try:
        spec.loader.exec_module(module)  # as a module: no main() runs
    except Exception:
        failed.append(path + ": " + traceback.format_exc(limit=1).strip().splitlines()[-1])
print("\\n".join(failed))
sys.exit(1 if failed else 0)
"""


def test_every_bench_and_script_imports() -> None:
    files = sorted(
        str(p.relative_to(ROOT))
        for pattern in ("bench/*.py", "bench/support/*.py", "scripts/*.py")
        for p in ROOT.glob(pattern)
        if p.name != "__init__.py"
    )
    files = [f for f in files if f not in DEPLOY_VENV]
    assert len(files) > 20
    run = subprocess.run(
        [sys.executable, "-c", IMPORT_ALL, str(ROOT), *files],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout + run.stderr[-2000:]
