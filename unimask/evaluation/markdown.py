"""Marked markdown tables, rewritten one row at a time.

A table sits between `<!-- table:<name> -->` and `<!-- /table:<name> -->`; its first cell is the
row's key. Upserting a row replaces the row with that key (or appends it) and leaves every other
row and all other text as it was, so hand-written notes around a table survive a rerun.
"""
from __future__ import annotations

import os
import re
from typing import List, Optional


def md_row(cells: List[str]) -> str:
    return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"


def upsert_row(text: str, table: str, header: List[str], cells: List[str]) -> str:
    """Replace the row whose first cell is cells[0] in the marked table (or append it); a
    missing table is created at the end. Other rows and all other text stay as they are."""
    start, end = f"<!-- table:{table} -->", f"<!-- /table:{table} -->"
    if start not in text:
        text = text.rstrip("\n") + f"\n\n{start}\n{md_row(header)}\n{md_row(['---'] * len(header))}\n{end}\n"
    before, rest = text.split(start, 1)
    body, after = rest.split(end, 1)
    lines = [line for line in body.strip("\n").split("\n") if line.strip()]
    head, rows = lines[:2], lines[2:]
    key = re.escape(str(cells[0]))
    new = md_row(cells)
    for i, line in enumerate(rows):
        if re.match(rf"^\|\s*{key}\s*\|", line):
            rows[i] = new
            break
    else:
        rows.append(new)
    return f"{before}{start}\n" + "\n".join(head + rows) + f"\n{end}{after}"


def update_markdown(table: str, header: List[str], cells: List[str], path: str, mirror: Optional[str] = None):
    """Upsert the row in the file at `path` (made with a title if missing), and in `mirror` (a
    README whose copy of the table stays in step) where that file has the same marked table."""
    text = open(path).read() if os.path.exists(path) else "# What pretraining buys\n"
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        f.write(upsert_row(text, table, header, cells))
    if mirror is None or not os.path.exists(mirror):
        return
    with open(mirror) as f:
        text = f.read()
    if f"<!-- table:{table} -->" in text:
        with open(mirror, "w") as f:
            f.write(upsert_row(text, table, header, cells))
