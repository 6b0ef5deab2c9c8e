"""Sections of ``bench/RESULTS.md`` written by the other modes (growth, soak, profile).

``python -m bench`` rewrites the file from its own results; the sections the other modes
appended are carried over unchanged, each between its own pair of HTML comments, so one file
holds the latest of every kind of measurement.
"""

from __future__ import annotations

import re
from pathlib import Path

_SECTION = re.compile(r"<!-- section:(?P<name>[a-z-]+) -->\n.*?<!-- /section:(?P=name) -->\n", re.DOTALL)


def sections(text: str) -> dict[str, str]:
    """Every delimited section of ``text`` by name, markers included, in document order."""
    return {match["name"]: match.group(0) for match in _SECTION.finditer(text)}


def carried_over(path: Path) -> str:
    """The delimited sections of the file at ``path`` ('' when there is none or no file)."""
    try:
        text = path.read_text()
    except OSError:
        return ""
    found = sections(text)
    return "\n".join(found.values())


def put_section(path: Path, name: str, body: str) -> None:
    """Write ``body`` as section ``name`` of the file: in place of the old one, else at the end."""
    block = f"<!-- section:{name} -->\n{body.rstrip()}\n<!-- /section:{name} -->\n"
    try:
        text = path.read_text()
    except FileNotFoundError:
        text = "# Benchmark results\n\nRun `make bench` for the main tables.\n"
    old = sections(text).get(name)
    text = text.replace(old, block) if old is not None else text.rstrip("\n") + "\n\n" + block
    path.write_text(text)
