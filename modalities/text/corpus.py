"""Reading documents from text files, with every bad input named by file and line.

Formats (by file):
    .jsonl / .ndjson   one JSON object a line: {"text": str, "label": int | class name (optional)};
                       a name is an index into a classes.txt / categories.txt beside the file
                       when there is one, else kept as the name (TextDataset maps names to
                       indices over the train split: labels.py). A null label is no label (-1);
                       any other value (a list, 1.0, true, a name the class list lacks) is kept
                       as an `Unusable` label: reading never fails on labels, which pretraining
                       does not need; labels.py decides where they are needed.
    a fortune file     entries ended by a line holding only '%' (Debian's fortunes, any extension)
    anything else      one document a line (document_per='line'), or the whole file ('file')

A file that does not decode in the declared encoding, an empty file, a JSON line that does not
parse or has no text: an error naming `path:line`, or with on_bad_input='skip' a counted skip
(BadInputLog, warned once per dataset). Never a silent change of the text.
"""
from __future__ import annotations

import json
import os
import warnings
from collections import Counter
from dataclasses import dataclass, field
from typing import List, Optional, Union

from unimask.shards import folder_of, open_sample

JSONL_EXTS = (".jsonl", ".ndjson")
FORTUNE_SEPARATOR = "%"
DOCUMENT_PER = ("auto", "line", "file", "fortune")
CLASS_LISTS = ("classes.txt", "categories.txt")  # class names beside a .jsonl, one a line: line k = label k


class CorpusError(ValueError):
    """Bad input text, named `path:line: what is wrong`."""


@dataclass(frozen=True)
class Unusable:
    """A label that is no class: `what` says why ("label [1, 2] is neither an integer nor a class name")."""
    what: str


@dataclass
class Document:
    text: str
    label: Union[int, str, Unusable]  # -1: none; a class name until TextDataset maps it (labels.py)
    where: str  # "path:line" of its first line


@dataclass
class BadInputLog:
    """Skipped or changed inputs, counted by reason; `report` warns once with the first examples."""
    counts: Counter = field(default_factory=Counter)
    examples: List[str] = field(default_factory=list)

    def add(self, reason: str, message: str):
        self.counts[reason] += 1
        if len(self.examples) < 3:
            self.examples.append(message)

    def total(self) -> int:
        return sum(self.counts.values())

    def report(self, who: str):
        if self.counts:
            summary = ", ".join(f"{reason}: {n}" for reason, n in sorted(self.counts.items()))
            warnings.warn(f"{who}: {summary}; e.g. " + " | ".join(self.examples))


def bad_input(message: str, reason: str, policy: str, log: BadInputLog):
    """Raise (policy 'error') or count a skip ('skip')."""
    if policy == "error":
        raise CorpusError(message)
    log.add(reason, message)


def decode_file(path: str, encoding: str, policy: str, log: BadInputLog) -> tuple:
    """-> (the file's text or None when skipped, whether it holds undecodable bytes). The error
    names the line and column of the first bad byte. Skipping keeps the file with its bad bytes
    marked (surrogateescape), so only the documents that hold them are dropped."""
    with open_sample(path) as f:  # a file, or a file packed into shards
        data = f.read()
    try:
        text, marked = data.decode(encoding), False
    except LookupError as err:
        raise ValueError(f"TextDataset.encoding={encoding!r}: {err}") from None
    except UnicodeDecodeError as err:
        before = data[:err.start].decode(encoding, errors="replace")
        line, column = before.count("\n") + 1, len(before) - before.rfind("\n")
        message = (f"{path}:{line}: not valid {encoding} (byte 0x{data[err.start]:02x} at column {column}); "
                   f"set TextDataset.encoding (e.g. 'latin-1') or TextDataset.on_bad_input='skip'")
        if policy == "error":
            raise CorpusError(message) from None
        try:
            text, marked = data.decode(encoding, errors="surrogateescape"), True
        except UnicodeDecodeError:  # not an ASCII-compatible codec: the whole file is skipped
            log.add("undecodable file", message)
            return None, False
    return (text[1:] if text.startswith("\ufeff") else text), marked  # a byte-order mark is not text


def has_bad_bytes(text: str) -> bool:
    """Bytes that did not decode, kept by surrogateescape as U+DC80..U+DCFF."""
    return any("\udc80" <= ch <= "\udcff" for ch in text)


def file_lines(text: str) -> List[str]:
    """Lines split at '\\n' only ('\\r\\n' endings stripped): form feeds and other separators that
    str.splitlines would split at stay inside the text."""
    lines = text.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    return [line[:-1] if line.endswith("\r") else line for line in lines]


def is_fortune(lines: List[str]) -> bool:
    return any(line == FORTUNE_SEPARATOR for line in lines)


def fortune_documents(lines: List[str], path: str, label: int) -> List[Document]:
    """Entries ended by '%' lines -> one document each, trailing whitespace stripped."""
    docs, start, entry = [], 1, []
    for number, line in enumerate(lines + [FORTUNE_SEPARATOR], 1):
        if line == FORTUNE_SEPARATOR:
            text = "\n".join(entry).rstrip()
            if text.strip():
                docs.append(Document(text, label, f"{path}:{start}"))
            start, entry = number + 1, []
        else:
            entry.append(line)
    return docs


def read_classes(path: str) -> Optional[List[str]]:
    folder = folder_of(path)
    for name in CLASS_LISTS:
        listed = os.path.join(folder, name)
        if os.path.isfile(listed):
            with open(listed, encoding="utf-8") as f:
                return [line.strip() for line in f if line.strip()]
    return None


def jsonl_documents(lines: List[str], path: str, text_field: str, label_field: str, policy: str,
                    log: BadInputLog) -> List[Document]:
    docs, classes, looked = [], None, False
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        where = f"{path}:{number}"
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            bad_input(f"{where}: not a JSON object ({err.msg} at column {err.colno})", "bad JSON line", policy, log)
            continue
        text = row.get(text_field) if isinstance(row, dict) else None
        if not isinstance(text, str):
            bad_input(f"{where}: no string field {text_field!r} (TextDataset.text_field)", "no text field", policy, log)
            continue
        label = row.get(label_field, -1)
        if label is None:
            label = -1  # an unlabeled row
        elif isinstance(label, str):
            classes, looked = (classes, True) if looked else (read_classes(path), True)
            if classes is not None:  # a class list beside the file fixes the indices
                label = (classes.index(label) if label in classes else
                         Unusable(f"label {label!r} is not a class in the {' / '.join(CLASS_LISTS)} beside the file"))
        elif isinstance(label, bool) or not isinstance(label, int):
            label = Unusable(f"label {label!r} is neither an integer nor a class name")
        docs.append(Document(text, label, where))
    return docs


def read_documents(path: str, label: Optional[int] = None, encoding: str = "utf-8", document_per: str = "auto",
                   text_field: str = "text", label_field: str = "label", policy: str = "error",
                   log: Optional[BadInputLog] = None) -> List[Document]:
    """One file -> its documents. label: the file's class (its class folder), or None.
    document_per: for files that are not .jsonl: 'line', 'file', 'fortune', or 'auto'
    (fortune when a line holds only '%', else one document a line)."""
    if document_per not in DOCUMENT_PER:
        raise ValueError(f"TextDataset.document_per={document_per!r}: use one of {DOCUMENT_PER}")
    log = log if log is not None else BadInputLog()
    text, marked = decode_file(path, encoding, policy, log)
    if text is None:
        return []
    if not text.strip():
        bad_input(f"{path}:1: the file holds no text", "empty file", policy, log)
        return []
    lines = file_lines(text)
    file_label = -1 if label is None else int(label)
    if path.lower().endswith(JSONL_EXTS):
        docs = jsonl_documents(lines, path, text_field, label_field, policy, log)
        if label is not None:
            docs = [Document(d.text, file_label if isinstance(d.label, int) and d.label < 0 else d.label, d.where)
                    for d in docs]
    elif document_per == "fortune" or (document_per == "auto" and is_fortune(lines)):
        docs = fortune_documents(lines, path, file_label)
    elif document_per == "file":
        docs = [Document(text.rstrip(), file_label, f"{path}:1")]
    else:
        docs = [Document(line, file_label, f"{path}:{n}") for n, line in enumerate(lines, 1) if line.strip()]
    if not docs:
        bad_input(f"{path}:1: no documents in the file", "empty file", policy, log)
    if not marked:
        return docs
    kept = []
    for doc in docs:
        if has_bad_bytes(doc.text):
            log.add("undecodable document", f"{doc.where}: not valid {encoding}")
        else:
            kept.append(doc)
    return kept
