"""TextDataset: text files -> fixed-length token sequences {'ids', 'word_ids', 'label'}.

The corpus is read, tokenized and packed once, when the dataset is built (in the main process,
before any worker starts), so every bad input is found and named up front and load(i) is a
lookup. Memory: two int32 arrays of seq_len per sequence.
"""
from __future__ import annotations

import os
from typing import Optional

import gin
import numpy as np
import torch

from modalities.text.corpus import CLASS_LISTS, BadInputLog, read_documents
from modalities.text.files import list_text_files
from modalities.text.labels import labels_for_split
from modalities.text.packing import make_sequences
from modalities.text.tokenizer import ByteTokenizer, TextTokenizer
from unimask.data import SampleDataset
from unimask.shards import folder_of


def read_corpus(root, split: str = "train", test_root=None, encoding: str = "utf-8", document_per: str = "auto",
                text_field: str = "text", label_field: str = "label", on_bad_input: str = "error",
                log: Optional[BadInputLog] = None) -> tuple:
    """-> (documents, where they came from): every file of the split, in order."""
    if on_bad_input not in ("error", "skip"):
        raise ValueError(f"TextDataset.on_bad_input={on_bad_input!r}: use 'error' or 'skip'")
    log = log if log is not None else BadInputLog()
    items, source = list_text_files(root, split, test_root)
    docs = []
    for path, label in items:
        docs += read_documents(path, label, encoding, document_per, text_field, label_field, on_bad_input, log)
    return docs, source


@gin.configurable
class TextDataset(SampleDataset):
    """.txt (one document a line, or a file: document_per), .jsonl with a "text" field and an
    optional "label", and '%'-separated fortune files; split files (train.jsonl / test.jsonl),
    split folders, class folders and test_root as unimask/files.py describes (modalities/text/files.py).

    tokenizer: shared with TextAdapter (one gin singleton in the recipes); None = bytes.
    seq_len: tokens per sequence, [CLS] and [SEP] included. packing / too_long: see packing.py.
    encoding: of every file (errors name file and line). on_bad_input: 'error' or 'skip'
    (counted and warned: undecodable files or documents, empty files, bad JSON lines).
    limit: the first `limit` documents only.
    Labels that are class names ({"label": "sports"}) become the indices of the train split's
    sorted names (modalities/text/labels.py); `classes` lists them (index = class id), None when
    the labels are integers. A name the train split lacks, in another split, is an error. The train
    split ignores labels that are no class (null, lists, 1.0, true, names mixed with integers: -1,
    warned), so pretraining runs; a test split refuses them, in itself and in the train split.
    """

    def __init__(self, root=gin.REQUIRED, tokenizer: Optional[TextTokenizer] = None, seq_len: int = 128,
                 packing: str = "pack", too_long: str = "truncate", document_per: str = "auto",
                 encoding: str = "utf-8", on_bad_input: str = "error", text_field: str = "text",
                 label_field: str = "label", split: str = "train", test_root=None, limit: Optional[int] = None):
        self.tokenizer = tokenizer if tokenizer is not None else ByteTokenizer()
        self.root, self.split, self.test_root = root, split, test_root
        self.bad = BadInputLog()
        docs, self.source = read_corpus(root, split, test_root, encoding, document_per, text_field, label_field,
                                        on_bad_input, self.bad)
        # class names of name labels (index = class id), None for integer labels; a train split
        # never fails on labels, another split is checked against the train split (labels.py)
        docs, self.classes = labels_for_split(
            docs, split, lambda: read_corpus(root, "train", None, encoding, document_per, text_field, label_field,
                                             on_bad_input, BadInputLog()), str(self.source))
        docs = docs[:limit] if limit is not None else docs
        docs = self.drop_empty(docs)
        if not docs:
            raise ValueError(f"TextDataset: no documents in {self.source}")
        encoded = self.tokenizer.encode_batch([d.text for d in docs])
        self.sequences = make_sequences(encoded, docs, self.tokenizer, seq_len, packing, too_long, self.bad)
        self.n_documents, self.n_tokens = len(docs), int(sum(len(ids) for ids, _ in encoded))
        self.seq_len = seq_len
        self.items = list(zip(self.sequences.where, self.sequences.labels.tolist()))
        self.bad.report(f"TextDataset ({self.source})")

    def files(self) -> list:
        """The corpus files of this split (an item is a sequence of tokens, not a file)."""
        return list_text_files(self.root, self.split, self.test_root)[0]

    def root_files(self) -> list:
        """The class lists (classes.txt, categories.txt) beside the files, which fix the indices of
        name labels; shards keep them beside their index."""
        found = {}
        for folder in dict.fromkeys(folder_of(path) for path, _ in self.files()):
            for name in CLASS_LISTS:
                if name not in found and os.path.isfile(os.path.join(folder, name)):
                    found[name] = os.path.join(folder, name)
        return list(found.values())

    def drop_empty(self, docs):
        kept = [d for d in docs if d.text]
        for doc in docs:
            if not doc.text:
                self.bad.add("empty document, skipped", f"{doc.where}: empty text")
        return kept

    def load(self, index):
        seq = self.sequences
        return {"ids": torch.from_numpy(seq.ids[index].astype(np.int64)),
                "word_ids": torch.from_numpy(seq.word_ids[index].astype(np.int64)),
                "label": int(seq.labels[index])}

    def collate(self, samples):
        """default_collate, then the columns that are padding in every sample cut off: a batch of
        short documents costs its longest one, not seq_len."""
        batch = torch.utils.data.default_collate(samples)
        used = int((batch["ids"] != self.tokenizer.pad_id).any(0).nonzero().max()) + 1
        batch["ids"], batch["word_ids"] = batch["ids"][:, :used], batch["word_ids"][:, :used]
        return batch
