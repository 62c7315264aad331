"""Command line: `housing-api serve`, `train`, `fetch-model` and `reregister`. Argument parsing only."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from housing_api.errors import ModelArtifactError

# prometheus_client switches to multiprocess files when either is set at import time, and the
# instrumentator's /metrics then reads only that directory: the app's own registry would vanish.
MULTIPROC_VARS = ("PROMETHEUS_MULTIPROC_DIR", "prometheus_multiproc_dir")


def _single_process_metrics() -> None:
    """One worker per process (scale with replicas): /metrics is this process's registry."""
    for name in MULTIPROC_VARS:
        if os.environ.pop(name, None) is not None:
            print(f"housing-api: ignoring {name}: one worker per process, no multiprocess metrics", file=sys.stderr)


def _serve(args: argparse.Namespace) -> int:
    _single_process_metrics()
    # One inference thread shares two cores with the event loop; scikit-learn's OpenMP pool (used
    # only when the compiled path does not cover a model) would spin on both and starve the loop.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    from housing_api.app import RESOLVER_STOP_S, create_app, model_source
    from housing_api.config import ConfigurationError, load_settings
    from housing_api.model import verify_artifact
    from housing_api.protocol import BoundedConfig, ConnectionBounds
    from housing_api.server import DrainingServer

    try:
        settings = load_settings()
    except ConfigurationError as exc:
        print(f"housing-api: cannot start: {exc}", file=sys.stderr)
        return 2
    from housing_api.logs import TraceIds, configure_logging

    trace_ids: TraceIds | None = None
    if settings.otel_exporter_otlp_endpoint:
        from housing_api.tracing import current_ids as trace_ids
    configure_logging(settings.log_level, settings.log_format, trace_ids)
    try:
        # Fail before the server starts, with one line, rather than inside the lifespan with a traceback.
        # A registry version is fetched here, once, into MODEL_STORE.
        source = model_source(settings)
        verify_artifact(source.path, source.registry)
    except ModelArtifactError as exc:
        print(f"housing-api: cannot start: {exc}", file=sys.stderr)
        return 2
    bounds = ConnectionBounds(
        head_timeout_s=settings.header_timeout_s,
        max_head_bytes=settings.max_header_bytes,
        idle_timeout_s=settings.keepalive_timeout_s,
    )
    config = BoundedConfig(
        create_app(settings, source),
        bounds,
        host=args.host,
        port=args.port,
        access_log=False,  # ours is sampled, and carries the request's ids (access.py)
        log_config=None,  # uvicorn's lines go through configure_logging's handler, in LOG_FORMAT
        log_level=settings.log_level.lower(),
        timeout_graceful_shutdown=graceful_timeout(args, settings.shutdown_timeout_s, RESOLVER_STOP_S),
        # Connections (idle keep-alive ones and stalled uploads included) are bounded too: past it
        # the server answers 503 at once (protocol.py).
        limit_concurrency=settings.limit_concurrency,
    )
    DrainingServer(config, args.drain_seconds, settings.shutdown_timeout_s).run()
    return 0


def graceful_timeout(args: argparse.Namespace, shutdown_timeout_s: float, resolver_stop_s: float) -> int:
    """uvicorn's drain of in-flight requests: what SHUTDOWN_TIMEOUT_S leaves after the other steps."""
    if args.graceful_timeout is not None:
        return int(args.graceful_timeout)
    return max(int(shutdown_timeout_s - args.drain_seconds - resolver_stop_s - 2.0), 1)


def _train(args: argparse.Namespace) -> int:
    from housing_api.errors import TrainingDataMissing

    try:
        from housing_api.train import train
    except ImportError as exc:  # the runtime image and a plain install leave scikit-learn out
        print(
            f"housing-api: cannot train: {exc.name or 'scikit-learn'} is not installed; "
            "install the train extra: pip install 'housing-api[train]' (make install does)",
            file=sys.stderr,
        )
        return 2

    registry = _registry("train") if args.register else None
    if registry is False:
        return 2
    out = Path(args.out)
    try:
        result = train(out, download=args.download, max_iter=args.max_iter)
    except TrainingDataMissing as exc:
        print(f"housing-api: cannot train: {exc}", file=sys.stderr)
        return 2
    print(f"wrote {out} (version {result.meta['version'][:16]}): held-out R2={result.r2:.4f} MAE={result.mae:.4f}")
    return 0 if registry is None else _register(registry, out, result, args)


def _registry(step: str) -> Any:
    """MLflow's client for MLFLOW_TRACKING_URI, or False after printing why there is none."""
    from housing_api.config import ConfigurationError, load_settings
    from housing_api.registry import INSTALL_HINT, Registry

    try:
        return Registry(load_settings().mlflow_tracking_uri)
    except ImportError:
        print(f"housing-api: cannot {step}: {INSTALL_HINT}", file=sys.stderr)
    except (ModelArtifactError, ConfigurationError) as exc:
        print(f"housing-api: cannot {step}: {exc}", file=sys.stderr)
    return False


def _register(registry: Any, out: Path, result: Any, args: argparse.Namespace) -> int:
    from housing_api.train import register

    try:
        registered = register(registry, out, result, args.model_name)
        return _aliased(registry, registered, args.alias, "")
    except ModelArtifactError as exc:
        print(f"housing-api: cannot register: {exc}", file=sys.stderr)
        return 2


def _aliased(registry: Any, registered: Any, alias: str | None, source: str) -> int:
    """Point the alias (if any) at the newly registered version, and say what was registered."""
    if alias:
        registry.set_alias(registered.name, alias, registered.version)
    named = f", alias @{alias}" if alias else ""
    print(f"registered {registered.uri} (run {registered.run_id}{named}){source} at {registry.where}")
    return 0


def _fetch_model(args: argparse.Namespace) -> int:
    from housing_api.config import ConfigurationError, load_settings
    from housing_api.model import verify_artifact
    from housing_api.registry import is_registry_uri, parse_ref

    try:
        settings = load_settings()
    except ConfigurationError as exc:
        print(f"housing-api: cannot fetch: {exc}", file=sys.stderr)
        return 2
    uri = args.uri or settings.model_uri or ""
    if not is_registry_uri(uri):
        print("housing-api: cannot fetch: set MODEL_URI (or --uri) to models:/<name>/<version>", file=sys.stderr)
        return 2
    registry = _registry("fetch")
    if registry is False:
        return 2
    try:
        source = registry.fetch(parse_ref(uri), Path(args.store) if args.store else settings.model_store)
        info = verify_artifact(source.path, source.registry)
    except ModelArtifactError as exc:
        print(f"housing-api: cannot fetch: {exc}", file=sys.stderr)
        return 2
    resolved = f"models:/{source.registry['name']}/{source.registry['version']}"
    print(f"fetched {uri} = {resolved} (version {info.version[:16]}) into {source.path.parent}")
    return 0


def _reregister(args: argparse.Namespace) -> int:
    import tempfile

    try:
        from housing_api.train import reregister
    except ImportError as exc:
        print(f"housing-api: cannot reregister: {exc.name} is not installed; pip install 'housing-api[train,mlflow]'",
              file=sys.stderr)  # fmt: skip
        return 2
    registry = _registry("reregister")
    if registry is False:
        return 2
    try:
        with tempfile.TemporaryDirectory() as workdir:
            registered = reregister(registry, args.uri, Path(workdir))
        return _aliased(registry, registered, args.alias, f" from {args.uri}")
    except ModelArtifactError as exc:
        print(f"housing-api: cannot reregister: {exc}", file=sys.stderr)
        return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="housing-api", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the HTTP service")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument(
        "--graceful-timeout",
        type=float,
        default=None,
        help="seconds to finish in-flight requests after SIGTERM (default: what SHUTDOWN_TIMEOUT_S leaves)",
    )
    serve.add_argument(
        "--drain-seconds",
        type=float,
        default=0.5,
        help="after SIGTERM, keep reading requests already sent on open connections this long",
    )
    serve.set_defaults(func=_serve)
    train = sub.add_parser("train", help="train the model and write model/model.joblib + model.json")
    train.add_argument("--out", default="model/model.joblib")
    train.add_argument(
        "--download", action="store_true", help="let scikit-learn download the data if it is not in SCIKIT_LEARN_DATA"
    )
    train.add_argument("--max-iter", type=int, help="boosting iterations instead of the tuned default (quick models)")
    train.add_argument(
        "--register", action="store_true", help="log the run to MLFLOW_TRACKING_URI and register a new model version"
    )
    train.add_argument("--model-name", default="housing", help="registered model name (default: housing)")
    train.add_argument("--alias", help="with --register: point this alias (e.g. champion) at the new version")
    train.set_defaults(func=_train)
    fetch = sub.add_parser(
        "fetch-model", help="fetch MODEL_URI's registry version into MODEL_STORE and verify it (the init container)"
    )
    fetch.add_argument("--uri", help="models:/<name>/<version> or models:/<name>@<alias> (default: MODEL_URI)")
    fetch.add_argument("--store", help="folder to fetch into (default: MODEL_STORE)")
    fetch.set_defaults(func=_fetch_model)
    again = sub.add_parser(
        "reregister",
        help="register a version registered before housing-api 0.2 again, as a new version the service accepts",
    )
    again.add_argument("uri", help="the old version, models:/<name>/<version>")
    again.add_argument("--alias", help="point this alias (e.g. champion) at the new version")
    again.set_defaults(func=_reregister)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code
