"""Finding a dataset's files: folders, list files, single files, and their train/test splits.

Every file-based dataset, whatever its adapter, lists its items here, so the layouts users
bring work the same everywhere:

    root/<class>/*.ext                         one split; class folders give labels (ImageFolder)
    root/train/<class>/*.ext + root/test/...   split folders (test falls back to val/)
    root/<class>/train/*.ext + <class>/test/   ModelNet's layout: split folders inside classes
    train.csv / test.csv (val.csv) side by side  Kinetics / SSv2 list files, `path [label]` lines
    <Dataset>.test_root                        a separate test folder or list file

Labels of every split come from the train split's class folders, so class k means the same in
train and test even when a split lacks a class. A split that does not exist is a NoSplitError,
never a silent copy of the training data.
"""
from __future__ import annotations

import hashlib
import os
from typing import List, Optional, Sequence, Tuple, Union

import numpy as np

from unimask.shards import index_split, is_shard_index, list_index

Roots = Union[str, Sequence[str]]
Item = Tuple[str, Optional[int]]
LIST_EXTS = (".csv", ".txt", ".lst", ".tsv")
SPLIT_FOLDERS = {  # folder names that hold a split, in order of preference
    "train": ("train", "training"),
    "val": ("val", "valid", "validation"),
    "test": ("test", "testing", "val", "valid", "validation"),
}
SPLIT_NAMES = {name for names in SPLIT_FOLDERS.values() for name in names}


class NoSplitError(ValueError):
    """The data has no such split (no split folder, no list file for it, no test_root)."""


def as_roots(root: Roots) -> List[str]:
    if root is None or root == "":
        raise ValueError("dataset root is not set (bind <Dataset>.root in gin)")
    return [root] if isinstance(root, (str, os.PathLike)) else list(root)


def check_split(split: str, binding: str = "<Dataset>.split") -> str:
    if split not in SPLIT_FOLDERS:
        raise ValueError(f"{binding}={split!r}: use one of {tuple(SPLIT_FOLDERS)}")
    return split


def read_list_file(path: str, exts: Tuple[str, ...], classes: Optional[List[str]] = None) -> List[Item]:
    """Kinetics/SSv2/AudioSet-style list: `path [label]` per line (space, comma or tab separated),
    paths relative to the list file's folder. A label is an integer or a class name, which indexes
    `classes` or a classes.txt beside the list (one name per line): one class list for every
    split, so a class means the same in train.csv and test.csv."""
    base = os.path.dirname(os.path.abspath(path))
    rows = []
    with open(path) as f:
        for line_no, line in enumerate(f, 1):
            line = line.strip()
            if not line or line.startswith("#"):
                continue
            parts = line.replace(",", " ").split()
            file = parts[0] if os.path.isabs(parts[0]) else os.path.join(base, parts[0])
            if exts and not file.lower().endswith(exts):
                continue  # a header row or a file of another kind
            rows.append((file, parts[-1] if len(parts) > 1 else None, line_no))
    names = {cell for _, cell, _ in rows if cell is not None and not is_integer(cell)}
    if names and classes is None:
        listed = os.path.join(base, "classes.txt")
        if os.path.isfile(listed):
            with open(listed) as f:
                classes = [line.strip() for line in f if line.strip()]
    return [(file, None if cell is None else parse_label(cell, classes, path, line_no)) for file, cell, line_no in rows]


def is_integer(cell: str) -> bool:
    return cell.strip().lstrip("+-").isdigit()


def parse_label(cell: str, classes: Optional[List[str]], path: str, line_no: int) -> int:
    if classes and cell in classes:
        return classes.index(cell)
    try:
        return int(cell)
    except ValueError:
        raise ValueError(f"{path}:{line_no}: label {cell!r} is not an integer"
                         + (f" nor one of the classes {classes[:5]}..." if classes else
                            " (class names need a classes.txt beside the list, one name per line)")) from None


def sub_folders(folder: str) -> List[str]:
    return sorted(d for d in os.listdir(folder) if os.path.isdir(os.path.join(folder, d)) and not d.startswith("."))


def split_folders(folder: str) -> dict:
    """{split name: path} when every sub-folder of `folder` is a split name (train/, test/...)."""
    subs = sub_folders(folder)
    if subs and all(d.lower() in SPLIT_NAMES for d in subs):
        return {d.lower(): os.path.join(folder, d) for d in subs}
    return {}


def has_class_splits(folder: str) -> bool:
    """ModelNet's layout: every class folder holds only split folders (airplane/train, airplane/test)."""
    subs = sub_folders(folder)
    return bool(subs) and all(split_folders(os.path.join(folder, d)) for d in subs)


def pick_split(found: dict, split: str, where: str) -> str:
    for name in SPLIT_FOLDERS[split]:
        if name in found:
            return found[name]
    raise NoSplitError(f"{where} has split folders {sorted(found)} but none for split {split!r} "
                       f"(looked for {'/'.join(SPLIT_FOLDERS[split])})")


def scan_folder(folder: str, exts, classes: Optional[List[str]] = None,
                split: Optional[str] = None) -> List[Item]:
    """Recursive scan; files in class sub-folders get the class index as label (ImageFolder /
    ModelNet layout), files at the top level get none. exts: the extensions to take, or a
    predicate on the file name (text files may have none); classes: the names to index by (the
    train split's); split: in ModelNet's layout, take only <class>/<split>/."""
    wanted = exts if callable(exts) else (lambda name: name.lower().endswith(exts))
    own = sub_folders(folder)
    classes = own if classes is None else classes
    class_split = split is not None and has_class_splits(folder)
    items = []
    for class_name in [None] + own:
        top = folder if class_name is None else os.path.join(folder, class_name)
        if class_name is not None and class_name not in classes:
            raise ValueError(f"{top}: class folder {class_name!r} is not among the training classes {classes[:8]}")
        label = None if class_name is None else classes.index(class_name)
        if class_name is not None and class_split:
            top = pick_split(split_folders(top), split, top)
        for dirpath, dirnames, filenames in os.walk(top):
            dirnames.sort()
            if class_name is None:
                dirnames.clear()  # top-level files only; class folders are walked on their own
            items += [(os.path.join(dirpath, f), label) for f in sorted(filenames) if wanted(f)]
    return items


def is_list_file(path: str, exts: Tuple[str, ...]) -> bool:
    """A .csv/.txt/... root lists files when it is not itself a data file, or (a .txt point
    cloud vs a .txt list) when its first row names a file with one of `exts`."""
    if not (os.path.isfile(path) and path.lower().endswith(LIST_EXTS)):
        return False
    if not path.lower().endswith(exts):
        return True
    with open(path, errors="replace") as f:
        for line in f:
            line = line.strip()
            if line and not line.startswith("#"):
                return line.replace(",", " ").split()[0].lower().endswith(exts)
    return False


def list_root(r: str, exts: Tuple[str, ...], classes: Optional[List[str]] = None,
              split: Optional[str] = None) -> List[Item]:
    """One folder, list file or single file -> [(path, label|None)]; empty is an error."""
    r = os.path.expanduser(str(r))
    if is_shard_index(r):  # tar shards (unimask/shards.py): their samples in the packed order
        found = [(path, label) for path, label in list_index(r) if not exts or path.lower().endswith(exts)]
    elif os.path.isdir(r):
        found = scan_folder(r, exts, classes, split)
    elif is_list_file(r, exts):
        found = read_list_file(r, exts, classes)
    elif os.path.isfile(r):
        found = [(r, None)]
    else:
        raise FileNotFoundError(f"dataset root {r!r} does not exist")
    if not found:
        raise ValueError(f"dataset root {r!r} holds no files with extensions {', '.join(exts)}")
    return found


def list_files(root: Roots, exts: Tuple[str, ...]) -> List[Item]:
    """Folders, list files and single files -> [(path, label|None)], every split together."""
    return [item for r in as_roots(root) for item in list_root(r, exts)]


def sibling_list_file(path: str, split: str) -> Optional[str]:
    """train.csv -> test.csv (or val.csv) beside it, for list-file roots; None if there is none."""
    folder, name = os.path.split(path)
    lower = name.lower()
    for train_name in SPLIT_FOLDERS["train"]:
        if train_name in lower:
            start = lower.index(train_name)
            for other in SPLIT_FOLDERS[split]:
                candidate = os.path.join(folder, name[:start] + other + name[start + len(train_name):])
                if os.path.isfile(candidate):
                    return candidate
    return None


def resolve_split(r: str, split: str) -> Tuple[str, Optional[str], str]:
    """Where split `split` of root `r` lives -> (root to list, split to pick inside class folders
    or None, description). NoSplitError when the root has no such split."""
    r = os.path.expanduser(str(r))
    if is_shard_index(r):  # an index holds the one split it was packed from
        packed = index_split(r)
        if packed not in SPLIT_FOLDERS[split]:
            raise NoSplitError(f"{r} holds the {packed} split, not {split} (pack that split into shards of its own: "
                               f"tools/make_shards.py --split {split}, and give it as <Dataset>.test_root)")
        return r, None, r
    if os.path.isdir(r):
        found = split_folders(r)
        if found:
            chosen = pick_split(found, split, r)
            return chosen, None, chosen
        if has_class_splits(r):
            return r, split, f"{r} (<class>/{split}/)"
        if split == "train":
            return r, None, r
        raise NoSplitError(f"{r} has no {split} split (no {'/'.join(SPLIT_FOLDERS[split])} folder)")
    if split != "train" and os.path.isfile(r) and r.lower().endswith(LIST_EXTS):  # (a list file)
        sibling = sibling_list_file(r, split)
        if sibling is None:
            raise NoSplitError(f"{r} has no {split} list file beside it")
        return sibling, None, sibling
    if split != "train":
        raise NoSplitError(f"{r} is one file: it has no {split} split")
    return r, None, r


def train_classes(r: str) -> Optional[List[str]]:
    """The class names of a root's train split (None for list files and single files)."""
    r = os.path.expanduser(str(r))
    if not os.path.isdir(r):
        return None
    found = split_folders(r)
    if not found:
        return sub_folders(r)  # a plain class tree, or ModelNet's (classes hold the splits)
    try:
        return sub_folders(pick_split(found, "train", r))
    except NoSplitError:
        return None


def has_split(root: Roots, split: str, test_root: Optional[Roots] = None) -> bool:
    """Does the data have split `split` of its own (test_root, split folders, list files)?"""
    if split != "train" and test_root is not None:
        return True
    try:
        for r in as_roots(root):
            resolve_split(r, split)
    except NoSplitError:
        return False
    return True


def list_split_files(root: Roots, exts: Tuple[str, ...], split: str = "train",
                     test_root: Optional[Roots] = None) -> Tuple[List[Item], str]:
    """The files of one split -> (items, where they came from). `test_root` (any layout above)
    serves every split but train; labels always follow the train split's class folders."""
    check_split(split)
    roots = as_roots(root)
    items, sources = [], []
    if split != "train" and test_root is not None:
        classes = train_classes(roots[0]) if len(roots) == 1 else None
        for t in as_roots(test_root):
            try:
                where, inner, how = resolve_split(t, split)
            except NoSplitError:  # a plain folder or file given as the test data is the test split
                where = how = os.path.expanduser(str(t))
                inner = None
            items += list_root(where, exts, classes, inner)
            sources.append(how)
        return items, f"{split}: " + ", ".join(sources)
    for r in roots:
        where, inner, how = resolve_split(r, split)
        items += list_root(where, exts, train_classes(r), inner)
        sources.append(how)
    return items, f"{split}: " + ", ".join(sources)


def take_shots(items: List[Item], shots: int, binding: str = "<Dataset>.shots", episode: int = 0) -> List[Item]:
    """k labeled items per class (few-shot / label-scarce fine-tuning and probes, as the papers'
    few-shot tables): within each class the items whose file name hashes lowest, so the choice is the same on
    every machine and does not depend on listing order; unlabeled items are dropped, a class
    with fewer than k keeps all it has. Order of the result: the input's.
    episode: another draw of the k (the hash is salted with it; episode 0 is the unsalted draw), since
    one draw of a few shapes per class is noisy and the papers' few-shot tables average ten episodes."""
    if int(shots) < 1:
        raise ValueError(f"{binding}={shots}: at least 1 item per class")
    by_class = {}
    for path, label in items:
        if label is not None:
            by_class.setdefault(label, []).append(path)
    if not by_class:
        raise ValueError(f"{binding}={shots}: the split has no labeled items")
    if int(episode) < 0:
        raise ValueError(f"episode={episode} (with {binding}): episodes count from 0")
    salt = f"{int(episode)}:" if int(episode) else ""
    rank = lambda path: (hashlib.sha1((salt + os.path.basename(path)).encode()).hexdigest(), path)  # noqa: E731
    chosen = {path for paths in by_class.values() for path in sorted(paths, key=rank)[:int(shots)]}
    return [(path, label) for path, label in items if path in chosen]


def read_npz_split(path: str, split: str, whole_file_ok: bool = None):
    """Arrays of one split of an .npz (x_<split>/y_<split>, else x/y or images/labels)
    -> (x [N, ...], labels [N] | None); a missing file or empty array is named.
    The un-split x/y arrays serve split 'train' (or any split of a file given as test_root,
    whole_file_ok); asking another split of them is a NoSplitError, not the training data again."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"dataset root {path!r} does not exist")
    data = np.load(path)
    whole_file_ok = split == "train" if whole_file_ok is None else whole_file_ok
    if f"x_{split}" not in data and any(key.startswith("x_") for key in data) or \
            f"x_{split}" not in data and not whole_file_ok:
        raise NoSplitError(f"{path}: no x_{split} array (keys: {list(data.keys())})")
    for x_key, y_key in ((f"x_{split}", f"y_{split}"), ("x", "y"), ("images", "labels")):
        if x_key in data:
            x = data[x_key]
            labels = data[y_key] if y_key in data else None
            break
    else:
        raise KeyError(f"{path}: no x_{split}/x/images array (keys: {list(data.keys())})")
    if len(x) == 0:
        raise ValueError(f"{path}: array {x_key!r} is empty")
    return x, labels
