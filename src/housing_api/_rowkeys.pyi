# The C extension built from _rowkeys.c; use housing_api.keys, not this module.
from collections.abc import Sequence

def keys(namespace: str, rows: Sequence[bytes], /) -> list[str]: ...
