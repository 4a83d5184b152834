"""What a process builds: kernel modules resolved from the services it hosts."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.app.registry import SERVICES, kernel_modules
from services.cli import main
from services.common.runtime.platform import open_platform
from services.common.settings import Settings
from services.kernel import modules
from services.kernel.modules import Kernel, resolve
from services.kernel.tenancy.standing import TenancyRegistry


def test_each_module_comes_after_what_it_is_built_from() -> None:
    assert resolve(["lexical_index"]) == ("models", "vector_index", "lexical_index")
    assert resolve(["records", "embedder", "records"]) == (
        "tenancy",
        "records",
        "models",
        "embedder",
    )
    with pytest.raises(ValueError, match="unknown kernel module 'milvus'"):
        resolve(["milvus"])


def test_a_cycle_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(modules.DEPENDENCIES, "tenancy", ("records",))
    with pytest.raises(ValueError, match="records -> tenancy -> records"):
        resolve(["records"])


def test_a_target_builds_what_its_services_declare_and_no_more() -> None:
    assert kernel_modules(("tenant",)) == ("tenancy",)
    assert kernel_modules(("records", "sync")) == ("tenancy", "records")
    assert "vector_index" not in kernel_modules(("tenant", "records", "sync"))
    search = kernel_modules(("search",))
    assert {"records", "embedder", "vector_index", "lexical_index"} <= set(search)
    assert "rerankers" not in search
    every = kernel_modules(tuple(spec.key for spec in SERVICES))
    assert set(every) == set(modules.DEPENDENCIES)  # every module serves some service


def test_hacs_targets_lists_what_each_service_builds(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["targets"]) == 0
    lines = {line.split()[0]: line for line in capsys.readouterr().out.splitlines()}
    assert lines["tenant"].endswith("kernel modules: tenancy")
    assert lines["sync"].endswith("kernel modules: tenancy, records")
    assert set(lines) == {spec.key for spec in SERVICES} | {"all"}


async def test_a_module_no_hosted_service_declared_is_refused(tmp_path: Path) -> None:
    settings = Settings.from_env({}, data_dir=str(tmp_path), services="tenant")
    platform = await open_platform(settings, TenancyRegistry)
    try:
        kernel = Kernel(platform, kernel_modules(("tenant",)))
        kernel.patient_limit()  # declared (tenancy)
        with pytest.raises(RuntimeError, match="'records' is not declared"):
            kernel.record_store()
        with pytest.raises(RuntimeError, match="'vector_index' is not declared"):
            await kernel.vector_index()
    finally:
        await platform.close()
