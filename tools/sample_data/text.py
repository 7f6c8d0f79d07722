"""Small, labeled text sample data: short texts from Debian's fortune cookie files.

Usage (from the repository root)::

    python tools/make_sample_data.py text        # -> data/sample/text
    python -m tools.sample_data.text data/sample/text   # the same, directly

Source: Debian's ``fortunes`` and ``fortunes-min`` packages (the fortune-mod data files in
``/usr/share/games/fortunes/``): plain-text files of short texts, each text ended by a
line holding only ``%``. The file name is the category (art, computers, science, ...),
which makes a real, human-written, labeled topic-classification set of ~40 classes that
installs with ``apt-get`` and needs no download step. Only the inoffensive files are read
(Debian ships the offensive ones in a separate ``fortunes-off`` package and an ``off/``
folder, both skipped); the ``.dat`` / ``.u8`` strfile index files are skipped too.

License: the package's ``copyright`` file gives the BSD license (University of
California, 1991) for fortune-mod and its data files; Debian ships them in ``main``.

Outputs: ``train.jsonl`` / ``test.jsonl`` (one ``{"text", "label", "category"}`` object a
line), ``categories.txt`` (index = line number), ``raw/`` (a few category files copied
byte for byte, so the ``%``-separated format has real examples) and ``README.md``.

Build needs: apt ``fortunes fortunes-min``; Python standard library only. Reading needs
only ``json``. Deterministic: sorted files, a fixed seed per category, sorted output.
"""
from __future__ import annotations

import json
import random
import shutil
import sys
from pathlib import Path

from .sources import installed_deb_version

FORTUNES_DIR = Path("/usr/share/games/fortunes")
SEED = 0
TEST_FRACTION = 0.15  # per category
MAX_PER_CATEGORY = 150  # texts kept per category, to stay near 1 MB in total
MAX_CHARS = 1000  # longer texts (whole song lyrics, long stories) are left out
MIN_PER_CATEGORY = 25  # categories with fewer texts (after filtering) are left out
RAW_EXAMPLES = ("goedel", "paradoxum", "pets")  # small files copied unchanged to raw/


def category_files(root: Path = FORTUNES_DIR) -> list[Path]:
    """The category files: regular files without an extension, outside off/, sorted."""
    return sorted(p for p in root.iterdir() if p.is_file() and not p.suffix and p.name != "off")


def decode(data: bytes) -> tuple[str, str]:
    """Decode a fortune file: UTF-8 if valid, else Latin-1 (older fortune files use it).

    Returns (text, encoding name); Latin-1 never fails, every byte maps to a character.
    """
    try:
        return data.decode("utf-8"), "utf-8"
    except UnicodeDecodeError:
        return data.decode("latin-1"), "latin-1"


def split_fortunes(text: str) -> list[str]:
    """Cut a fortune file into its texts: a line that is exactly '%' ends each text.

    Trailing whitespace is stripped (texts end with a newline before the '%');
    inner newlines and tab indentation are kept, they are part of the text.
    """
    texts, current = [], []
    for line in text.replace("\r\n", "\n").split("\n"):
        if line == "%":
            texts.append("\n".join(current))
            current = []
        else:
            current.append(line)
    texts.append("\n".join(current))
    return [t.rstrip() for t in texts if t.strip()]


def read_categories(files: list[Path]) -> tuple[dict[str, list[str]], dict[str, str], dict[str, int]]:
    """Read every category; drop over-long texts and texts seen in an earlier category.

    Dropping duplicates across categories keeps one text from landing in both train
    and test. Returns (texts per category, encoding per file, texts read per file).
    """
    seen: set[str] = set()
    texts_by_category, encodings, read_counts = {}, {}, {}
    for path in files:
        text, encodings[path.name] = decode(path.read_bytes())
        texts = split_fortunes(text)
        read_counts[path.name] = len(texts)
        kept = []
        for t in texts:
            if len(t) <= MAX_CHARS and t not in seen:
                seen.add(t)
                kept.append(t)
        texts_by_category[path.name] = kept
    return texts_by_category, encodings, read_counts


def subsample(texts: list[str], name: str) -> list[str]:
    """At most MAX_PER_CATEGORY texts, chosen with a seed derived from the category name.

    The kept texts stay in file order so the output reads like the source.
    """
    if len(texts) <= MAX_PER_CATEGORY:
        return texts
    rng = random.Random(f"{SEED}:{name}")
    keep = sorted(rng.sample(range(len(texts)), MAX_PER_CATEGORY))
    return [texts[i] for i in keep]


def split_train_test(texts: list[str], name: str) -> tuple[list[str], list[str]]:
    """Deterministic per-category 85/15 split (at least one test text); file order kept."""
    n_test = max(1, round(TEST_FRACTION * len(texts)))
    rng = random.Random(f"{SEED}:split:{name}")
    test_idx = set(rng.sample(range(len(texts)), n_test))
    train = [t for i, t in enumerate(texts) if i not in test_idx]
    test = [t for i, t in enumerate(texts) if i in test_idx]
    return train, test


def write_jsonl(path: Path, rows: list[dict]) -> None:
    """One JSON object a line, UTF-8, non-ASCII kept as is, keys in a fixed order."""
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        f.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in rows)


def copy_raw_examples(out: Path, encodings: dict[str, str]) -> list[str]:
    """Copy a few small category files byte for byte into raw/.

    A Latin-1 file is added when the packages ship one, so the fallback decoding has a
    real example; the Debian 12 packages ship UTF-8 only.
    """
    names = list(RAW_EXAMPLES)
    latin1 = sorted(n for n, enc in encodings.items() if enc == "latin-1")
    if latin1:
        names.append(min(latin1, key=lambda n: (FORTUNES_DIR / n).stat().st_size))
    (out / "raw").mkdir(parents=True, exist_ok=True)
    for name in names:
        shutil.copyfile(FORTUNES_DIR / name, out / "raw" / name)
    return names


def readme_text(summary: dict, table: list[tuple[int, str, int, int, int]]) -> str:
    """data/sample/text/README.md, generated so the counts never go stale."""
    rows = "\n".join(f"| {i} | {name} | {read} | {tr} | {te} |" for i, name, read, tr, te in table)
    dropped = ", ".join(f"`{n}`" for n in summary["dropped_categories"]) or "none"
    latin1 = ", ".join(summary["latin1_files"]) or "none (every file is valid UTF-8)"
    return f"""# Text sample data - fortune cookie categories

Built by `python -m tools.sample_data.text data/sample/text` (see that module's docstring)
from `/usr/share/games/fortunes/` of Debian's `fortunes {summary['fortunes_deb']}` and
`fortunes-min {summary['fortunes_min_deb']}` (`apt-get install -y fortunes fortunes-min`).
Deterministic: a rebuild with the same package versions gives identical files.

* `train.jsonl`, `test.jsonl`: one object a line, `{{"text": str, "label": int, "category": str}}`;
  `label` indexes `categories.txt` (one name a line, line 0 = label 0, names sorted).
  {summary['train']} train and {summary['test']} test texts, {summary['categories']} classes.
* Texts are the `%`-separated entries of each file, trailing whitespace stripped, inner
  newlines/tabs kept. Left out: texts over {MAX_CHARS} characters, texts already seen in an
  earlier (alphabetical) category, and categories with under {MIN_PER_CATEGORY} texts
  left ({dropped}). At most {MAX_PER_CATEGORY} texts a category (seeded sample, file order kept), then a
  seeded {round((1 - TEST_FRACTION) * 100)}/{round(TEST_FRACTION * 100)} train/test split per category.
* Files that needed Latin-1 decoding: {latin1}.
* `raw/`: {', '.join(f'`{n}`' for n in summary['raw_examples'])} copied byte for byte from the package
  (the fortune format: each text ended by a line holding only `%`).
* License: BSD (Copyright (c) 1991 The Regents of the University of California), per
  `/usr/share/doc/fortunes/copyright`; the texts are quotations collected by the
  fortune-mod authors, shipped in Debian `main`.

| label | category | texts in file | train | test |
|---:|---|---:|---:|---:|
{rows}
"""


def build(out_dir: str) -> dict:
    """Write train/test JSONL, categories.txt, raw/ and README.md; return a summary."""
    if not FORTUNES_DIR.is_dir():
        raise SystemExit(f"{FORTUNES_DIR} missing: apt-get install -y fortunes fortunes-min")
    out = Path(out_dir)
    shutil.rmtree(out / "raw", ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    texts_by_category, encodings, read_counts = read_categories(category_files())
    categories = sorted(n for n, t in texts_by_category.items() if len(t) >= MIN_PER_CATEGORY)
    train_rows, test_rows, table = [], [], []
    for label, name in enumerate(categories):
        train, test = split_train_test(subsample(texts_by_category[name], name), name)
        train_rows += [{"text": t, "label": label, "category": name} for t in train]
        test_rows += [{"text": t, "label": label, "category": name} for t in test]
        table.append((label, name, read_counts[name], len(train), len(test)))
    write_jsonl(out / "train.jsonl", train_rows)
    write_jsonl(out / "test.jsonl", test_rows)
    (out / "categories.txt").write_text("".join(f"{n}\n" for n in categories), encoding="utf-8")
    summary = {
        "categories": len(categories),
        "train": len(train_rows),
        "test": len(test_rows),
        "dropped_categories": sorted(set(texts_by_category) - set(categories)),
        "latin1_files": sorted(n for n, e in encodings.items() if e == "latin-1"),
        "raw_examples": copy_raw_examples(out, encodings),
        "fortunes_deb": installed_deb_version("fortunes"),
        "fortunes_min_deb": installed_deb_version("fortunes-min"),
        "license": "BSD (fortune-mod, The Regents of the University of California)",
    }
    (out / "README.md").write_text(readme_text(summary, table), encoding="utf-8")
    summary["bytes"] = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    return summary


if __name__ == "__main__":
    print(build(sys.argv[1] if len(sys.argv) > 1 else "data/sample/text"))
