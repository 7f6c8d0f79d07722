"""Which text files make up a split: the layouts of unimask/files.py, plus split *files*.

    root/train.jsonl + root/test.jsonl     split files side by side (any text extension)
    root/train/... + root/test/...         split folders
    root/<class>/*.txt                     class folders give labels (one split)
    a single file                          train; test from the sibling named like it (train -> test)
    TextDataset.test_root                  a separate test file or folder, for every split but train
    <shards>/index.json                    the files packed by tools/make_shards.py (one split)

Text files are .txt, .text, .jsonl, .ndjson and files without an extension (Debian's fortunes);
README*, the class lists (classes.txt, categories.txt) and fortune indexes (.dat) are not text.
"""
from __future__ import annotations

import os
from typing import List, Optional, Tuple

from modalities.text.corpus import CLASS_LISTS
from unimask.files import (SPLIT_FOLDERS, NoSplitError, as_roots, check_split, pick_split, resolve_split,
                           scan_folder, sibling_list_file, split_folders, sub_folders)
from unimask.shards import is_shard_index, list_index

TEXT_EXTS = (".txt", ".text", ".jsonl", ".ndjson")
Item = Tuple[str, Optional[int]]


def is_text_file(name: str) -> bool:
    stem, ext = os.path.splitext(name)
    if name.startswith(".") or stem.upper().startswith("README") or name.lower() in CLASS_LISTS:
        return False
    return ext.lower() in TEXT_EXTS or ext == ""


def split_files(folder: str) -> dict:
    """{split: [paths]} of the top-level files named like a split (train.jsonl, test.txt)."""
    found = {}
    for name in sorted(os.listdir(folder)):
        path = os.path.join(folder, name)
        stem = os.path.splitext(name)[0].lower()
        if os.path.isfile(path) and is_text_file(name):
            if any(stem in names for names in SPLIT_FOLDERS.values()):
                found.setdefault(stem, []).append(path)
    return found


def scan_text_folder(folder: str, classes: Optional[List[str]] = None) -> List[Item]:
    """Every text file under folder; those in a class sub-folder get its index as label."""
    return scan_folder(folder, is_text_file, classes)


def list_one_root(root: str, split: str) -> Tuple[List[Item], str]:
    r = os.path.expanduser(str(root))
    if is_shard_index(r):  # tar shards of the files (tools/make_shards.py): the split they were packed from
        resolve_split(r, split)
        return list_index(r), r
    if os.path.isfile(r):
        if split == "train":
            return [(r, None)], r
        sibling = sibling_list_file(r, split)
        if sibling is None:
            raise NoSplitError(f"{r} is one file and has no {split} file beside it")
        return [(sibling, None)], sibling
    if not os.path.isdir(r):
        raise FileNotFoundError(f"dataset root {r!r} does not exist")
    named = split_files(r)
    if named:
        for name in SPLIT_FOLDERS[split]:
            if name in named:
                return [(p, None) for p in named[name]], ", ".join(named[name])
        raise NoSplitError(f"{r} has split files {sorted(named)} but none for split {split!r}")
    folders = split_folders(r)
    if folders:
        chosen = pick_split(folders, split, r)
        try:  # labels follow the train split's class folders, so class k means the same everywhere
            classes = sub_folders(pick_split(folders, "train", r))
        except NoSplitError:
            classes = None
        return scan_text_folder(chosen, classes), chosen
    if split != "train":
        raise NoSplitError(f"{r} has no {split} split (no {split}.jsonl-like file, no {split}/ folder)")
    return scan_text_folder(r), r


def list_text_files(root, split: str = "train", test_root=None) -> Tuple[List[Item], str]:
    """-> ([(path, label | None)], where they came from); no file is an error naming the root."""
    check_split(split, "TextDataset.split")
    roots = as_roots(test_root if split != "train" and test_root is not None else root)
    items, sources = [], []
    for r in roots:
        try:
            found, how = list_one_root(r, split)
        except NoSplitError:
            if split == "train" or test_root is None:
                raise
            found, how = list_one_root(r, "train")  # a plain test_root is the test split as a whole
        if not found:
            raise ValueError(f"dataset root {r!r} holds no text files ({', '.join(TEXT_EXTS)} or no extension)")
        items += found
        sources.append(how)
    return items, f"{split}: " + ", ".join(sources)
