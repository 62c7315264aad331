"""batch_json: the fast decoder accepts only what the validator accepts, with the validator's values,
and the echoed inputs are the bytes orjson writes for the validator's rows."""

from __future__ import annotations

import json
import random
import struct

import numpy as np
import orjson
import pytest
from pydantic import ValidationError

from housing_api import FEATURES
from housing_api.batch_json import decode_batch, encode_inputs
from housing_api.keys import canonical_row
from housing_api.schemas import SAMPLE_BATCH, BatchValidator

VALIDATOR = BatchValidator(1000)
GOOD = SAMPLE_BATCH[0]
# Tokens that stress the parser or a bound; spliced into bodies at random below.
TOKENS = ["0", "-0", "-0.0", "5e-324", "-5e-324", "1e-400", "-1e-400", "1e308", "1.7976931348623157e308", "1e309",
          "90", "90.00000000000001", "-90", "180", "-180.00000000000003", "9007199254740993", "18446744073709551616",
          "1" + "0" * 30, "true", "false", "null", '"1"', "[1]", '{"a": 1}', "NaN", "Infinity", "-Infinity", "01",
          "1.", ".5", "+1", "1e", "42", "42.0", "4.2e1", "0.1000000000000000055511151231257827"]  # fmt: skip


def validated(body: bytes) -> bytes | None:
    """What the validator makes of the body: its rows, canonical (keys.canonical_row) and joined,
    or None when it refuses the body."""
    try:
        rows = VALIDATOR.validate(body)
    except ValidationError:
        return None
    return b"".join(canonical_row(row) for row in rows)


def test_the_sample_batch_is_decoded_in_feature_order() -> None:
    rows = decode_batch(orjson.dumps(SAMPLE_BATCH), 1000)
    assert rows is not None
    assert np.frombuffer(rows).reshape(-1, 8).tolist() == [[float(r[f]) for f in FEATURES] for r in SAMPLE_BATCH]


@pytest.mark.parametrize(
    "body",
    [b"[]", b"{}", b"[1]", b"[[1]]", b"", b"[" + orjson.dumps(GOOD) + b",]", orjson.dumps([{**GOOD, "x": 1}]),
     orjson.dumps([{**GOOD, "MedInc": True}]), orjson.dumps([{**GOOD, "Latitude": 90.5}]),
     orjson.dumps([{k: v for k, v in GOOD.items() if k != "AveOccup"}]), orjson.dumps([GOOD] * 4)],
)  # fmt: skip
def test_what_is_not_certainly_valid_is_left_to_the_validator(body: bytes) -> None:
    assert decode_batch(body, 3) is None


def test_a_duplicate_key_is_left_to_the_validator() -> None:
    text = json.dumps([GOOD])
    body = text.replace('"MedInc": 8.3252', '"MedInc": -1, "MedInc": 8.3252').encode()
    assert decode_batch(body, 10) is None
    assert validated(body) is not None  # valid: the validator reads the last one, and answers it


def mutated_bodies(seed: int, n: int) -> list[bytes]:
    r = random.Random(seed)
    bodies = []
    for _ in range(n):
        rows = [dict(GOOD) for _ in range(r.randint(1, 12))]
        text = json.dumps(rows, separators=r.choice([(",", ":"), (", ", ": ")]))
        for _ in range(r.randint(1, 3)):
            field, token = r.choice(FEATURES), r.choice(TOKENS)
            pattern = f'"{field}":' + (" " if ": " in text else "") + json.dumps(GOOD[field])
            at = [i for i in range(len(text)) if text.startswith(pattern, i)]
            i = r.choice(at) if at else 0
            if at:
                text = text[:i] + pattern.rsplit(json.dumps(GOOD[field]), 1)[0] + token + text[i + len(pattern) :]
        if r.random() < 0.1:  # a structural change: a key renamed, or a duplicate or extra key
            renamed = r.choice(
                ['"averooms"', '"AveRooms": 1, "AveRooms"', '"AveRooms": -1, "AveRooms"', '"x": 1, "AveRooms"']
            )
            text = text.replace('"AveRooms"', renamed, 1)
        bodies.append(text.encode())
    return bodies


@pytest.mark.parametrize("seed", range(4))
def test_accepted_means_accepted_by_the_validator_with_the_same_values(seed: int) -> None:
    accepted = 0
    for body in mutated_bodies(seed, 500):
        fast, slow = decode_batch(body, 1000), validated(body)
        if fast is not None:
            accepted += 1
            assert fast == slow, body
    assert accepted > 50  # the corpus exercises the fast path, not only the fallback


def test_random_finite_doubles_decode_to_the_validators_bits() -> None:
    r = random.Random(7)
    values = [abs(struct.unpack("<d", struct.pack("<Q", r.getrandbits(64)))[0]) for _ in range(1000)]
    values = [v for v in values if np.isfinite(v) and v > 0]
    rows = [dict(zip(FEATURES, [v, v, v, v, v, v, 0.0, 0.0], strict=True)) for v in values]
    body = orjson.dumps(rows)
    fast, slow = decode_batch(body, 1000), validated(body)
    assert fast is not None and fast == slow


def test_inputs_are_the_bytes_orjson_writes_for_the_rows_as_dicts() -> None:
    r = random.Random(11)
    values = [struct.unpack("<d", struct.pack("<Q", r.getrandbits(64)))[0] for _ in range(8 * 500)]
    matrix = np.array([v if np.isfinite(v) else 0.0 for v in values]).reshape(-1, 8)
    dicts = [dict(zip(FEATURES, row, strict=True)) for row in matrix.tolist()]
    assert encode_inputs(matrix.tobytes()) == orjson.dumps(dicts)
    assert encode_inputs(matrix[:1].tobytes()) == orjson.dumps(dicts[:1])


def test_a_value_pydantic_cannot_parse_is_refused_even_when_a_duplicate_key_overrides_it() -> None:
    # pydantic-core stops at 200 levels of nesting, orjson at 1024: the first MedInc would pass orjson.
    deep = "[" * 300 + "]" * 300
    body = json.dumps([GOOD]).replace('"MedInc"', f'"MedInc": {deep}, "MedInc"', 1).encode()
    assert orjson.loads(body)[0]["MedInc"] == GOOD["MedInc"]
    assert validated(body) is None
    assert decode_batch(body, 10) is None


def test_bytes_mutated_at_random_are_accepted_only_as_the_validator_reads_them() -> None:
    r = random.Random(5)
    edges = (b'[{"MedInc":1e0,"HouseAge":-0,"AveRooms":5E-324,"AveBedrms":0.0,"Population":18446744073709551616,'
             b'"AveOccup":1,"Latitude":-90,"Longitude":180}]')  # fmt: skip
    seeds = [json.dumps(SAMPLE_BATCH).encode(), json.dumps([GOOD], separators=(",", ":")).encode(),
             json.dumps(SAMPLE_BATCH[:2], indent=2).encode(), edges]  # fmt: skip
    assert all(validated(s) is not None for s in seeds)
    alphabet = b' \t\n\r[]{}":,.-+eE0123456789\\x'
    accepted = 0
    for _ in range(20_000):
        body = bytearray(r.choice(seeds))
        for _ in range(r.randint(1, 3)):
            at, kind = r.randrange(len(body)), r.random()
            if kind < 0.4:
                body[at] = r.choice(alphabet)
            elif kind < 0.7:
                body[at:at] = bytes([r.choice(alphabet)])
            else:
                del body[at]
        fast = decode_batch(bytes(body), 1000)
        if fast is not None:
            accepted += 1
            assert fast == validated(bytes(body)), bytes(body)
    assert accepted > 500


def test_short_decimals_at_every_exponent_decode_to_the_validators_bits() -> None:
    """The decimals the C part converts by one exact operation (<= 15 digits, 10^-22..10^22), and
    those just past it, spelled every JSON way."""
    r = random.Random(13)
    tokens = []
    for _ in range(6000):
        digits = str(r.randint(1, 10 ** r.randint(1, 17)))
        e = r.randint(-40, 40)
        point = r.randint(0, len(digits))
        text = (digits[:point] or "0") + ("." + digits[point:] if digits[point:] else "")
        tokens.append(r.choice([f"{digits}e{e}", f"{digits}E+{e}" if e >= 0 else f"{digits}E{e}", text, f"{text}e{e}"]))
    rows = [dict(zip(FEATURES, [t, t, t, t, t, t, "0", "0"], strict=True)) for t in tokens]
    for start in range(0, len(rows), 1000):
        chunk = rows[start : start + 1000]
        objects = ("{" + ",".join(f'"{k}":{v}' for k, v in row.items()) + "}" for row in chunk)
        body = ("[" + ",".join(objects) + "]").encode()
        fast, slow = decode_batch(body, 1000), validated(body)
        assert fast is not None and fast == slow
