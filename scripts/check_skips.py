"""Fail when a test was skipped that the README does not say may be skipped.

Usage: python3 scripts/check_skips.py JUNIT_XML README.md

The README's section "What `make test` may skip" names tests as `tests/<folder>/test_x.py::test_name` (or a
whole `tests/<folder>/test_x.py`); a skipped test is allowed when its id starts with one of them. Standard
library only: it runs in the bare container of `make fresh-test` with Debian's python3.
"""

from __future__ import annotations

import re
import sys
import xml.etree.ElementTree as ET

SECTION = "What `make test` may skip"


def allowed_prefixes(readme: str) -> list[str]:
    """The test ids the README's section lists, in JUnit's dotted form (tests.test_x.test_name)."""
    start = readme.index(SECTION)
    end = readme.find("\n#", start)
    section = readme[start : end if end != -1 else None]
    ids = re.findall(r"`(tests/[\w/]+\.py(?:::[\w\[\]-]+)?)`", section)
    return [i.replace(".py", "").replace("/", ".").replace("::", ".") for i in ids]


def skipped_tests(junit_xml: str) -> list[tuple[str, str]]:
    """(dotted id, reason) of every skipped test case."""
    skipped = []
    for case in ET.parse(junit_xml).getroot().iter("testcase"):
        skip = case.find("skipped")
        if skip is not None:
            skipped.append((f"{case.get('classname')}.{case.get('name')}", skip.get("message", "")))
    return skipped


def main(junit_xml: str, readme_path: str) -> int:
    with open(readme_path) as f:
        allowed = allowed_prefixes(f.read())
    skipped = skipped_tests(junit_xml)
    unexpected = [(test, why) for test, why in skipped if not any(test.startswith(p) for p in allowed)]
    for test, why in unexpected:
        print(f"skipped, and the README does not say it may be: {test}: {why}")
    print(f"{len(skipped)} skipped, {len(skipped) - len(unexpected)} of them allowed by the README")
    return 1 if unexpected else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
