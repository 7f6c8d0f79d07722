"""Masked generation's core pieces: the masker switch that lets every token be hidden, the
MaskGIT and MAGE ratio schedules, and the iterative-unmasking sampler shared by every discrete
modality (text today, image and audio codes next)."""
from __future__ import annotations

import math

import pytest
import torch

from helpers import tiny_image_model
from unimask.generation import hidden_share, iterative_unmask
from unimask.masking import ConstantRatio, MaskGITCosineRatio, RandomMasker, TruncatedNormalRatio
from unimask.tokens import Tokens


def fixed_logits(batch=3, length=20, vocab=7, seed=0):
    """A predict() that ignores its input: fixed random logits, recording the hidden count it saw."""
    logits = torch.randn(batch, length, vocab, generator=torch.Generator().manual_seed(seed)) * 3
    seen = []

    def predict(ids, hidden):
        seen.append(hidden.sum(1).tolist())
        return logits

    return predict, logits, seen


def start(batch=3, length=20):
    return torch.full((batch, length), -1), torch.ones(batch, length, dtype=torch.bool)


def test_hidden_share_runs_from_one_to_zero_on_both_schedules():
    assert [hidden_share(i, 4, "linear") for i in range(5)] == [1.0, 0.75, 0.5, 0.25, 0.0]
    cosine = [hidden_share(i, 4, "cosine") for i in range(5)]
    assert cosine[0] == 1.0 and abs(cosine[-1]) < 1e-12
    assert cosine[2] == pytest.approx(math.cos(math.pi / 4))  # MaskGIT's mask ratio at half the steps


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_confidence_order_keeps_exactly_the_schedule_count_and_the_most_probable(schedule):
    predict, logits, seen = fixed_logits()
    ids, hidden = start()
    out = iterative_unmask(predict, ids, hidden, steps=5, order="confidence", schedule=schedule, temperature=0)
    expected = [[round(20 * hidden_share(step, 5, schedule))] * 3 for step in range(5)]
    assert seen == expected  # before each step, exactly round(n * share) places were still hidden
    assert torch.equal(out, logits.argmax(-1))  # greedy draws everywhere, and every place decided
    # the first step kept the places whose greedy token is most probable
    predict, logits, seen = fixed_logits()
    one = iterative_unmask(predict, *start(), steps=1, order="confidence", temperature=0)
    assert torch.equal(one, logits.argmax(-1))


def test_confidence_choice_follows_probability_then_gumbel_noise_changes_it():
    predict, logits, _ = fixed_logits(batch=1, length=10)
    first_kept = []

    def recording(ids, hidden):
        first_kept.append(hidden.clone())
        return logits

    iterative_unmask(recording, *start(1, 10), steps=2, order="confidence", temperature=0)
    kept = ~first_kept[1][0]  # decided in step 1: 5 of 10 (linear share 0.5)
    top = logits.softmax(-1).max(-1).values[0]
    assert int(kept.sum()) == 5 and set(torch.topk(top, 5).indices.tolist()) == set(kept.nonzero()[:, 0].tolist())
    predict, _, _ = fixed_logits()
    noisy = [iterative_unmask(predict, *start(3, 20), steps=4, order="confidence", choice_temperature=4.5,
                              generator=torch.Generator().manual_seed(s)) for s in (1, 1, 2)]
    assert torch.equal(noisy[0], noisy[1]) and not torch.equal(noisy[0], noisy[2])  # seeded, and noise matters


def test_random_order_decides_every_place_and_is_seeded():
    predict, _, seen = fixed_logits()
    runs = [iterative_unmask(predict, *start(), steps=6, order="random", generator=torch.Generator().manual_seed(3))
            for _ in range(2)]
    assert torch.equal(runs[0], runs[1]) and bool((runs[0] >= 0).all())
    counts = [sum(step) for step in seen[:6]]
    assert counts[0] == 60 and counts == sorted(counts, reverse=True)


def test_bad_sampler_settings_name_the_setting():
    predict, _, _ = fixed_logits()
    for kwargs, word in (({"order": "best"}, "order"), ({"schedule": "exp"}, "schedule"), ({"steps": 0}, "steps"),
                         ({"choice_temperature": -1.0}, "choice_temperature")):
        with pytest.raises(ValueError, match=word):
            iterative_unmask(predict, *start(), **{"steps": 3, **kwargs})


def tokens_of(batch=4, n=10):
    return Tokens(patches=torch.zeros(batch, n, 1), coords=torch.zeros(batch, n, 1))


def test_maskers_keep_one_visible_unless_generation_allows_every_token_hidden():
    tokens = tokens_of()
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        RandomMasker()(tokens, 1.0)
    assert RandomMasker()(tokens, 0.99).masked.sum(1).tolist() == [9] * 4  # round(9.9) = 10, one kept visible
    allowed = RandomMasker(allow_all_hidden=True)
    assert allowed(tokens, 1.0).masked.sum(1).tolist() == [10] * 4
    assert allowed(tokens, torch.tensor([1.0, 0.5, 0.0, 0.95], dtype=torch.float64)).masked.sum(1).tolist() == [10, 5, 0, 10]
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        allowed(tokens, 1.5)


def test_all_hidden_needs_a_model_that_sees_hidden_tokens():
    with pytest.raises(ValueError, match="allow_all_hidden.*replace"):
        tiny_image_model(mode="drop", masker=RandomMasker(allow_all_hidden=True))
    model = tiny_image_model(mode="replace", masker=RandomMasker(allow_all_hidden=True))
    model.schedule = MaskGITCosineRatio()
    out = model({"image": torch.rand(8, 3, 16, 16)}, generator=torch.Generator().manual_seed(0))
    assert torch.isfinite(out.loss)
    fully = model({"image": torch.rand(2, 3, 16, 16)}, mask=RandomMasker(allow_all_hidden=True)(
        model.adapter.tokenize({"image": torch.rand(2, 3, 16, 16)}), 1.0))
    assert torch.isfinite(fully.loss) and bool(fully.mask.masked.all())


def test_maskgit_and_mage_ratio_schedules_follow_their_distributions():
    g = torch.Generator().manual_seed(0)
    cosine = MaskGITCosineRatio()(0.3, 200_000, g)
    assert cosine.dtype == torch.float64 and float(cosine.min()) > 0 and float(cosine.max()) <= 1.0
    assert float(cosine.mean()) == pytest.approx(2 / math.pi, abs=3e-3)  # E[cos(pi r / 2)], r ~ U(0, 1)
    assert float((cosine > math.cos(math.pi / 4)).double().mean()) == pytest.approx(0.5, abs=3e-3)
    mage = TruncatedNormalRatio()(0.0, 200_000, g)
    assert float(mage.min()) >= 0.5 and float(mage.max()) <= 1.0
    a, b = (0.5 - 0.55) / 0.25, (1.0 - 0.55) / 0.25  # the truncated Gaussian's mean, analytically
    pdf = lambda x: math.exp(-x * x / 2) / math.sqrt(2 * math.pi)  # noqa: E731
    cdf = lambda x: 0.5 * (1 + math.erf(x / math.sqrt(2)))  # noqa: E731
    assert float(mage.mean()) == pytest.approx(0.55 + 0.25 * (pdf(a) - pdf(b)) / (cdf(b) - cdf(a)), abs=2e-3)
    again = TruncatedNormalRatio()(0.0, 5, torch.Generator().manual_seed(7))
    assert torch.equal(again, TruncatedNormalRatio()(0.0, 5, torch.Generator().manual_seed(7)))
    with pytest.raises(ValueError, match="TruncatedNormalRatio.high"):
        TruncatedNormalRatio(high=1.2)
    assert float(ConstantRatio(0.5)(0, 1)[0]) == 0.5
