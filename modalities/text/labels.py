"""Class names as labels: `{"text": ..., "label": "sports"}` -> class indices, as ImageFolder maps
class folders; and where labels are checked at all.

The indices are the positions of the names in the sorted names of the TRAIN split, so class k
means the same in every split: a test split is mapped with the train split's names, never its
own (which would shift every index after a class the test split lacks), and a name the train
split never had is an error naming it and where it is. A classes.txt / categories.txt beside a
file fixes its order instead (corpus.py maps those names when it reads the file).

Where labels are checked: only a split other than 'train' is built for probes and fine-tuning
alone (tools/eval.py builds split='train' and split='test'; pretraining builds only the train
split). So the train split never fails on labels: a label that is no class (a list, 1.0, true,
names mixed with integers) becomes -1, "unlabeled", with one warning naming the first; a test
split refuses any such label in itself OR in the train split it is scored against, and refuses
labels of another kind than the train split's (names against integers would be mis-scored),
each error naming file and line. A probe without a test split (an 80/20 hold-out of the train
split) sees the warning and only the usable labels (every label -1: the probe says it has none).
"""
from __future__ import annotations

import warnings
from typing import List, Optional, Tuple

from modalities.text.corpus import CorpusError, Document, Unusable


def label_names(docs: List[Document]) -> List[str]:
    """The sorted distinct class names among the documents' labels ([] when all are integers)."""
    return sorted({d.label for d in docs if isinstance(d.label, str)})


def first_of_kind(docs: List[Document], named: bool) -> Optional[Document]:
    """The first document with a class-name label (named) or a class-index label (not named)."""
    if named:
        return next((d for d in docs if isinstance(d.label, str)), None)
    return next((d for d in docs if isinstance(d.label, int) and d.label >= 0), None)


def mixed_kinds(docs: List[Document]) -> Optional[str]:
    """Names and integer labels in one corpus cannot share one index space: a message naming one of
    each, None when the labels are of one kind."""
    named, numbered = first_of_kind(docs, True), first_of_kind(docs, False)
    if named is None or numbered is None:
        return None
    return (f"{named.where}: label {named.label!r} is a class name but {numbered.where} has the integer label "
            f"{numbered.label}; use names or integers throughout (or a classes.txt beside the files to number "
            "the names)")


def check_label_kinds(docs: List[Document]):
    """An error when names and integers are mixed (mixed_kinds)."""
    message = mixed_kinds(docs)
    if message is not None:
        raise CorpusError(message)


def usable_labels(docs: List[Document]) -> Tuple[List[Document], List[str]]:
    """-> (the documents with every unusable label set to -1, the problems found): Unusable labels,
    and every label of a corpus mixing names and integers."""
    problems = [f"{d.where}: {d.label.what}" for d in docs if isinstance(d.label, Unusable)]
    docs = [Document(d.text, -1, d.where) if isinstance(d.label, Unusable) else d for d in docs]
    mixed = mixed_kinds(docs)
    if mixed is not None:
        problems.append(mixed)
        docs = [Document(d.text, -1, d.where) for d in docs]
    return docs, problems


def labels_for_split(docs: List[Document], split: str, read_train, source: str) -> Tuple[List[Document], list]:
    """The split's documents with class-index labels, and the class names (None: integer labels).
    read_train() -> (the train split's documents, where they are): read only for a split other
    than 'train', which is checked strictly (see the module docstring)."""
    docs, problems = usable_labels(docs)
    if split == "train":
        if problems:
            warnings.warn(f"TextDataset ({source}): {len(problems)} label problem(s), those labels are ignored "
                          f"(pretraining needs none; the test split of a probe refuses them): {problems[0]}")
        classes = label_names(docs)
        return (map_labels(docs, classes, split), classes) if classes else (docs, None)
    train, train_source = read_train()
    train, train_problems = usable_labels(train)
    for where, found in ((split, problems), ("train", train_problems)):
        if found:
            raise CorpusError(f"{found[0]} ({len(found)} unusable label(s) in the {where} split; the {split} split "
                              "scores a probe, which needs every label to be an integer or a class name)")
    classes = label_names(train)
    if classes:  # the test split must name its classes too: an integer would be scored as train's k-th name
        numbered = first_of_kind(docs, False)
        if numbered is not None:
            raise CorpusError(f"{numbered.where}: the {split} split has the integer label {numbered.label} but the "
                              f"train split ({train_source}) labels by class name ({first_of_kind(train, True).where}: "
                              f"{first_of_kind(train, True).label!r}); use the class names in every split")
        return map_labels(docs, classes, split, train_source), classes
    named = first_of_kind(docs, True)
    if named is not None and first_of_kind(train, False) is not None:
        raise CorpusError(f"{named.where}: the {split} split has the class name {named.label!r} but the train split "
                          f"({train_source}) labels by integer; use integers in every split (or a classes.txt)")
    return map_labels(docs, classes, split, train_source), None


def map_labels(docs: List[Document], classes: List[str], split: str, train_source: Optional[str] = None
               ) -> List[Document]:
    """Documents with name labels -> the same documents with class indices into `classes` (the
    train split's sorted names). An unseen name is an error naming it, where it is, and the classes."""
    index = {name: i for i, name in enumerate(classes)}
    out = []
    for doc in docs:
        if isinstance(doc.label, str):
            if doc.label not in index:
                known = ", ".join(map(repr, classes[:10])) + (", ..." if len(classes) > 10 else "") or "none"
                raise CorpusError(f"{doc.where}: label {doc.label!r} of the {split} split is not a class of the train "
                                  f"split{f' ({train_source})' if train_source else ''}; its {len(classes)} classes: "
                                  f"{known}")
            doc = Document(doc.text, index[doc.label], doc.where)
        out.append(doc)
    return out
