"""Text (BERT MLM, masked diffusion): tokenizers, data, masking, recipes, fill-mask, sampling, evaluation."""
import math
import os
import random

import pytest
import torch

from helpers import ROOT, SMOKE, fast_params, read_metrics, run_train
from modalities.text import (ByteTokenizer, CorpusError, TextAdapter, TextDataset, TokenCrossEntropy, TokenIdTarget,
                             WholeWordMasker, encode_with_masks, fill_mask, sample_ids, train_bpe)
from modalities.text.objective import digits_to_ids, ids_to_digits
from unimask.decoders import MAEDecoder
from unimask.encoders import ViTEncoder, embed_ids
from unimask.masking import ConstantRatio, RandomMasker, SpanMasker, count_hidden
from unimask.models.masked import MaskedModel, all_ids

TEXT = os.path.join(ROOT, "data", "sample", "text")


def tiny_text_model(replace_probs=(0.8, 0.1, 0.1), dim=16, tokenizer=None, **kw):
    adapter = TextAdapter(tokenizer=tokenizer, dim=dim, max_len=512)
    return MaskedModel(adapter, RandomMasker(), ConstantRatio(0.15), ViTEncoder(dim=dim, depth=1, num_heads=2),
                       MAEDecoder(in_dim=dim, dim=dim, depth=0, remask=False, use_pos=False), target=TokenIdTarget(),
                       loss=TokenCrossEntropy(), mode="replace", replace_probs=replace_probs, **kw)


def random_text_batch(batch=64, n=512, seed=0):
    """Byte ids with [CLS] first, [SEP] after a random length, padding after it."""
    tok = ByteTokenizer()
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 256, (batch, n), generator=gen)
    lengths = torch.randint(n // 2, n - 1, (batch,), generator=gen)
    pos = torch.arange(n)[None]
    ids = torch.where(pos > lengths[:, None], tok.pad_id, ids)
    ids[torch.arange(batch), lengths] = tok.sep_id
    ids[:, 0] = tok.cls_id
    return {"ids": ids}


# ---- tokenizers -------------------------------------------------------------------------------
def test_byte_tokenizer_round_trips_any_utf8_string():
    tok = ByteTokenizer()
    rng = random.Random(0)
    texts = ["", "plain ascii", "Ünïcödé — “quotes” 日本語 😀👍🏽", "tabs\tand\nnew\r\nlines\x00\x08\x0c", "e\u0301"]
    texts += ["".join(chr(rng.choice([rng.randrange(0x20, 0x7f), rng.randrange(0xa0, 0xd7ff),
                                      rng.randrange(0xe000, 0x10ffff)])) for _ in range(50)) for _ in range(50)]
    for text in texts:
        ids, starts = tok.encode(text)
        assert ids.max(initial=0) < 256 and len(ids) == len(text.encode("utf-8")) == len(starts)
        assert tok.decode(ids.tolist()) == text
    assert tok.vocab_size == 260 and set(tok.special_ids) == {256, 257, 258, 259} and len(tok.content_ids) == 256
    _, starts = tok.encode("The cat  sat")
    assert starts.nonzero()[0].tolist() == [0, 3, 7]  # words: "The", " cat", "  sat"


def test_ids_survive_low_precision_casts_as_digits():
    ids = torch.tensor([0, 255, 256, 257, 30521, 65535])
    for dtype in (torch.bfloat16, torch.float16, torch.float32):
        assert torch.equal(digits_to_ids(ids_to_digits(ids).to(dtype)), ids)


# ---- data ------------------------------------------------------------------------------------
def test_jsonl_fortune_and_txt_files_read_with_labels_and_exact_packing(tmp_path):
    tok = ByteTokenizer()
    jsonl = TextDataset(root=TEXT, packing="document", too_long="split", seq_len=128)
    test = TextDataset(root=TEXT, split="test", packing="document", too_long="split", seq_len=128)
    assert jsonl.n_documents == 4445 and test.n_documents == 768 and "test.jsonl" in test.source
    assert set(jsonl.sequences.labels.tolist()) == set(range(40))
    lengths = [len(tok.encode(line)[0]) for line in read_texts(os.path.join(TEXT, "train.jsonl"))]
    assert len(jsonl) == sum(math.ceil(n / 126) for n in lengths)  # every long fortune split into 126-byte pieces
    packed = TextDataset(root=TEXT, seq_len=128)  # packing='pack': documents back to back, one [SEP] each
    assert len(packed) == math.ceil((sum(lengths) + len(lengths)) / 126)
    assert bool((packed.sequences.ids[:-1] != tok.pad_id).all())  # padding only in the last sequence
    one_doc = packed.sequences.labels >= 0
    assert 0 < one_doc.sum() < len(packed)  # a label only where all the text is one fortune's
    fortunes = TextDataset(root=os.path.join(TEXT, "raw"), packing="document", too_long="split", seq_len=512)
    with open(os.path.join(TEXT, "raw", "pets"), encoding="utf-8") as f:
        separators = sum(line.rstrip("\n") == "%" for line in f)
    assert fortunes.n_documents == 54 + 72 + separators == 54 + 72 + 52  # goedel, paradoxum, pets entries
    sample = fortunes[(0, 0)]
    assert sample["ids"][0] == tok.cls_id and sample["label"] == -1 and sample["word_ids"][0] == -1
    (tmp_path / "lines.txt").write_text("first document\n\nsecond one\r\nthird\n", encoding="utf-8")
    lines = TextDataset(root=str(tmp_path / "lines.txt"), packing="document", seq_len=32)
    assert lines.n_documents == 3 and tok.decode(lines[(1, 0)]["ids"].tolist()) == "second one"
    whole = TextDataset(root=str(tmp_path / "lines.txt"), packing="document", document_per="file", seq_len=64)
    assert whole.n_documents == 1


def read_texts(path):
    import json

    with open(path, encoding="utf-8") as f:
        return [json.loads(line)["text"] for line in f]


def test_bad_input_is_named_by_file_and_line_or_counted(tmp_path):
    bad = tmp_path / "bad.txt"
    bad.write_bytes("good line\nalso good\n".encode() + b"caf\xe9 latin-1\nlast\n")
    with pytest.raises(CorpusError, match=r"bad\.txt:3: not valid utf-8"):
        TextDataset(root=str(bad), packing="document")
    with pytest.warns(UserWarning, match="undecodable document: 1"):
        skipped = TextDataset(root=str(bad), packing="document", on_bad_input="skip")
    assert skipped.n_documents == 3
    latin = TextDataset(root=str(bad), packing="document", encoding="latin-1")
    assert latin.n_documents == 4 and "café" in ByteTokenizer().decode(latin[(2, 0)]["ids"].tolist())
    empty = tmp_path / "empty" / "empty.txt"
    empty.parent.mkdir()
    empty.write_text("")
    with pytest.raises(CorpusError, match=r"empty\.txt:1: the file holds no text"):
        TextDataset(root=str(empty))
    (empty.parent / "other.txt").write_text("some text\n")
    with pytest.warns(UserWarning, match="empty file: 1"):
        assert TextDataset(root=str(empty.parent), on_bad_input="skip").n_documents == 1
    long = tmp_path / "long.txt"
    long.write_text("short\n" + "x" * 40 + "\n")
    with pytest.raises(CorpusError, match=r"long\.txt:2: a document of 40 tokens is longer than the context"):
        TextDataset(root=str(long), packing="document", too_long="error", seq_len=16)
    with pytest.warns(UserWarning, match="too long, truncated: 1"):
        truncated = TextDataset(root=str(long), packing="document", too_long="truncate", seq_len=16)
    assert len(truncated) == 2 and int((truncated[(1, 0)]["ids"] != 256).sum()) == 16
    with pytest.warns(UserWarning, match="too long, skipped: 1"):
        assert len(TextDataset(root=str(long), packing="document", too_long="skip", seq_len=16)) == 1
    (tmp_path / "rows.jsonl").write_text('{"text": "a"}\n{"text": "b", "label": 2}\nnot json\n')
    with pytest.raises(CorpusError, match=r"rows\.jsonl:3: not a JSON object"):
        TextDataset(root=str(tmp_path / "rows.jsonl"))


# ---- masking ---------------------------------------------------------------------------------
def test_bert_80_10_10_split_within_binomial_tolerance_and_random_tokens_are_text():
    torch.manual_seed(0)
    model = tiny_text_model()
    tokens = model.adapter.tokenize(random_text_batch())
    gen = torch.Generator().manual_seed(1)
    mask = model.make_mask(tokens, 0.0, gen)
    maskable = tokens.maskable_mask()
    assert torch.equal(mask.masked.sum(1), count_hidden(torch.full((64,), 0.15, dtype=torch.float64), maskable.sum(1)))
    assert not bool((mask.masked & ~maskable).any())
    ids = all_ids(tokens)
    x = embed_ids(model.adapter, tokens, ids)
    out = model.replace_hidden(x, tokens, mask, ids, gen)
    as_mask = (out == model.enc_mask_token[0, 0]).all(-1) & mask.masked
    kept = (out == x).all(-1) & mask.masked
    random_ = mask.masked & ~as_mask & ~kept
    n = int(mask.masked.sum())
    assert not bool(((out != x).any(-1) & ~mask.masked).any())  # visible tokens untouched
    for count, p in ((as_mask, 0.8), (random_, 0.1 * 255 / 256), (kept, 0.1 + 0.1 / 256)):
        assert abs(int(count.sum()) - n * p) < 4.5 * math.sqrt(n * p * (1 - p)), (int(count.sum()), n * p)
    table = model.adapter.token_embed.weight
    drawn = torch.cdist(out[random_], table).argmin(1)
    assert bool((drawn < 256).all())  # never [PAD], [CLS], [SEP] or [MASK]


@pytest.mark.parametrize("masker", [RandomMasker(), SpanMasker(), WholeWordMasker()])
@pytest.mark.parametrize("ratio", [0.15, 0.5, 0.9])
def test_special_tokens_and_padding_are_never_hidden_and_counts_are_exact(masker, ratio):
    data = TextDataset(root=TEXT, packing="document", too_long="split", seq_len=64, limit=200)
    batch = data.collate([data[(i, 0)] for i in range(48)])
    tokens = TextAdapter(dim=8, max_len=64).tokenize(batch)
    mask = masker(tokens, ratio, torch.Generator().manual_seed(0))
    maskable = tokens.maskable_mask()
    assert not bool((mask.masked & ~maskable).any())
    assert not bool((~tokens.valid_mask() & mask.masked).any()) and bool(maskable.sum(1).gt(0).all())
    r = torch.full((48,), ratio, dtype=torch.float64)
    if isinstance(masker, WholeWordMasker):
        words = batch["word_ids"]
        n_words = torch.tensor([len(set(w[m].tolist())) for w, m in zip(words, maskable)])
        hidden_words = torch.tensor([len(set(w[h].tolist())) for w, h in zip(words, mask.masked)])
        assert torch.equal(hidden_words, count_hidden(r, n_words))
        for w, h, m in zip(words, mask.masked, maskable):  # a word is hidden whole or not at all
            for word in set(w[h].tolist()):
                assert bool(h[(w == word) & m].all())
    else:
        assert torch.equal(mask.masked.sum(1), count_hidden(r, maskable.sum(1)))


# ---- recipes: training, checkpoints, tools ----------------------------------------------------
@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """One smoke run per recipe, shared by the tests that read their checkpoints."""
    out = {}
    for recipe in ("text_mlm_cpu", "text_mdm_cpu"):
        workdir = str(tmp_path_factory.mktemp(recipe))
        assert run_train(["--gin", f"gin/{recipe}.gin", "--gin", SMOKE, "--workdir", workdir, *fast_params()]) == 0
        out[recipe] = workdir
    return out


@pytest.mark.parametrize("recipe", ["text_mlm_cpu", "text_mdm_cpu"])
def test_recipes_train_under_smoke_with_falling_eval_loss(runs, recipe):
    evals = [r["eval_loss"] for r in read_metrics(runs[recipe]) if "eval_loss" in r]
    assert len(evals) == 3 and evals[-1] < evals[0], evals


@pytest.mark.parametrize("recipe", ["text_mlm", "text_mdm"])
def test_full_size_recipes_build_under_smoke_and_pack_documents(recipe):
    """The recipes the CPU ones include, as smoke.gin shrinks them: packed data, one step's loss."""
    import gin

    from unimask.cli import parse_gin

    parse_gin([f"gin/{recipe}.gin", SMOKE])
    model = gin.query_parameter("train.model").scoped_configurable_fn()
    data = gin.query_parameter("train.dataset").scoped_configurable_fn()
    assert model.adapter.tokenizer is data.tokenizer  # one tokenizer (a gin singleton) for data and model
    assert data.sequences.ids.shape[1] == 128 and bool((data.sequences.ids[:-1] != 256).all())  # packed
    batch = data.collate([data[(i, 0)] for i in range(4)])
    out = model(batch, generator=torch.Generator().manual_seed(0))
    assert math.isfinite(float(out.loss.detach())) and out.pred.shape[-1] == 260
    assert model.replace_probs == ((0.8, 0.1, 0.1) if recipe == "text_mlm" else (1.0, 0.0, 0.0))


def test_mdm_loss_weight_is_one_over_the_ratio(runs):
    from fill_mask import load_text_model

    model = load_text_model(os.path.join(runs["text_mdm_cpu"], "checkpoints", "last.pt"))
    assert model.loss_weighting == "inverse_ratio" and model.replace_probs == (1.0, 0.0, 0.0)
    assert type(model.schedule).__name__ == "UniformRatio"
    data = TextDataset(root=TEXT, packing="document", too_long="split", seq_len=128, limit=8)
    batch = data.collate([data[(i, 0)] for i in range(4)])
    tokens = model.adapter.tokenize(batch)
    ratio = torch.tensor([0.1, 0.3, 0.6, 0.9], dtype=torch.float64)
    mask = model.masker(tokens, ratio, torch.Generator().manual_seed(0))
    weighted = model(batch, mask=mask, generator=torch.Generator().manual_seed(0))
    model.loss_weighting = "tokens"
    plain = model(batch, mask=mask, generator=torch.Generator().manual_seed(0))
    maskable = tokens.maskable_mask()
    hidden, n = (mask.masked & maskable).sum(1), maskable.sum(1)  # exactly round(t n) hidden of n
    assert torch.equal(hidden, torch.round(ratio * n.double()).long())
    realized = n.float() / hidden.float()  # = 1 / ratio up to the rounding of t n
    torch.testing.assert_close(realized, 1 / ratio.float(), rtol=0.2, atol=0)
    torch.testing.assert_close(weighted.extras["token_loss"], plain.extras["token_loss"] * realized[:, None])
    assert float(weighted.loss) == pytest.approx(float(plain.extras["token_loss"].sum(1).div(hidden).mul(n).sum() / n.sum()),
                                                    rel=1e-5)  # sum_b (n_b / k_b) sum_hidden CE / sum_b n_b


def test_tied_embedding_survives_the_checkpoint(runs):
    from fill_mask import load_text_model

    model = load_text_model(os.path.join(runs["text_mlm_cpu"], "checkpoints", "last.pt"))
    assert model.decoder.head.weight is model.adapter.token_embed.weight
    assert model.decoder.head.weight.shape == (260, 64)  # smoke.gin's ENC_DIM


def test_fill_mask_returns_k_candidates(runs, capsys):
    import fill_mask as tool

    checkpoint = os.path.join(runs["text_mlm_cpu"], "checkpoints", "last.pt")
    result = tool.run(["The [MASK] sat on the mat", "--checkpoint", checkpoint, "--top-k", "4", "--mask-length", "3"])
    fills = result["fills"]
    assert len(fills) == 4 and len({f["text"] for f in fills}) == 4
    assert all(f["text"].startswith("The ") and f["text"].endswith(" sat on the mat") and len(f["fill"]) == 3
               for f in fills)
    assert [f["logprob"] for f in fills] == sorted((f["logprob"] for f in fills), reverse=True)
    assert capsys.readouterr().out.count("\n") == 4
    assert tool.main(["no mask here", "--checkpoint", checkpoint]) == 2


@pytest.mark.parametrize("order", ["random", "confidence"])
def test_sampler_gives_the_requested_length_with_no_mask_left(runs, order):
    from fill_mask import load_text_model

    model = load_text_model(os.path.join(runs["text_mdm_cpu"], "checkpoints", "last.pt"))
    ids = sample_ids(model, 40, steps=8, order=order, num=3, seed=1, prompt="A dog")
    tok = model.adapter.tokenizer
    assert ids.shape == (3, 40) and not bool(torch.isin(ids, torch.tensor(tok.special_ids)).any())
    again = sample_ids(model, 40, steps=8, order=order, num=3, seed=1, prompt="A dog")
    assert torch.equal(ids, again)  # seeded


def test_sample_command_prints_text_from_a_checkpoint(runs):
    """tools/fill_mask.py --sample as users run it: a subprocess, text on stdout, exit 0."""
    import subprocess
    import sys

    from helpers import ROOT

    checkpoint = os.path.join(runs["text_mdm_cpu"], "checkpoints", "last.pt")
    result = subprocess.run([sys.executable, "tools/fill_mask.py", "--sample", "--checkpoint", checkpoint,
                             "--length", "24", "--steps", "6", "--num", "2", "--order", "confidence"],
                            cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "--- sample 1" in result.stdout and "--- sample 2" in result.stdout, result.stdout
    assert "[MASK]" not in result.stdout


def test_evaluate_gives_masked_accuracy_and_a_perplexity_bound(runs):
    import fill_mask as tool

    checkpoint = os.path.join(runs["text_mdm_cpu"], "checkpoints", "last.pt")
    result = tool.run(["--evaluate", "--checkpoint", checkpoint, "--max-batches", "2", "--n-times", "4"])
    assert 0 <= result["masked_acc"] <= 1 and result["split"] == "test" and result["sequences"] == 64
    assert 1 < result["ppl_bound"] < 260 * 1.5 and math.isfinite(result["bits_per_token"])


def test_linear_probe_of_the_fortune_categories_through_tools_eval(runs):
    import eval as evaluator

    shorter = ["--gin_param", "TextDataset.seq_len=64", "--gin_param", "TextDataset.too_long='truncate'"]  # test speed
    with pytest.warns(UserWarning, match="too long, truncated"):
        result = evaluator.evaluate(["--checkpoint", os.path.join(runs["text_mlm_cpu"], "checkpoints", "last.pt"),
                                     "--protocol", "linear", "--wd", "1e-3", "--epochs", "30", *shorter])
    assert result["n_train"] == 4445 and result["n_test"] == 768  # one row a fortune
    assert result["top1_acc"] > 100 / 40 * 2  # 40 categories


def test_bpe_tokenizer_reloads_from_the_checkpoint_alone(tmp_path):
    import train_tokenizer

    from fill_mask import load_text_model

    path = str(tmp_path / "run" / "tokenizer.json")
    trained = train_tokenizer.train(["--root", TEXT, "--vocab-size", "400", "--out", path, "--limit", "1000"])
    assert trained.vocab_size == 400 and trained.special_ids == (0, 1, 2, 3, 4)
    workdir = str(tmp_path / "run")
    assert run_train(["--gin", "gin/text_mlm_cpu.gin", "--gin", SMOKE, "--workdir", workdir,
                      *fast_params("train.steps=2", f"text_tokenizer.path='{path}'")]) == 0
    os.remove(path)  # the checkpoint alone must rebuild it
    model = load_text_model(os.path.join(workdir, "checkpoints", "last.pt"))
    tok = model.adapter.tokenizer
    text = "Ünïcode cats sat on 3 mats 😀"
    assert tok.kind == "bpe" and tok.vocab_size == 400
    assert tok.encode(text)[0].tolist() == trained.encode(text)[0].tolist() and tok.decode(tok.encode(text)[0]) == text
    ids, hidden = encode_with_masks(tok, "The [MASK] sat")
    assert ids[0] == tok.cls_id and ids[-1] == tok.sep_id and hidden.sum() == 1
    assert len(fill_mask(model, "The [MASK] sat", k=3)) == 3


def test_bpe_words_and_tied_head_mismatch_is_explained():
    tok = train_bpe(["the cat sat on the mat"] * 20, vocab_size=300)
    ids, starts = tok.encode("the cat sat")
    assert starts[0] and int(starts.sum()) == 3  # "the", " cat", " sat"
    adapter = TextAdapter(tokenizer=tok, dim=16, max_len=32)
    with pytest.raises(ValueError, match="MAEDecoder.dim = TextAdapter.dim"):
        MaskedModel(adapter, RandomMasker(), ConstantRatio(0.15), ViTEncoder(dim=16, depth=1, num_heads=2),
                    MAEDecoder(in_dim=16, dim=8, depth=0, remask=False, use_pos=False), target=TokenIdTarget(),
                    mode="replace")
