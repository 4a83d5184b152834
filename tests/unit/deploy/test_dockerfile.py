"""The container image's recipe: linted, and shaped the way docs/image.md promises.

* hadolint (and checkov, when installed) pass the Dockerfile, and hadolint fails a broken one
  (so a clean run means something).
* The Dockerfile is multi-stage; the final stage installs no compiler, runs as the numeric
  non-root user 10001, starts `hacs serve` (tini -> hacs, default command `serve`), keeps
  the model offline, writes nowhere but /data and /tmp, never serves plaintext on the
  interfaces it binds (HACS_TLS=on), declares /data a volume and has a gRPC HEALTHCHECK
  (mesh/healthcheck.py, in the wheel; its behaviour: test_image_healthcheck.py); the build
  stage takes TORCH_VARIANT (cpu|cuda) and the torch pin from requirements/runtime.txt.
* .dockerignore sends what the Dockerfile copies and keeps virtualenvs, data and .git out.
* Every data file the services read at run time is in the wheel (pyproject's package-data):
  the image installs the project non-editable, so a file missing there is missing in it.

No image is built here (`make image` does that; it is slow). hadolint and checkov come from
scripts/install_deploy_tools.sh (`.venv-deploy/`); a test whose tool is missing skips.
"""

from __future__ import annotations

import fnmatch
import json
import re
import shlex
import subprocess
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
HADOLINT = ROOT / ".venv-deploy" / "bin" / "hadolint"
CHECKOV = ROOT / ".venv-deploy" / "bin" / "checkov"
INSTALL_HINT = "run scripts/install_deploy_tools.sh"
UID = "10001"
COMPILERS = {
    "gcc",
    "g++",
    "cpp",
    "clang",
    "build-essential",
    "make",
    "cmake",
    "gfortran",
    "cargo",
    "rustc",
    "libc6-dev",
    "python3-dev",
    "python3.11-dev",
}


@dataclass
class Instruction:
    keyword: str
    args: str
    line: int

    def exec_form(self) -> list[str]:
        value = json.loads(self.args)
        assert isinstance(value, list), f"line {self.line}: {self.keyword} is not in exec form"
        return [str(v) for v in value]


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[Instruction] = field(default_factory=list)

    def all(self, keyword: str) -> list[Instruction]:
        return [i for i in self.instructions if i.keyword == keyword]

    def env(self) -> dict[str, str]:
        found: dict[str, str] = {}
        for instruction in self.all("ENV"):
            for token in shlex.split(instruction.args):
                key, sep, value = token.partition("=")
                assert sep, f"line {instruction.line}: use ENV KEY=value"
                found[key] = value
        return found


def parse(text: str) -> tuple[list[Instruction], list[Stage]]:
    """Dockerfile instructions (continuations joined, comments dropped) and stages."""
    instructions: list[Instruction] = []
    pending = ""
    start = 0
    for number, raw in enumerate(text.splitlines(), start=1):
        stripped = raw.strip()
        if stripped.startswith("#") or (not stripped and not pending):
            continue  # comments (and parser directives); Docker drops them inside continuations too
        if not pending:
            start = number
        if stripped.endswith("\\"):
            pending += stripped[:-1] + " "
            continue
        pending += stripped
        keyword, _, args = pending.partition(" ")
        instructions.append(Instruction(keyword.upper(), args.strip(), start))
        pending = ""
    stages: list[Stage] = []
    for instruction in instructions:
        if instruction.keyword == "FROM":
            words = instruction.args.split()
            name = words[2] if len(words) >= 3 and words[1].upper() == "AS" else None
            stages.append(Stage(words[0], name))
        elif stages:
            stages[-1].instructions.append(instruction)
    return instructions, stages


INSTRUCTIONS, STAGES = parse(DOCKERFILE.read_text())
FINAL = STAGES[-1]
BUILD = STAGES[0]
GLOBAL_ARGS = {
    i.args.partition("=")[0]: i.args.partition("=")[2]
    for i in INSTRUCTIONS[: next(n for n, i in enumerate(INSTRUCTIONS) if i.keyword == "FROM")]
    if i.keyword == "ARG"
}


def _run(*command: str | Path, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(c) for c in command],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


# -- linters --------------------------------------------------------------------------------


@pytest.mark.skipif(not HADOLINT.exists(), reason=f"hadolint is missing ({INSTALL_HINT})")
def test_hadolint_passes_the_dockerfile() -> None:
    result = _run(HADOLINT, "--no-color", DOCKERFILE)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.mark.skipif(not HADOLINT.exists(), reason=f"hadolint is missing ({INSTALL_HINT})")
def test_hadolint_fails_a_broken_dockerfile(tmp_path: Path) -> None:
    broken = tmp_path / "Dockerfile"
    broken.write_text("FROM python\nRUN apt-get install curl\nRUN cd /tmp && pip install torch\n")
    result = _run(HADOLINT, "--no-color", broken)
    assert result.returncode != 0
    for rule in ("DL3006", "DL3008", "DL3013"):
        assert rule in result.stdout, result.stdout


@pytest.mark.skipif(not CHECKOV.exists(), reason=f"checkov is missing ({INSTALL_HINT})")
def test_checkov_finds_nothing_in_the_dockerfile() -> None:
    result = _run(
        CHECKOV,
        "-f",
        DOCKERFILE,
        "--framework",
        "dockerfile",
        "--skip-download",
        "--output",
        "json",
        "--quiet",
        "--compact",
        timeout=300,
    )
    report = json.loads(result.stdout)
    summary = report["summary"]
    failed = [c["check_id"] for c in report.get("results", {}).get("failed_checks", [])]
    assert summary["failed"] == 0, failed
    assert summary["passed"] > 50
    # Every skip carries a reason in the Dockerfile itself.
    for skip in re.findall(r"#checkov:skip=([A-Z0-9_]+)(:?.*)", DOCKERFILE.read_text()):
        assert skip[1].strip(": "), f"checkov skip {skip[0]} without a reason"


# -- structure ------------------------------------------------------------------------------


def test_multi_stage_on_one_pinned_base() -> None:
    assert len(STAGES) >= 2
    assert BUILD.name == "build" and FINAL.name == "runtime"
    assert BUILD.base == FINAL.base == "${BASE_IMAGE}"
    default = GLOBAL_ARGS["BASE_IMAGE"]
    image, _, tag = default.partition(":")
    assert image == "python" and tag.startswith("3.11-") and "bookworm" in tag, default
    # The runtime stage takes only the virtualenv from the build stage.
    copies = [i.args for i in FINAL.all("COPY") if "--from=" in i.args]
    assert copies == ["--from=build /opt/hacs /opt/hacs"]


def test_the_runtime_stage_installs_no_compiler() -> None:
    installed: set[str] = set()
    for run in FINAL.all("RUN"):
        for command in re.split(r"&&|;|\|\|", run.args):
            words = command.split()
            managers = ("apt-get", "apt", "apk", "dnf", "yum")
            if "install" in words and any(w in managers for w in words):
                installed |= {w.split("=")[0] for w in words if not w.startswith("-")}
    assert installed, "expected the runtime stage to install tini"
    assert not installed & COMPILERS, installed & COMPILERS
    assert "--no-install-recommends" in " ".join(r.args for r in FINAL.all("RUN"))


def test_runs_as_the_numeric_non_root_user() -> None:
    users = FINAL.all("USER")
    assert users, "the runtime stage has no USER"
    user, _, group = users[-1].args.partition(":")
    assert user == UID and group == UID, users[-1].args
    # The user exists (libraries call getpwuid) and owns /data.
    setup = " ".join(r.args for r in FINAL.all("RUN"))
    assert f"--uid {UID}" in setup and f"--gid {UID}" in setup
    assert re.search(rf"install -d -o {UID} -g {UID} -m 0700 /data", setup)


def test_the_entrypoint_is_hacs_serve() -> None:
    (entrypoint,) = FINAL.all("ENTRYPOINT")
    (cmd,) = FINAL.all("CMD")
    argv = entrypoint.exec_form() + cmd.exec_form()
    assert argv == ["tini", "--", "hacs", "serve"], argv
    # `hacs serve` reads HACS_SERVICES (no --only means: that variable, default all).
    cli = (ROOT / "services" / "cli.py").read_text()
    assert '"--only"' in cli
    settings = (ROOT / "services" / "common" / "settings.py").read_text()
    assert "HACS_SERVICES" in settings


def test_torch_variant_and_pin() -> None:
    args = {i.args.partition("=")[0]: i.args.partition("=")[2] for i in BUILD.all("ARG")}
    assert args.get("TORCH_VARIANT") == "cpu"
    install = " ".join(r.args for r in BUILD.all("RUN"))
    for variant in ("cpu", "cuda"):
        assert re.search(rf"{variant}\)\s*torch_index=", install), variant
    assert "download.pytorch.org/whl/cpu" in install
    # The torch release is the one requirements/runtime.txt pins (one source of truth).
    assert "grep -E '^torch==' /src/deps/runtime.txt" in install
    pins = (ROOT / "requirements" / "runtime.txt").read_text()
    assert re.search(r"^torch==\d+\.\d+\.\d+$", pins, re.MULTILINE)


def test_environment_offline_and_writable_paths() -> None:
    env = FINAL.env()
    assert env["HF_HUB_OFFLINE"] == "1" and env["TRANSFORMERS_OFFLINE"] == "1"
    assert env["HACS_DATA_DIR"] == "/data"
    assert env["HACS_GRPC_LISTEN"] == "0.0.0.0:50051"
    assert env["HACS_HTTP_LISTEN"] == "0.0.0.0:9464"
    assert env["PYTHONDONTWRITEBYTECODE"] == "1"
    assert env["PATH"].startswith("/opt/hacs/bin:")  # hacs, envoy, grpcurl
    # Every home, cache or temp directory is under /tmp or /data: the root may be read-only.
    writable = [k for k in env if k in ("HOME", "TMPDIR") or k.endswith(("_HOME", "_CACHE_DIR"))]
    writable += [k for k in env if k in ("MPLCONFIGDIR",)]
    assert {"HOME", "TMPDIR", "HF_HOME", "XDG_CACHE_HOME", "TORCH_HOME"} <= set(writable)
    for key in writable:
        assert env[key].startswith(("/tmp", "/data")), f"{key}={env[key]}"


def test_the_image_alone_never_serves_plaintext_off_loopback() -> None:
    """The listeners bind every interface; HACS_TLS=on makes them TLS (or, without
    certificates, `hacs serve` refuses to start), and the settings accept the image's
    environment as it is: `hacs migrate`, `hacs config` and `hacs certs` run unchanged."""
    from services.common.settings import Settings

    env = FINAL.env()
    assert env["HACS_TLS"] == "on"
    settings = Settings.from_env({k: v for k, v in env.items() if k.startswith("HACS_")})
    assert settings.tls == "on"
    # Without it the settings refuse the image's listeners, naming what to set.
    plain = {k: v for k, v in env.items() if k.startswith("HACS_") and k != "HACS_TLS"}
    with pytest.raises(ValueError, match="HACS_TLS=on"):
        Settings.from_env(plain)


def test_data_volume_workdir_and_ports() -> None:
    (volume,) = FINAL.all("VOLUME")
    assert "/data" in volume.exec_form()
    assert FINAL.all("WORKDIR")[-1].args == "/data"
    ports = {p for i in FINAL.all("EXPOSE") for p in i.args.split()}
    assert {"50051", "9464", "8080"} <= ports


def test_healthcheck_asks_grpc_health_on_the_configured_port() -> None:
    (check,) = FINAL.all("HEALTHCHECK")
    options, _, command = check.args.partition("CMD ")
    assert "--start-period=" in options
    argv = json.loads(command)
    # A module of the wheel (mesh/ is installed, services/ is the server's own), run
    # isolated (-I: nothing imported from the working directory /data).
    assert argv == ["python3", "-I", "-m", "mesh.healthcheck"], argv
    source = (ROOT / "mesh" / "healthcheck.py").read_text()
    for word in ("grpc_health", "HACS_GRPC_LISTEN", "SERVING", "tls_files"):
        assert word in source, word


def test_the_build_script_keeps_the_healthcheck() -> None:
    script = (ROOT / "scripts" / "build_image.sh").read_text()
    # The OCI image format has no HEALTHCHECK; buildah's default format is OCI.
    assert "--format docker" in script
    assert "BASE_IMAGE=$BASE_IMAGE" in script and "TORCH_VARIANT=$TORCH_VARIANT" in script
    for name in ("build_image.sh", "image_smoke_test.sh"):
        path = ROOT / "scripts" / name
        assert path.stat().st_mode & 0o111, f"{name} is not executable"
        assert _run("bash", "-n", path).returncode == 0


# -- build context --------------------------------------------------------------------------


def _glob_regex(pattern: str) -> str:
    out, i = "", 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out, i = out + "(?:.*/)?", i + 3
        elif pattern.startswith("**", i):
            out, i = out + ".*", i + 2
        elif pattern[i] == "*":
            out, i = out + "[^/]*", i + 1
        elif pattern[i] == "?":
            out, i = out + "[^/]", i + 1
        else:
            out, i = out + re.escape(pattern[i]), i + 1
    return out


def _ignored(path: str, patterns: list[str]) -> bool:
    """Docker's .dockerignore rule: the last matching pattern wins; a pattern matches a
    path or any of its parent directories."""
    verdict = False
    parts = path.split("/")
    prefixes = ["/".join(parts[: n + 1]) for n in range(len(parts))]
    for pattern in patterns:
        negate = pattern.startswith("!")
        regex = _glob_regex(pattern.lstrip("!").strip("/"))
        if any(re.fullmatch(regex, p) for p in prefixes):
            verdict = not negate
    return verdict


def test_dockerignore_sends_what_the_dockerfile_copies() -> None:
    patterns = [
        line.strip()
        for line in DOCKERIGNORE.read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    sources = []
    for copy in BUILD.all("COPY"):
        words = [w for w in copy.args.split() if not w.startswith("--")]
        sources += [w for w in words[:-1] if "[" not in w]
    assert {"requirements/runtime.txt", "pyproject.toml", "services", "mesh"} <= set(sources)
    for source in sources:
        assert not _ignored(source, patterns), f"{source} is excluded from the build context"
        assert (ROOT / source).exists(), source
    assert not _ignored("build/wheelhouse/torch-2.13.0+cpu-cp311-cp311-linux_x86_64.whl", patterns)
    for private in (
        ".venv/bin/python",
        ".git/config",
        ".hacs/hacs.db",
        "tests/conftest.py",
        "charts/hacs/values.yaml",
        "services/__pycache__/cli.cpython-311.pyc",
        "hacs_mesh.egg-info/PKG-INFO",
        "build/lib/services/cli.py",
    ):
        assert _ignored(private, patterns), f"{private} would be sent to the builder"


def test_every_runtime_data_file_is_in_the_wheel() -> None:
    """The Dockerfile refuses to build otherwise; this says so before a slow build."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]
    globs = [g for patterns in config["package-data"].values() for g in patterns]
    missing = []
    for top in ("services", "mesh"):
        for path in (ROOT / top).rglob("*"):
            if (
                path.is_file()
                and path.suffix not in (".py", ".pyc", ".md")
                and path.name != "LICENSE"
                and "__pycache__" not in path.parts
                and not any(fnmatch.fnmatch(path.name, g) for g in globs)
            ):
                missing.append(str(path.relative_to(ROOT)))
    assert not missing, f"not in [tool.setuptools.package-data], so not in the image: {missing}"
