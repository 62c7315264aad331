"""The Dockerfile's default build (docker, the official python slim image) keeps its invariants.

tests/image/test_image.py builds and runs the image for real, with podman on a local Debian base (build
arguments choose the base). The default build, what users run, cannot be built here (no registry),
so its text is checked: dockerfile-parse turns the Dockerfile into instructions, split here into
stages, with `FROM ${ARG}` resolved to the ARG's default. Each `check_*` function returns a list of
problems, so the same function runs on the real Dockerfile and on broken copies of its text (the
mutation tests at the end show each check can fail).
"""

from __future__ import annotations

import io
import json
import re
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import pytest
from dockerfile_parse import DockerfileParser

ROOT = Path(__file__).resolve().parents[2]
DOCKERFILE = ROOT / "Dockerfile"
APP_UID = 10001
PORT = 8000
VENV = "/app/.venv"
SERVE = ["housing-api", "serve", "--host", "0.0.0.0"]
PINNED_SLIM_PYTHON = re.compile(r"^python:3\.11\.\d+-slim(-bookworm|-trixie)?$")
PINNED_UV = re.compile(r"^ghcr\.io/astral-sh/uv:\d+\.\d+\.\d+$")
COMPILERS = re.compile(r"\b(gcc|g\+\+|clang|build-essential|libc6-dev|make)\b")
OCI_LABELS = ("title", "description", "version", "revision", "created", "source", "licenses")


@dataclass
class Stage:
    base: str
    name: str | None
    instructions: list[tuple[str, str]] = field(default_factory=list)
    parent: Stage | None = None  # the stage this one is FROM, when it is a stage of this file

    def values(self, instruction: str) -> list[str]:
        return [value for name, value in self.instructions if name == instruction]

    def lineage(self) -> list[Stage]:
        """This stage and the stages it is built on, nearest first."""
        return [self, *(self.parent.lineage() if self.parent else [])]

    def root_base(self) -> str:
        """The image at the bottom of this stage's lineage."""
        return self.lineage()[-1].base


def arg_defaults(values: list[str]) -> dict[str, str]:
    """ARG NAME=default (quotes stripped); ARG NAME alone has no default."""
    defaults = {}
    for value in values:
        name, sep, default = value.partition("=")
        if sep:
            defaults[name.strip()] = default.strip().strip('"')
    return defaults


def parse_stages(text: str) -> list[Stage]:
    # A file object, never a path: setting content on a path-based parser writes the file.
    parser = DockerfileParser(fileobj=io.BytesIO(text.encode()))
    stages: list[Stage] = []
    global_args: list[str] = []
    for item in parser.structure:
        if item["instruction"] == "FROM":
            words = [w for w in item["value"].split() if not w.startswith("--platform")]
            named = len(words) == 3 and words[1].upper() == "AS"
            base = re.sub(r"\$\{(\w+)\}", lambda m: arg_defaults(global_args).get(m[1], m[0]), words[0])
            parent = next((s for s in stages if s.name == base), None)
            stages.append(Stage(base=base, name=words[2] if named else None, parent=parent))
        elif not stages and item["instruction"] == "ARG":
            global_args.append(item["value"])
        elif stages and item["instruction"] != "COMMENT":
            stages[-1].instructions.append((item["instruction"], item["value"]))
    return stages


def stage(stages: list[Stage], name: str) -> Stage:
    return next((s for s in stages if s.name == name), Stage(base="", name=None))


def runs_of(stage_: Stage) -> str:
    """Every RUN of the stage and its parents, with ARG defaults substituted."""
    args = arg_defaults([v for s in stage_.lineage() for v in s.values("ARG")])
    runs = " ".join(v for s in stage_.lineage() for v in s.values("RUN"))
    return re.sub(r"\$\{?(\w+)\}?", lambda m: args.get(m[1], m[0]), runs)


def copy_sources(value: str) -> tuple[str | None, list[str], str]:
    """`--from=x a b dest` -> ("x", ["a", "b"], "dest")."""
    words = value.split()
    options = [w for w in words if w.startswith("--")]
    paths = [w for w in words if not w.startswith("--")]
    source_stage = next((o.split("=", 1)[1] for o in options if o.startswith("--from=")), None)
    return source_stage, paths[:-1], paths[-1]


def env_of(stage: Stage) -> dict[str, str]:
    env: dict[str, str] = {}
    for value in stage.values("ENV"):
        for key, val in re.findall(r'(\w+)=("[^"]*"|\S+)', value):
            env[key] = val.strip('"')
    return env


# --- checks ------------------------------------------------------------------------------------


def check_stages(stages: list[Stage]) -> list[str]:
    """A builder and a runtime stage, both on the same pinned slim Python by default."""
    builder, runtime = stage(stages, "builder"), stages[-1] if stages else Stage(base="", name=None)
    if len(stages) < 2 or builder.name is None or builder is runtime:
        return [f"expected a builder stage and a runtime stage, found {[s.name for s in stages]}"]
    problems = [
        f"stage {s.name}: base {s.root_base()!r} is not a pinned python:3.11.N-slim tag"
        for s in (builder, runtime)
        if not PINNED_SLIM_PYTHON.match(s.root_base())
    ]
    if builder.root_base() != runtime.root_base():
        # The venv's interpreter is a symlink into the base image: both must be the same one.
        problems.append(f"builder ({builder.root_base()}) and runtime ({runtime.root_base()}) differ")
    return problems


def check_builder(stages: list[Stage]) -> list[str]:
    """The builder has gcc and libc headers, a pinned uv, and syncs the lock without dev deps or extras."""
    builder, problems = stage(stages, "builder"), []
    if not re.search(r"apt-get install[^&]*\bgcc\b[^&]*\blibc6-dev\b", runs_of(builder)):
        problems.append("builder does not apt-get install gcc libc6-dev")
    uv_stages = [copy_sources(v)[0] for v in builder.values("COPY") if "/uv" in v]
    uv_bases = [stage(stages, name or "").root_base() or name for name in uv_stages]
    if not any(PINNED_UV.match(b or "") for b in uv_bases):
        problems.append(f"builder gets uv from {uv_bases or 'nowhere'}, not a pinned uv image")
    if not re.search(r"pip install[^&]*uv==\d+\.\d+\.\d+", runs_of(stage(stages, "uv-pip"))):
        problems.append("the uv-pip stage does not pip install a pinned uv")
    syncs = [r for r in builder.values("RUN") if "uv sync" in r]
    for flag in ("--frozen", "--no-dev", "--no-editable"):
        if flag not in (syncs[-1:] or [""])[0]:
            problems.append(f"builder's last `uv sync` lacks {flag}")
    if any(re.search(r"--extra\b|--all-extras", r) for r in syncs):
        problems.append("builder installs an extra (the `train` extra is scikit-learn: not in the runtime)")
    if env_of(builder).get("UV_PROJECT_ENVIRONMENT", f"{VENV}") != VENV:
        problems.append(f"builder's venv is not {VENV}")
    return problems


def check_fetch_reads_s3(stages: list[Stage]) -> list[str]:
    """The fetch stage installs the `mlflow` extra, which the lock resolves with boto3 (the client
    MLflow uses for s3:// artifact stores): the runtime stays without both (check_builder)."""
    syncs = re.findall(r"uv sync[^&;]*", " ".join(stage(stages, "fetch").values("RUN")))
    problems = [] if any("--extra mlflow" in run for run in syncs) else ["the fetch stage does not sync --extra mlflow"]
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    project = next(p for p in lock["package"] if p["name"] == "housing-api")
    if "boto3" not in {d["name"] for d in project.get("optional-dependencies", {}).get("mlflow", [])}:
        problems.append("uv.lock's mlflow extra has no boto3: the fetch image could not read s3:// stores")
    return problems


def check_runtime_is_lean(stages: list[Stage]) -> list[str]:
    """The runtime copies the venv from the builder and installs neither compilers nor uv."""
    runtime, problems = stages[-1], []
    if COMPILERS.search(runs_of(runtime)) or re.search(r"\buv\b", runs_of(runtime)):
        problems.append(f"runtime (or its base stage) installs build tools: {runs_of(runtime)[:80]}")
    copies = [copy_sources(v) for v in runtime.values("COPY") + runtime.values("ADD")]
    if any(
        src in ("uv", "uv-image", "uv-pip") or PINNED_UV.match(src or "") or "/uv" in srcs for src, srcs, _ in copies
    ):
        problems.append("runtime copies uv")
    if ("builder", [VENV], VENV) not in copies:
        problems.append(f"runtime does not COPY --from=builder {VENV} {VENV}")
    return problems


def check_secrets_stay_out_of_layers(stages: list[Stage]) -> list[str]:
    """The CA bundle reaches the build only as a secret mount, optional, never COPY'd or ADDed."""
    problems = []
    for s in stages:
        for value in s.values("COPY") + s.values("ADD"):
            if re.search(r"ca-certificates|\.crt\b|\.pem\b|secret", value):
                problems.append(f"stage {s.name} copies a certificate or secret into a layer: {value[:80]}")
        for run in s.values("RUN"):
            if "/run/secrets/" in run and "type=secret" not in run:
                problems.append(f"stage {s.name} reads /run/secrets without a secret mount")
            if "type=secret" in run and "required=false" not in run:
                problems.append(f"stage {s.name}: the secret mount must be optional (required=false)")
    if not any("type=secret" in r for r in stage(stages, "builder").values("RUN")):
        problems.append("builder never mounts the CA bundle secret (PyPI behind a TLS-intercepting proxy)")
    return problems


def check_user(stages: list[Stage]) -> list[str]:
    """The runtime runs as the fixed numeric uid/gid 10001, created in the image."""
    runtime, problems = stages[-1], []
    users = runtime.values("USER")
    if not users or users[-1] not in (f"{APP_UID}", f"{APP_UID}:{APP_UID}"):
        problems.append(f"final USER is {users[-1] if users else None!r}, expected {APP_UID}")
    runs = " ".join(runtime.values("RUN"))
    if not re.search(rf"useradd\b[^&]*--uid {APP_UID}\b", runs):
        problems.append(f"runtime creates no user with uid {APP_UID}")
    return problems


def check_model_baked_in(stages: list[Stage]) -> list[str]:
    """MODEL_PATH is absolute and names the model files the runtime copies in."""
    runtime = stages[-1]
    model_path = env_of(runtime).get("MODEL_PATH", "")
    if not model_path.startswith("/"):
        return [f"MODEL_PATH {model_path!r} is not absolute"]
    target = PurePosixPath(model_path)
    for _, sources, dest in (copy_sources(v) for v in runtime.values("COPY")):
        names = {PurePosixPath(s).name for s in sources}
        if {"model.joblib", "model.json", "model.forest.npz"} <= names and dest.rstrip("/") == str(target.parent):
            return []
    return [f"runtime does not COPY model.joblib, model.json and model.forest.npz into {target.parent}/"]


def check_entrypoint(stages: list[Stage]) -> list[str]:
    """EXPOSE 8000; an exec-form CMD runs the console script from the venv on PATH."""
    runtime, problems = stages[-1], []
    if str(PORT) not in " ".join(runtime.values("EXPOSE")).split():
        problems.append(f"runtime does not EXPOSE {PORT}")
    if runtime.values("ENTRYPOINT"):
        problems.append("an ENTRYPOINT would wrap the CMD (and may put a shell before the server)")
    cmd = (runtime.values("CMD") or [""])[-1]
    try:
        argv = json.loads(cmd)
    except json.JSONDecodeError:
        argv = None
    if not isinstance(argv, list) or argv[: len(SERVE)] != SERVE:
        problems.append(f"CMD {cmd!r} is not the exec form of {SERVE}")
    elif "--port" in argv and argv[argv.index("--port") + 1] != str(PORT):
        problems.append(f"CMD serves on a port other than {PORT}")
    if f"{VENV}/bin" not in env_of(runtime).get("PATH", "").split(":"):
        problems.append(f"PATH does not include {VENV}/bin")
    return problems


def check_healthcheck(stages: list[Stage]) -> list[str]:
    """A HEALTHCHECK against /livez with the standard library (slim images have no curl)."""
    checks = stages[-1].values("HEALTHCHECK")
    if not checks:
        return ["runtime has no HEALTHCHECK"]
    check = checks[-1]
    problems = []
    if re.search(r"\b(curl|wget)\b", check):
        problems.append("HEALTHCHECK uses curl/wget, which the slim image does not have")
    if "python" not in check or "/livez" not in check:
        problems.append("HEALTHCHECK does not call /livez with python")
    return problems


def check_labels(stages: list[Stage]) -> list[str]:
    """OCI image labels for provenance."""
    labels = " ".join(stages[-1].values("LABEL"))
    return [
        f"missing LABEL org.opencontainers.image.{key}"
        for key in OCI_LABELS
        if f"org.opencontainers.image.{key}=" not in labels
    ]


CHECKS = [
    check_stages,
    check_builder,
    check_runtime_is_lean,
    check_secrets_stay_out_of_layers,
    check_user,
    check_model_baked_in,
    check_entrypoint,
    check_healthcheck,
    check_labels,
    check_fetch_reads_s3,
]


@pytest.fixture(scope="module")
def dockerfile() -> str:
    return DOCKERFILE.read_text()


@pytest.mark.parametrize("check", CHECKS, ids=lambda c: c.__name__)
def test_dockerfile_keeps_its_invariants(dockerfile: str, check: Callable[..., list[str]]) -> None:
    assert check(parse_stages(dockerfile)) == []


def test_the_console_script_and_model_the_image_needs_exist() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert project["project"]["scripts"]["housing-api"] == "housing_api.cli:main"
    for name in ("model.joblib", "model.json", "model.forest.npz"):
        assert (ROOT / "model" / name).is_file(), name


# --- each check fails when its property breaks --------------------------------------------------

DOCKERFILE_MUTATIONS = [
    ("single-stage", check_stages, r"(?s)^.*?FROM base AS runtime", "FROM python:3.11.11-slim-bookworm AS runtime"),
    ("runtime-latest", check_stages, r"FROM base AS runtime", "FROM python:latest AS runtime"),
    ("base-latest", check_stages, r"ARG BASE_IMAGE=\S+", "ARG BASE_IMAGE=python:latest"),
    ("no-gcc", check_builder, r'BUILD_APT="gcc libc6-dev"', 'BUILD_APT="libc6-dev"'),
    (
        "uv-latest",
        check_builder,
        r"ARG UV_IMAGE=ghcr\.io/astral-sh/uv:[\d.]+",
        "ARG UV_IMAGE=ghcr.io/astral-sh/uv:latest",
    ),
    ("uv-pip-unpinned", check_builder, r'"uv==\$\{UV_VERSION\}"', "uv"),
    ("editable-install", check_builder, r"--no-dev --no-editable", "--no-dev"),
    ("dev-deps", check_builder, r"--frozen --no-dev --no-editable", "--frozen --no-editable"),
    ("train-extra", check_builder, r"--no-dev --no-editable", "--no-dev --extra train --no-editable"),
    ("fetch-without-mlflow", check_fetch_reads_s3, r"--no-editable --extra mlflow", "--no-editable"),
    ("base-apt-compiler", check_runtime_is_lean, r'ARG BASE_APT=""', 'ARG BASE_APT="gcc"'),
    (
        "ca-copied",
        check_secrets_stay_out_of_layers,
        r"(?m)^(USER 10001)",
        "COPY ca-certificates.crt /etc/ssl/certs/proxy.crt\n\\1",
    ),
    ("secret-required", check_secrets_stay_out_of_layers, r"required=false", "required=true"),
    (
        "no-secret",
        check_secrets_stay_out_of_layers,
        r"(?s)(COPY pyproject.toml.*?)--mount=type=secret,id=ca-certificates,required=false",
        r"\1",
    ),
    (
        "runtime-compiler",
        check_runtime_is_lean,
        r"(?m)^(ARG VERSION)",
        "RUN apt-get update && apt-get install -y gcc\n\\1",
    ),
    (
        "runtime-uv",
        check_runtime_is_lean,
        r"(?m)^(USER 10001)",
        "COPY --from=ghcr.io/astral-sh/uv:0.13.9 /uv /bin/uv\n\\1",
    ),
    ("venv-not-copied", check_runtime_is_lean, r"COPY --from=builder /app/.venv /app/.venv", ""),
    ("root-user", check_user, r"USER 10001:10001", "USER root"),
    ("named-user", check_user, r"USER 10001:10001", "USER app"),
    (
        "relative-model-path",
        check_model_baked_in,
        r"MODEL_PATH=/app/model/model.joblib",
        "MODEL_PATH=model/model.joblib",
    ),
    ("model-not-copied", check_model_baked_in, r"COPY model/model.joblib model/model.json", "#"),
    (
        "shell-form-cmd",
        check_entrypoint,
        r"(?m)^CMD \[.*\]",
        "CMD housing-api serve --host 0.0.0.0",
    ),
    ("loopback-only", check_entrypoint, r'"0\.0\.0\.0"', '"127.0.0.1"'),
    ("no-expose", check_entrypoint, r"EXPOSE 8000", "EXPOSE 9000"),
    ("venv-off-path", check_entrypoint, r'PATH="/app/.venv/bin:', 'PATH="'),
    (
        "curl-healthcheck",
        check_healthcheck,
        r'CMD \["python".*\]',
        "CMD curl -f http://127.0.0.1:8000/livez",
    ),
    ("no-healthcheck", check_healthcheck, r"(?m)^HEALTHCHECK.*\n.*\n", ""),
    (
        "no-revision-label",
        check_labels,
        r'org\.opencontainers\.image\.revision="\$\{REVISION\}"',
        "",
    ),
]


@pytest.mark.parametrize(
    ("check", "pattern", "replacement"),
    [m[1:] for m in DOCKERFILE_MUTATIONS],
    ids=[m[0] for m in DOCKERFILE_MUTATIONS],
)
def test_check_reports_the_broken_property(
    dockerfile: str, check: Callable[..., list[str]], pattern: str, replacement: str
) -> None:
    broken, count = re.subn(pattern, replacement, dockerfile, count=1)
    assert count == 1, f"mutation {pattern!r} did not apply: the Dockerfile changed shape"
    assert check(parse_stages(broken)) != []


# --- .dockerignore ------------------------------------------------------------------------------


def dockerignore_excludes(patterns: list[str], path: str) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parents decides."""
    excluded = False
    parts = path.split("/")
    candidates = ["/".join(parts[: i + 1]) for i in range(len(parts))]
    for raw in patterns:
        negate = raw.startswith("!")
        pattern = raw[1:] if negate else raw
        regex = re.escape(pattern.strip("/")).replace(r"\*\*/", "(.*/)?").replace(r"\*\*", ".*")
        regex = regex.replace(r"\*", "[^/]*").replace(r"\?", "[^/]")
        regex = re.sub(r"\\\[(.*?)\\\]", r"[\1]", regex)
        if any(re.fullmatch(regex, c) for c in candidates):
            excluded = not negate
    return excluded


@pytest.fixture(scope="module")
def ignore_patterns() -> list[str]:
    lines = (ROOT / ".dockerignore").read_text().splitlines()
    return [line.strip() for line in lines if line.strip() and not line.startswith("#")]


@pytest.mark.parametrize(
    "path",
    [
        "pyproject.toml",
        "uv.lock",
        "README.md",
        "setup.py",
        "src/housing_api/__init__.py",
        "src/housing_api/cli.py",
        "model/model.joblib",
        "model/model.json",
        "model/model.forest.npz",
    ],
)
def test_build_context_holds_what_the_dockerfile_copies(ignore_patterns: list[str], path: str) -> None:
    assert not dockerignore_excludes(ignore_patterns, path)


@pytest.mark.parametrize(
    "path",
    [
        ".venv/bin/python",
        ".git/HEAD",
        "tests/deployment/test_dockerfile.py",
        ".k8s/base/kustomization.yaml",
        "src/housing_api/__pycache__/cli.cpython-311.pyc",
        "src/housing_api/_fast.cpython-311.so",
        "build/k8s/prod.yaml",
        ".env",
        "model/old-model.joblib",
    ],
)
def test_build_context_leaves_out_local_state(ignore_patterns: list[str], path: str) -> None:
    assert dockerignore_excludes(ignore_patterns, path)


def test_every_dockerfile_copy_source_is_in_the_context(dockerfile: str, ignore_patterns: list[str]) -> None:
    for stage in parse_stages(dockerfile):
        for value in stage.values("COPY"):
            source_stage, sources, _ = copy_sources(value)
            if source_stage is not None:
                continue
            for source in sources:
                # A wildcard source (setup.p[y]) copies whatever exists; it may match nothing.
                paths = [p.relative_to(ROOT).as_posix() for p in ROOT.glob(source)]
                if not any(c in source for c in "*?["):
                    paths = [source]
                for path in paths:
                    assert not dockerignore_excludes(ignore_patterns, path), path


# --- make image ---------------------------------------------------------------------------------


def test_make_image_tags_with_the_git_sha_and_builds_either_way() -> None:
    makefile = (ROOT / "Makefile").read_text()
    phony = " ".join(line for line in makefile.splitlines() if line.startswith(".PHONY"))
    assert {"image", "image-test"} <= set(phony.split())
    target = re.search(r"(?ms)^image:.*?(?=^\S)", makefile + "\nend")
    assert target, "no image target"
    assert "scripts/image-build.sh $(IMAGE):$(IMAGE_TAG)" in target[0]
    assert "git rev-parse --short HEAD" in makefile
    script = (ROOT / "scripts" / "image-build.sh").read_text()
    assert "docker info" in script  # docker only when its daemon answers (a client alone is not enough)
    for flag in ("podman build --network host --format docker", "--secret", "UV_FROM=uv-pip"):
        assert flag in script, flag
