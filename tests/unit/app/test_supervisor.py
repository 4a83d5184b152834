"""What the supervisor of `hacs serve --workers N` decides before it starts anything."""

from __future__ import annotations

import subprocess
import sys

from services.app.registry import kernel_modules
from services.app.supervisor import VECTOR_SERVICES, lite_path, worker_count
from services.common.settings import ALL_SERVICES, Settings


def test_the_services_that_need_milvus_are_the_ones_that_declare_it() -> None:
    declared = {s for s in ALL_SERVICES if "vector_index" in kernel_modules((s,))}
    assert declared == VECTOR_SERVICES


def test_milvus_lite_is_served_by_the_supervisor_only_when_needed() -> None:
    lite = Settings.from_env({"HACS_DATA_DIR": "/srv/hacs"})
    assert lite_path(lite) == "/srv/hacs/milvus.db"
    assert lite_path(Settings.from_env({"HACS_SERVICES": "tenant,records,sync"})) == ""
    server = Settings.from_env({"HACS_MILVUS_URI": "http://milvus:19530"})
    assert lite_path(server) == ""


def test_zero_workers_means_one_per_usable_core() -> None:
    assert worker_count(Settings.from_env({"HACS_WORKERS": "3"})) == 3
    assert (
        1
        <= worker_count(Settings.from_env({"HACS_WORKERS": "0"}))
        <= len(__import__("os").sched_getaffinity(0))
    )


def test_the_supervisor_does_not_load_the_services_libraries() -> None:
    """It stays small: importing it pulls in no service wiring, model or Milvus client."""
    heavy = "('pymilvus', 'torch', 'transformers', 'numpy')"
    probe = (
        "import sys, services.app.supervisor; "
        f"print(sorted(m for m in {heavy} if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_negative_workers_are_refused() -> None:
    try:
        Settings.from_env({"HACS_WORKERS": "-1"})
    except ValueError as exc:
        assert "HACS_WORKERS" in str(exc)
    else:
        raise AssertionError("HACS_WORKERS=-1 was accepted")
