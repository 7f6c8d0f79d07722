"""Text (BERT, Devlin et al. 2019; masked diffusion: MDLM, Sahoo et al. 2024; MD4, Shi et al.
2024): documents -> token ids on a 1-D grid, masked-token prediction with a tied output embedding.

    tokenizer.py  TextTokenizer, ByteTokenizer (default, offline)
    choose.py     text_tokenizer (gin entry point: bytes or a BPE file), tokenizers kept in checkpoints
    bpe.py        BPETokenizer and train_bpe (the `tokenizers` package; tools/train_tokenizer.py)
    state.py      a tokenizer's JSON as a uint8 tensor (the adapter's checkpointed extra state)
    corpus.py     documents from .jsonl / .txt / fortune files; bad input named by file and line
    files.py      which files make a split (split files, split and class folders, test_root)
    labels.py     class-name labels -> indices of the train split's sorted names
    packing.py    documents -> fixed-length [CLS] ... [SEP] sequences with word indices
    dataset.py    TextDataset
    adapter.py    TextAdapter (ids -> Tokens, learned positions, random tokens for BERT's 10%)
    objective.py  TokenIdTarget (tied embeddings, bf16-safe ids), TokenCrossEntropy
    masking.py    WholeWordMasker
    inference.py  predict_logits: [MASK] at chosen places -> logits
    fill.py       fill_mask (beam search over [MASK] places)
    sampling.py   sample_ids / sample_text: iterative unmasking (MDLM, confidence order)
    evaluate.py   evaluate_text: masked-token accuracy, masked-diffusion perplexity bound
"""
from modalities.text.adapter import TextAdapter  # noqa: F401
from modalities.text.bpe import BPETokenizer, train_bpe  # noqa: F401
from modalities.text.corpus import CorpusError, Document, read_documents  # noqa: F401
from modalities.text.dataset import TextDataset, read_corpus  # noqa: F401
from modalities.text.evaluate import evaluate_text  # noqa: F401
from modalities.text.fill import encode_with_masks, fill_mask  # noqa: F401
from modalities.text.inference import predict_logits  # noqa: F401
from modalities.text.masking import WORD_IDS, WholeWordMasker  # noqa: F401
from modalities.text.objective import TokenCrossEntropy, TokenIdTarget  # noqa: F401
from modalities.text.sampling import sample_ids, sample_text  # noqa: F401
from modalities.text.choose import remember_checkpoint_tokenizers, text_tokenizer  # noqa: F401
from modalities.text.tokenizer import ByteTokenizer, TextTokenizer  # noqa: F401
