#!/usr/bin/env python
"""Use a text checkpoint: fill [MASK]s, sample from a masked-diffusion model, or evaluate.

python tools/fill_mask.py "The [MASK] sat on the mat" --checkpoint runs/x/checkpoints/last.pt [--top-k 5]
    [--mask-length 3]        each [MASK] stands for 3 tokens (a byte model needs several a word)
python tools/fill_mask.py --sample --checkpoint runs/x/checkpoints/last.pt [--length 100] [--steps 100]
    [--order random|confidence] [--temperature 1.0] [--num 3] [--prompt "A dog"] [--seed 0]
python tools/fill_mask.py --evaluate --checkpoint runs/x/checkpoints/last.pt [--split test] [--ratio 0.15]
    held-out masked-token accuracy and the masked-diffusion perplexity bound (modalities/text/evaluate.py);
    the last line printed is `ppl_bound=...`

The model and its tokenizer come from the checkpoint alone (the tokenizer's JSON is kept in
it); --gin / --gin_param add overrides to its config.
"""
from __future__ import annotations

import argparse
import sys

from unimask.cli import add_trust_pickle, tool_main, write_json
from unimask.weights.build import model_from_checkpoint


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("text", nargs="?", default=None, help="text with [MASK] places to fill")
    parser.add_argument("--checkpoint", required=True, help="<run>/checkpoints/last.pt")
    parser.add_argument("--gin", action="append", default=[], help="gin file, applied after the checkpoint's config")
    parser.add_argument("--gin_param", action="append", default=[], help="gin binding (repeatable)")
    add_trust_pickle(parser)
    parser.add_argument("--top-k", type=int, default=5)
    parser.add_argument("--mask-length", type=int, default=1, help="tokens each [MASK] stands for")
    parser.add_argument("--sample", action="store_true", help="generate text by iterative unmasking")
    parser.add_argument("--length", type=int, default=64, help="tokens to generate")
    parser.add_argument("--steps", type=int, default=None, help="unmasking steps (default: --length)")
    parser.add_argument("--order", choices=("random", "confidence"), default="random")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--num", type=int, default=1, help="samples to draw")
    parser.add_argument("--prompt", default="", help="text the samples continue")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--evaluate", action="store_true", help="masked accuracy and perplexity bound")
    parser.add_argument("--split", default="test", help="--evaluate: the split of train.dataset")
    parser.add_argument("--ratio", type=float, default=0.15, help="--evaluate: share hidden for the accuracy")
    parser.add_argument("--n-times", type=int, default=8, help="--evaluate: masking ratios per sequence for the bound")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-batches", type=int, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", default=None, help="also write the result as JSON here")
    args = parser.parse_args(argv)
    if sum([args.text is not None, args.sample, args.evaluate]) != 1:
        parser.error("give a text with [MASK], or --sample, or --evaluate (one of them)")
    return args


def load_text_model(checkpoint: str, files=(), params=(), device: str = "cpu", trust_pickle: bool = False):
    """The model of a text checkpoint, in eval mode; its tokenizer rebuilt from the checkpoint
    even when the tokenizer file it was trained with is gone."""
    from modalities.text import TextAdapter, remember_checkpoint_tokenizers
    from unimask.train.checkpoint import load_checkpoint

    remember_checkpoint_tokenizers(load_checkpoint(checkpoint, trust_pickle=trust_pickle)["model"])
    model, _ = model_from_checkpoint(checkpoint, files, params, trust_pickle=trust_pickle)
    if not isinstance(getattr(model, "adapter", None), TextAdapter):
        adapter = type(getattr(model, "adapter", None)).__name__
        raise TypeError(f"{checkpoint} is not a text model (its adapter is {adapter})")
    return model.to(device).eval()


def eval_dataset(split: str):
    """train.dataset of the checkpoint's config, rebuilt for `split` (its tokenizer is the model's)."""
    import gin

    return gin.query_parameter("train.dataset").scoped_configurable_fn(split=split)


def run(argv=None) -> dict:
    """Everything main() does, returned as a dict (for tests and scripts)."""
    from modalities.text import evaluate_text, fill_mask, sample_text

    args = parse_args(argv)
    model = load_text_model(args.checkpoint, args.gin, args.gin_param, args.device, args.trust_pickle)
    if args.sample:
        texts = sample_text(model, args.length, steps=args.steps, order=args.order, temperature=args.temperature,
                            prompt=args.prompt, num=args.num, seed=args.seed)
        for i, text in enumerate(texts):
            print(f"--- sample {i + 1}\n{args.prompt}{text}")
        result = {"samples": texts}
    elif args.evaluate:
        result = evaluate_text(model, eval_dataset(args.split), ratio=args.ratio, n_times=args.n_times,
                               batch_size=args.batch_size, max_batches=args.max_batches, seed=args.seed)
        result["split"] = args.split
        print(", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}" for k, v in result.items()
                        if k != "ppl_bound"))
        print(f"ppl_bound={result['ppl_bound']:.4f}")
    else:
        fills = fill_mask(model, args.text, k=args.top_k, mask_length=args.mask_length)
        from modalities.text.fill import describe_fills

        print(describe_fills(fills))
        result = {"fills": [{"text": f.text, "fill": f.fill, "logprob": f.logprob} for f in fills]}
    write_json(args.json, result)  # nothing without --json
    return result


main = tool_main(run)


if __name__ == "__main__":
    sys.exit(main())
