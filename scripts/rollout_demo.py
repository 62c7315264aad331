"""`make rollout-demo`: the rollout test's scenario (housing_api_testing/rollout.py), with a readable report.

Registers three versions in a local MLflow whose artifact store is moto's S3 server, fetches them
with `housing-api fetch-model`, starts a primary and four canaries on one Redis, scrapes them with a
real Prometheus, sends a short 90/10 load and prints, per canary, Flagger's decision with each
check's query value and threshold (from `kubectl kustomize .k8s/overlays/prod`).
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from housing_api_testing.harness import Unavailable
from housing_api_testing.prom import PrometheusUnavailable
from housing_api_testing.rollout import CANARIES, LOAD_S, Rollout


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--load-s", type=float, default=LOAD_S, help="seconds of load (default %(default)s)")
    parser.add_argument("--show-queries", action="store_true", help="print each rendered query too")
    args = parser.parse_args()
    kubectl = shutil.which("kubectl", path=str(Path(sys.executable).parent)) or shutil.which("kubectl")
    if kubectl is None:
        print("rollout-demo: kubectl is not installed (make install puts it in .venv/bin)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="rollout-demo-") as tmp:
        scenario = Rollout(Path(tmp), kubectl)
        try:
            scenario.run(args.load_s)
        except (Unavailable, PrometheusUnavailable) as exc:
            print(f"rollout-demo: {exc}", file=sys.stderr)
            return 2
        except BaseException:
            print("\n".join(scenario.log), file=sys.stderr)  # how far it got
            raise
        finally:
            scenario.stop()
    print(scenario.report())
    if args.show_queries:
        for canary in CANARIES:
            for check in scenario.results[canary.name]:
                print(f"\n{canary.name} / {check.name}:\n{check.query}")
    wrong = [c.name for c in CANARIES if scenario.decisions[c.name] != c.expected]
    print(f"\n{'every decision as expected' if not wrong else 'UNEXPECTED decisions: ' + ', '.join(wrong)}")
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main())
