"""Command line: `housing-api serve` and `housing-api train`. Argument parsing only."""

from __future__ import annotations

import argparse
import logging
import os
import sys
from pathlib import Path

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
    import uvicorn

    from housing_api.app import RESOLVER_STOP_S, create_app
    from housing_api.config import ConfigurationError, load_settings
    from housing_api.model import verify_artifact
    from housing_api.server import DrainingServer

    try:
        settings = load_settings()
    except ConfigurationError as exc:
        print(f"housing-api: cannot start: {exc}", file=sys.stderr)
        return 2
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        # Fail before the server starts, with one line, rather than inside the lifespan with a traceback.
        verify_artifact(settings.model_path)
    except ModelArtifactError as exc:
        print(f"housing-api: cannot start: {exc}", file=sys.stderr)
        return 2
    config = uvicorn.Config(
        create_app(settings),
        host=args.host,
        port=args.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level=settings.log_level.lower(),
        timeout_graceful_shutdown=graceful_timeout(args, settings.shutdown_timeout_s, RESOLVER_STOP_S),
        # Connections (and so stalled uploads) are bounded too: past it uvicorn answers 503 at once.
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
    from housing_api.train import train

    result = train(Path(args.out), download=args.download)
    print(f"wrote {args.out} (version {result.meta['version'][:16]}): held-out R2={result.r2:.4f} MAE={result.mae:.4f}")
    return 0


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
    train.set_defaults(func=_train)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    code: int = args.func(args)
    return code
