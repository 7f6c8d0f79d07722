"""Encoded documents -> fixed-length sequences [CLS] content [SEP] [PAD]... with word indices.

packing='pack'      documents back to back, each ended by [SEP] (RoBERTa's FULL-SENTENCES), cut
                    every seq_len - 2 tokens: no padding but in the last sequence. A sequence
                    keeps a label only when all its text comes from one document.
packing='document'  one document a sequence (probes, classification); a document longer than
                    the context is 'truncate'd (counted and warned), 'split' into several
                    sequences with its label, 'skip'ped (counted), or an 'error' naming its line.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List, Sequence, Tuple

import numpy as np

from modalities.text.corpus import BadInputLog, CorpusError, Document
from modalities.text.tokenizer import TextTokenizer

PACKINGS = ("pack", "document")
TOO_LONG = ("truncate", "split", "skip", "error")
Encoded = Tuple[np.ndarray, np.ndarray]  # (ids [T] int64, word_starts [T] bool)


@dataclass
class Sequences:
    ids: np.ndarray       # [S, L] int32 token ids, [CLS] first, [PAD] after [SEP]
    word_ids: np.ndarray  # [S, L] int32 word index per content token, -1 at specials and padding
    labels: np.ndarray    # [S] int64, -1 where none
    where: List[str]      # [S] "path:line" of the (first) document

    def __len__(self):
        return len(self.labels)


def word_indices(content: np.ndarray, starts: np.ndarray) -> np.ndarray:
    """content [S, L] bool, starts [S, L] bool -> [S, L] int32 word index of each content token
    (0, 1, ... per row; a row's first content token starts a word), -1 elsewhere."""
    starts = starts & content
    first = content & (np.cumsum(content, 1) == 1)
    index = np.cumsum(starts | first, 1) - 1
    return np.where(content, index, -1).astype(np.int32)


def frame_rows(chunks: np.ndarray, starts: np.ndarray, lengths: np.ndarray, tok: TextTokenizer, seq_len: int):
    """Content rows [S, C] (valid up to lengths [S]) -> ids [S, L] and word ids [S, L], L = C + 2."""
    rows = len(chunks)
    ids = np.full((rows, seq_len), tok.pad_id, dtype=np.int32)
    ids[:, 0] = tok.cls_id
    place = np.arange(seq_len - 2)[None] < lengths[:, None]
    ids[:, 1:-1] = np.where(place, chunks, tok.pad_id)
    ids[np.arange(rows), lengths + 1] = tok.sep_id
    word_starts = np.zeros((rows, seq_len), dtype=bool)
    word_starts[:, 1:-1] = starts & place
    content = ~np.isin(ids, tok.special_ids)
    return ids, word_indices(content, word_starts)


def cut_rows(stream: np.ndarray, fill, rows: int, width: int) -> np.ndarray:
    """[T] -> [rows, width], the tail filled with `fill`."""
    return np.concatenate([stream, np.full(rows * width - len(stream), fill, dtype=stream.dtype)]).reshape(rows, width)


def pack(encoded: Sequence[Encoded], docs: Sequence[Document], tok: TextTokenizer, seq_len: int) -> Sequences:
    width = seq_len - 2
    if not encoded:
        raise ValueError("no documents to pack")
    stream = np.concatenate([np.append(ids, tok.sep_id) for ids, _ in encoded])  # [T] every document + [SEP]
    starts = np.concatenate([np.append(s, False) for _, s in encoded])
    owner = np.concatenate([np.full(len(ids) + 1, i) for i, (ids, _) in enumerate(encoded)])  # document of each
    rows = -(-len(stream) // width)
    lengths = np.full(rows, width)
    lengths[-1] = len(stream) - (rows - 1) * width
    chunks, chunk_starts, owners = (cut_rows(stream, tok.pad_id, rows, width), cut_rows(starts, False, rows, width),
                                    cut_rows(owner, -1, rows, width))
    ids, word_ids = frame_rows(chunks, chunk_starts, lengths, tok, seq_len)
    has_text = (word_ids >= 0).any(1)  # a row holding only the last [SEP] is dropped
    doc_labels = np.array([d.label for d in docs] + [-1], dtype=np.int64)
    real = np.arange(width)[None] < lengths[:, None]
    first, last = owners[:, 0], np.where(real, owners, -1).max(1)
    labels = np.where(first == last, doc_labels[first], -1)
    keep = np.nonzero(has_text)[0]
    return Sequences(ids[keep], word_ids[keep], labels[keep], [docs[first[i]].where for i in keep])


def by_document(encoded: Sequence[Encoded], docs: Sequence[Document], tok: TextTokenizer, seq_len: int,
                too_long: str, log: BadInputLog) -> Sequences:
    width = seq_len - 2
    pieces, piece_starts, labels, where = [], [], [], []
    for (ids, starts), doc in zip(encoded, docs):
        if len(ids) > width:
            message = (f"{doc.where}: a document of {len(ids)} tokens is longer than the context "
                       f"(TextDataset.seq_len={seq_len}: {width} tokens + [CLS] and [SEP])")
            if too_long == "error":
                raise CorpusError(message + "; set TextDataset.too_long='split', 'truncate' or 'skip'")
            if too_long == "skip":
                log.add("too long, skipped", message)
                continue
            if too_long == "truncate":
                log.add("too long, truncated", message)
                ids, starts = ids[:width], starts[:width]
        for begin in range(0, len(ids), width):
            pieces.append(ids[begin:begin + width])
            piece_starts.append(starts[begin:begin + width])
            labels.append(doc.label)
            where.append(doc.where)
    rows = len(pieces)
    chunks = np.full((rows, width), tok.pad_id, dtype=np.int64)
    chunk_starts = np.zeros((rows, width), dtype=bool)
    lengths = np.array([len(p) for p in pieces], dtype=np.int64)
    for i, (piece, start) in enumerate(zip(pieces, piece_starts)):
        chunks[i, :len(piece)], chunk_starts[i, :len(start)] = piece, start
    ids, word_ids = frame_rows(chunks, chunk_starts, lengths, tok, seq_len)
    return Sequences(ids, word_ids, np.array(labels, dtype=np.int64), where)


def make_sequences(encoded: Sequence[Encoded], docs: Sequence[Document], tok: TextTokenizer, seq_len: int,
                   packing: str = "pack", too_long: str = "truncate", log: BadInputLog = None) -> Sequences:
    """Encoded documents -> Sequences of seq_len tokens (see the module's docstring)."""
    if packing not in PACKINGS:
        raise ValueError(f"TextDataset.packing={packing!r}: use one of {PACKINGS}")
    if too_long not in TOO_LONG:
        raise ValueError(f"TextDataset.too_long={too_long!r}: use one of {TOO_LONG}")
    if seq_len < 3:
        raise ValueError(f"TextDataset.seq_len={seq_len}: room for [CLS], [SEP] and at least one token needs >= 3")
    if packing == "pack":
        return pack(encoded, docs, tok, seq_len)
    return by_document(encoded, docs, tok, seq_len, too_long, log if log is not None else BadInputLog())
