"""The differential corpus of POST and GET /predict: requests, and what main answered to them.

`cases()` builds the same requests every time (no randomness that is not seeded). `replay()` sends
them, in order, to one fresh app (the committed model, the in-process tier only, so that X-Cache is
as deterministic as the order) and returns what matters of each answer: status, the headers a
client reads, and the body (bodies over INLINE_BODY bytes as their sha256, length and start).

The golden file was recorded from main as it was before the hot path (issue 26) and is regenerated
only on purpose, from a checkout whose answers are the reference:

    PYTHONPATH=/path/to/reference/src .venv/bin/python tests/helpers/golden_corpus.py --write

tests/unit/test_api_golden.py replays the corpus through this checkout and compares.
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import hashlib
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]  # the checkout: tests/helpers/golden_corpus.py
GOLDEN = ROOT / "tests" / "golden" / "predict.json"
MODEL_PATH = ROOT / "model" / "model.joblib"
MAX_ROWS = 1000
"""MAX_BATCH_ROWS' default, which the corpus is recorded with."""
INLINE_BODY = 4096
HEADERS = ("x-cache", "content-type", "content-length", "etag", "cache-control", "retry-after", "allow",
           "connection", "x-request-id")  # fmt: skip
"""The response headers compared (present or absent)."""
FEATURES = ("MedInc", "HouseAge", "AveRooms", "AveBedrms", "Population", "AveOccup", "Latitude", "Longitude")
GOOD = {"MedInc": 8.3252, "HouseAge": 42, "AveRooms": 6.98, "AveBedrms": 1.02, "Population": 322,
        "AveOccup": 2.55, "Latitude": 37.88, "Longitude": -122.23}  # fmt: skip
GOOD_TEXT = ('{"MedInc": 8.3252, "HouseAge": 42, "AveRooms": 6.98, "AveBedrms": 1.02, "Population": 322, '
             '"AveOccup": 2.55, "Latitude": 37.88, "Longitude": -122.23}')  # fmt: skip
JSON = {"content-type": "application/json"}
SIZES = (1, 2, 3, 7, 8, 9, 15, 16, 17, 31, 32, 33, 64, 100, 128, 255, 256, 500, 511, 512, 999, 1000)
"""Valid batch sizes: both sides of the small-batch switch (keys.SMALL_BATCH) and of powers of two."""


@dataclass
class Case:
    name: str
    body: bytes = b""
    headers: dict[str, str] = field(default_factory=lambda: dict(JSON))
    method: str = "POST"
    path: str = "/predict"
    params: dict[str, str] | None = None


def rows(n: int, seed: int) -> list[dict[str, float]]:
    """n valid, distinct rows (a linear congruential walk: no numpy, the same in every checkout)."""
    out, x = [], seed
    for i in range(n):
        x = (x * 6364136223846793005 + 1442695040888963407) % 2**64
        u = [(x >> s) % 100_000 / 100_000 for s in range(0, 64, 8)]
        out.append({
            "MedInc": round(0.5 + 14 * u[0], 4), "HouseAge": float(int(1 + 51 * u[1])) if i % 3 else int(1 + 51 * u[1]),
            "AveRooms": 1 + 9 * u[2], "AveBedrms": round(0.5 + u[3], 3), "Population": int(3 + 3000 * u[4]),
            "AveOccup": 1 + 4 * u[5], "Latitude": round(32.5 + 9.5 * u[6], 2),
            "Longitude": round(-124.3 + 10 * u[7], 2),
        })  # fmt: skip
    return out


def post(name: str, body: Any, **kw: Any) -> Case:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    return Case(name, raw, **kw)


def with_value(field_name: str, token: str, row: int = 0, n: int = 1) -> bytes:
    """A batch of n GOOD rows whose row `row` has `token` (raw JSON text) as `field_name`."""
    texts = [GOOD_TEXT] * n
    value = json.dumps(GOOD[field_name])
    texts[row] = GOOD_TEXT.replace(f'"{field_name}": {value}', f'"{field_name}": {token}')
    assert texts[row] != GOOD_TEXT or token == value
    return ("[" + ", ".join(texts) + "]").encode()


def valid_batches() -> Iterator[Case]:
    for n in SIZES:
        batch = rows(n, seed=n)
        yield post(f"valid {n} rows", batch)
        yield post(f"valid {n} rows again", batch)
    half = rows(50, seed=100) + rows(50, seed=7_000)  # the first half was sent as `valid 100 rows`
    yield post("100 rows, half repeated", half)
    yield post("sample batch", [GOOD, {**GOOD, "MedInc": 2.3252}])
    yield post("duplicate rows in one batch", [GOOD, {**GOOD, "MedInc": 2.0}, GOOD])
    yield post("too many rows", rows(MAX_ROWS + 1, seed=1))
    yield post("too many rows, the last one invalid", [*rows(MAX_ROWS, seed=2), {**GOOD, "MedInc": -1}])
    yield post("keys in another order", [dict(reversed(GOOD.items()))])
    yield post("extra fields", [{**GOOD, "extra": 1, "nested": {"a": [1, 2, {"b": None}]}, "s": "x"}])
    yield post("extra fields before the features", [{"zzz": [1, 2, 3], **GOOD}])
    yield post("compact JSON", json.dumps([GOOD] * 3, separators=(",", ":")).encode())
    yield post("pretty JSON", json.dumps([GOOD] * 2, indent=4).encode())
    yield post("whitespace around", b" \n\t" + json.dumps([GOOD]).encode() + b"\r\n ")


NUMBERS_OK = {
    # field: tokens, spelled as raw JSON, that are valid for it
    "MedInc": ["5e-324", "2.2250738585072014e-308", "1.7976931348623157e308", "1e308", "8.3252e0", "83252E-4",
               "0.83252e+1", "8.32520", "9007199254740993", "18446744073709551616", "1" + "0" * 30,
               "123456789012345678901234567890.5", "0.1000000000000000055511151231257827"],
    "HouseAge": ["0", "-0", "-0.0", "0.0", "0e0", "-0e5", "-1e-400", "1e-400", "5e-324", "-5e-324"],
    "AveBedrms": ["0", "-0.0", "-1e-320"],
    "Population": ["0", "-0.0", "1.7976931348623157e308", "4.9406564584124654e-324"],
    "Latitude": ["90", "-90", "90.0", "-90.0", "9e1", "-0.0", "89.99999999999999"],
    "Longitude": ["180", "-180", "1.8e2", "-0.0", "179.99999999999997"],
}  # fmt: skip
NUMBERS_BAD = {
    "MedInc": ["0", "-0.0", "-1", "1e-400", "-5e-324", "true", "false", "null", '"8.3"', '"abc"', "[1]", '{"v": 1}',
               "NaN", "Infinity", "-Infinity", "1e309", "-1e309", "nan", "inf", "+1", ".5", "1.", "01", "0x10",
               "1e", "1.5e+", "--1", '""', "1_2", "1" + "0" * 400, "-" + "1" * 400, "[]", "{}"],
    "HouseAge": ["-1", "-5e-324", "false", "NaN"],
    "AveRooms": ["0", "-0.0", "-1e-400"],
    "AveBedrms": ["-0.1", "-5e-324"],
    "Population": ["-5", "1.8e308", "-1.7976931348623157e308"],
    "AveOccup": ["0", "-0"],
    "Latitude": ["90.01", "-91", "90.00000000000001", "1e3", "true"],
    "Longitude": ["180.5", "-181", "180.00000000000003", "-1e308"],
}  # fmt: skip


def numbers() -> Iterator[Case]:
    for name, tokens in NUMBERS_OK.items():
        for token in tokens:
            yield Case(f"{name} = {token[:40]}", with_value(name, token))
            yield Case(f"{name} = {token[:40]}, row 2 of 3", with_value(name, token, row=2, n=3))
    for name, tokens in NUMBERS_BAD.items():
        for token in tokens:
            yield Case(f"bad {name} = {token[:40]}", with_value(name, token))
            yield Case(f"bad {name} = {token[:40]}, row 9 of 12", with_value(name, token, row=9, n=12))
    for name in FEATURES:
        missing = [GOOD, {k: v for k, v in GOOD.items() if k != name}]
        yield post(f"missing {name} in row 1", missing)
        yield post(f"{name} null", [{**GOOD, name: None}])


def shapes() -> Iterator[Case]:
    raw = [b"", b"[]", b"{}", b"null", b"1", b'"text"', b"[1, 2", b"[[1,2,3]]", b"[1]", b"[null]", b'["row"]',
           b"[true]", b"\xff\xfe[]", b"\xef\xbb\xbf" + json.dumps([GOOD]).encode(), b'{"MedInc": 1}',
           b"[" + b" " * 4096 + b"]", b"[" + GOOD_TEXT.encode() + b",]", b"[" + GOOD_TEXT.encode() + b"]x",
           b"[" + GOOD_TEXT.encode() + b"] []", b"[" + GOOD_TEXT.encode()[:-1] + b",}]",
           b"[" * 5000 + b"]" * 5000, b"[" + GOOD_TEXT.encode().replace(b"322", b"3\x0022") + b"]",
           b"[" + GOOD_TEXT.encode().replace(b", ", b",\x0b ") + b"]"]  # fmt: skip
    for i, body in enumerate(raw):
        yield Case(f"shape {i}: {body[:40]!r}", body)
    yield post("object around the rows", {"instances": [GOOD]})
    yield post("object around the rows, long key", {"k" * 200: [GOOD]})
    yield post("one row, not in an array", GOOD)
    yield post("rows of arrays", [[GOOD[f] for f in FEATURES]])
    yield post("a row that is a number among rows", [GOOD, 5, GOOD])
    yield post("many bad rows", [{**GOOD, "MedInc": -i} for i in range(60)])
    yield post("two bad fields in one row", [{**GOOD, "MedInc": 0, "Latitude": 100}])
    yield post("bad rows, good ones between", [GOOD, {**GOOD, "AveOccup": 0}, GOOD, {**GOOD, "HouseAge": -1}])
    yield post("long field name, bad value", [{**GOOD, "x" * 100: 1, "MedInc": "a"}])
    yield post("huge field name", [{**GOOD, "y" * 70_000: 1}])
    yield post("features in wrong case", [{k.lower(): v for k, v in GOOD.items()}])
    good = GOOD_TEXT.encode()
    yield Case("escaped key MedInc", b"[" + good.replace(b'"MedInc"', b'"\\u004dedInc"') + b"]")
    yield Case("escaped key, bad value", b"[" + good.replace(b'"MedInc": 8.3252', b'"\\u004dedInc": -1') + b"]")
    yield Case("lone surrogate in an extra key", b'[{"\\ud800": 1, ' + good[1:] + b"]")
    yield Case("lone surrogate in an extra value", b'[{"x": "\\udc00", ' + good[1:] + b"]")
    yield Case("non-ASCII extra key", '[{"é€😀": "ü", '.encode() + good[1:] + b"]")
    yield Case("invalid UTF-8 in an extra key", b'[{"\xc3\x28": 1, ' + good[1:] + b"]")
    yield Case("invalid UTF-8 in an extra value", b'[{"x": "\xed\xa0\x80", ' + good[1:] + b"]")
    yield Case("control character in a key", b'[{"a\x01b": 1, ' + good[1:] + b"]")
    for first, second in (("8.3252", "-1"), ("-1", "8.3252"), ("1", "2"), ('"x"', "3"), ("3", '"x"')):
        body = b'[{"MedInc": ' + first.encode() + b", " + good[1:].replace(b"8.3252", second.encode()) + b"]"
        yield Case(f"duplicate key MedInc {first} then {second}", body)
    yield Case("duplicate extra key", b'[{"x": 1, "x": [2], ' + good[1:] + b"]")


def transport() -> Iterator[Case]:
    batch = json.dumps([GOOD]).encode()
    ctypes = ("text/plain", "application/json; charset=utf-8", "APPLICATION/JSON", "application/vnd.api+json",
              "text/json", "application/x-www-form-urlencoded", "application/jsonx", "",
              " application/json ")  # fmt: skip
    for ctype in ctypes:
        yield Case(f"content-type {ctype!r}", batch, headers={"content-type": ctype})
    yield Case("no content-type", batch, headers={})
    yield Case("no content-type, empty body", b"", headers={})
    for encoding in ("gzip", "GZIP", "deflate", "br", "zstd", "gzip, identity", "identity", " identity ", ""):
        body = batch if "identity" in encoding or not encoding.strip() else gzip.compress(batch, mtime=0)
        yield Case(f"content-encoding {encoding!r}", body, headers={**JSON, "content-encoding": encoding})
    yield Case(
        "text/plain and gzip",
        gzip.compress(batch, mtime=0),
        headers={"content-type": "text/plain", "content-encoding": "gzip"},
    )
    yield Case("body over MAX_BODY_BYTES", b"[" + b" " * 1_048_576 + b"]")
    yield Case("body at MAX_BODY_BYTES", b"[" + GOOD_TEXT.encode() + b"]" + b" " * (1_048_576 - len(GOOD_TEXT) - 2))
    for method in ("DELETE", "PUT", "PATCH"):
        yield Case(f"{method} /predict", batch, method=method)
    yield Case("POST /predict/", batch, path="/predict/")
    yield Case("POST /predict with a query", batch, path="/predict", params={"MedInc": "1"})
    yield Case("POST /Predict", batch, path="/Predict")


def gets() -> Iterator[Case]:
    q = {k: str(v) for k, v in GOOD.items()}
    yield Case("GET one row", method="GET", params=q, headers={})
    yield Case("GET one row again", method="GET", params=q, headers={})
    yield Case("HEAD one row", method="HEAD", params=q, headers={})
    yield Case("GET extra parameter", method="GET", params={**q, "x": "1"}, headers={})
    yield Case("GET no parameters", method="GET", headers={})
    for value in ("1_2", "+12", " 12", "nan", "inf", "true", "", "1e999", ".5", "012", "-0", "8.3252e0", "0"):
        yield Case(f"GET MedInc={value!r}", method="GET", params={**q, "MedInc": value}, headers={})
    yield Case("GET Latitude=91", method="GET", params={**q, "Latitude": "91"}, headers={})
    yield Case("GET HouseAge=-0.0", method="GET", params={**q, "HouseAge": "-0.0"}, headers={})


def cases() -> list[Case]:
    return [*valid_batches(), *numbers(), *shapes(), *transport(), *gets()]


def summary(status: int, headers: httpx.Headers, body: bytes) -> dict[str, Any]:
    kept = {name: headers.get(name) for name in HEADERS}
    if len(body) <= INLINE_BODY:
        text: Any = body.decode("utf-8", errors="backslashreplace")
    else:
        text = {"sha256": hashlib.sha256(body).hexdigest(), "length": len(body), "start": body[:300].decode("latin-1")}
    return {"status": status, "headers": kept, "body": text}


async def _replay(case_list: list[Case]) -> list[dict[str, Any]]:
    from housing_api.app import create_app
    from housing_api.config import Settings

    settings = Settings(_env_file=None, model_path=MODEL_PATH, redis_url=None, cache_prefix="golden")  # type: ignore[call-arg]
    app = create_app(settings)
    answers = []
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            for i, case in enumerate(case_list):
                headers = {**case.headers, "x-request-id": f"golden-{i}"}
                r = await client.request(case.method, case.path, content=case.body or None, headers=headers,
                                         params=case.params)  # fmt: skip
                answers.append({"name": case.name, "request_sha256": _request_digest(case),
                                **summary(r.status_code, r.headers, r.content)})  # fmt: skip
    return answers


def _request_digest(case: Case) -> str:
    what = [case.method, case.path, json.dumps(case.params, sort_keys=True), json.dumps(case.headers, sort_keys=True)]
    return hashlib.sha256("\n".join(what).encode() + b"\n" + case.body).hexdigest()


def replay(case_list: list[Case] | None = None) -> list[dict[str, Any]]:
    """What this checkout answers to the corpus, in order, from one fresh app."""
    return asyncio.run(_replay(case_list if case_list is not None else cases()))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--write", action="store_true", help=f"record the answers into {GOLDEN.relative_to(ROOT)}")
    args = parser.parse_args()
    import housing_api

    answers = replay()
    print(f"{len(answers)} answers from {housing_api.__file__}", file=sys.stderr)
    if args.write:
        GOLDEN.parent.mkdir(exist_ok=True)
        GOLDEN.write_text(json.dumps(answers, indent=1, ensure_ascii=False) + "\n")
        print(f"wrote {GOLDEN}", file=sys.stderr)


if __name__ == "__main__":
    main()
