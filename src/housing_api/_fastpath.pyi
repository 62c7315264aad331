# The C extension built from _fastpath.c; use housing_api.fastpath, not this module.
from typing import Any

import numpy as np
from typing_extensions import Buffer

# Any C-contiguous buffer; NumPy arrays are listed because mypy's Python 3.11 view of numpy has
# no __buffer__ method.
_Buffer = Buffer | np.ndarray[Any, Any]

def predict(
    thresholds: _Buffer,
    offsets: _Buffer,
    masks: _Buffer,
    leaves: _Buffer,
    baseline: float,
    X: _Buffer,
    out: _Buffer,
    /,
) -> None: ...
