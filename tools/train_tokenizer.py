#!/usr/bin/env python
"""Train a byte-level BPE tokenizer (the `tokenizers` package, offline) on a text corpus.

python tools/train_tokenizer.py --root data/sample/text --vocab-size 2000 --out runs/text_mlm_cpu/tokenizer.json
    [--split train] [--encoding utf-8] [--document-per auto] [--min-frequency 2] [--limit N]

The corpus is read as TextDataset reads it (the same files of the same split, .jsonl / .txt /
fortune files, the same errors for bad input), so the tokenizer sees exactly the training text.
It is written into the run directory; train with
    --gin_param "text_tokenizer.path='runs/text_mlm_cpu/tokenizer.json'"
and the checkpoints keep a copy of it (tools/fill_mask.py needs only the checkpoint).
"""
from __future__ import annotations

import argparse
import sys

from unimask.cli import exit_code


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", action="append", required=True, help="file or folder (repeatable)")
    parser.add_argument("--out", required=True, help="where the tokenizer JSON goes (the run directory)")
    parser.add_argument("--vocab-size", type=int, default=8000)
    parser.add_argument("--min-frequency", type=int, default=2)
    parser.add_argument("--split", default="train")
    parser.add_argument("--encoding", default="utf-8")
    parser.add_argument("--document-per", default="auto", choices=("auto", "line", "file", "fortune"))
    parser.add_argument("--on-bad-input", default="error", choices=("error", "skip"))
    parser.add_argument("--limit", type=int, default=None, help="the first N documents only")
    return parser.parse_args(argv)


def train(argv=None):
    """-> the trained BPETokenizer (also saved to --out)."""
    from modalities.text import read_corpus, train_bpe
    from modalities.text.corpus import BadInputLog

    args = parse_args(argv)
    log = BadInputLog()
    docs, source = read_corpus(args.root if len(args.root) > 1 else args.root[0], args.split,
                               encoding=args.encoding, document_per=args.document_per,
                               on_bad_input=args.on_bad_input, log=log)
    log.report(f"train_tokenizer ({source})")
    docs = docs[:args.limit] if args.limit is not None else docs
    if not docs:
        raise ValueError(f"no documents in {source}")
    tokenizer = train_bpe((d.text for d in docs), args.vocab_size, args.min_frequency)
    tokenizer.save(args.out)
    n_tokens = sum(len(ids) for ids, _ in tokenizer.encode_batch([d.text for d in docs]))
    n_chars = sum(len(d.text) for d in docs)
    print(f"{len(docs)} documents ({source}): {n_tokens} tokens, {n_chars / max(n_tokens, 1):.2f} characters a token")
    print(f"vocabulary {tokenizer.vocab_size} -> {args.out}")
    print(f"train with: --gin_param \"text_tokenizer.path='{args.out}'\"")
    return tokenizer


def main(argv=None) -> int:
    return exit_code(train, argv, (ValueError, FileNotFoundError, ImportError))


if __name__ == "__main__":
    sys.exit(main())
