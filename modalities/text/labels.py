"""Class names as labels: `{"text": ..., "label": "sports"}` -> class indices, as ImageFolder maps
class folders.

The indices are the positions of the names in the sorted names of the TRAIN split, so class k
means the same in every split: a test split is mapped with the train split's names, never its
own (which would shift every index after a class the test split lacks), and a name the train
split never had is an error naming it and where it is. The train split itself always maps, so
pretraining, which reads only it, never fails on labels. A classes.txt / categories.txt beside a
file fixes its order instead (corpus.py maps those names when it reads the file).
"""
from __future__ import annotations

from typing import List, Optional

from modalities.text.corpus import CorpusError, Document


def label_names(docs: List[Document]) -> List[str]:
    """The sorted distinct class names among the documents' labels ([] when all are integers)."""
    return sorted({d.label for d in docs if isinstance(d.label, str)})


def check_label_kinds(docs: List[Document]):
    """Names and integer labels in one corpus cannot share one index space: an error naming one of each."""
    named = next((d for d in docs if isinstance(d.label, str)), None)
    numbered = next((d for d in docs if not isinstance(d.label, str) and d.label >= 0), None)
    if named is not None and numbered is not None:
        raise CorpusError(f"{named.where}: label {named.label!r} is a class name but {numbered.where} has the "
                          f"integer label {numbered.label}; use names or integers throughout (or a classes.txt "
                          "beside the files to number the names)")


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
