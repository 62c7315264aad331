"""The mutation runner of test_k8s_checks_fire.py and test_deploy_canary.py: a check on a broken copy."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any


def broken_by(
    objs: list[Any], mutate: Callable[[list[Any]], None], check: Callable[[list[Any]], list[str]]
) -> list[str]:
    """What `check` reports on a copy of `objs` broken by `mutate` (the shared render stays intact)."""
    broken = copy.deepcopy(objs)
    mutate(broken)
    return check(broken)
