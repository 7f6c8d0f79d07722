"""Quality of generated pictures, offline: Fréchet distance, precision / recall and CAS in the
feature space of a classifier trained here on the same data (no Inception weights offline).

    # the feature classifier: a ViT trained from scratch on the Fashion-MNIST sample's labels
    python tools/train.py --gin gin/finetune_image.gin --workdir runs/fid_classifier \
        --gin_param "train.init_from=None" --gin_param "Classifier.mixup=0.0" --gin_param "Classifier.cutmix=0.0"
    python tools/fid.py --classifier runs/fid_classifier/checkpoints/last.pt \
        --generator runs/maskgit_cpu/checkpoints/last.pt --n 1000 --steps 4 8 16 --cfg 0 2

Rows: the floor (the real train split against the real test split), random codes through the
generator's tokenizer (the ceiling of nonsense), then each number of decoding steps (and
classifier-free guidance scale). CAS is the
classifier's accuracy on class-conditional samples (its accuracy on the real test split beside it).
The last line is `fd=XX.XX` of the last --steps value.
"""
from __future__ import annotations

import argparse
import sys

import torch

from unimask.cli import add_trust_pickle, tool_main, write_json
from unimask.weights.build import model_from_checkpoint


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--classifier", required=True, help="checkpoint of a Classifier run on the same data")
    parser.add_argument("--generator", required=True, help="checkpoint of a code-generation run (gin/maskgit_cpu.gin)")
    add_trust_pickle(parser)
    parser.add_argument("--n", type=int, default=1000, help="samples per set (real test, real train, generated)")
    parser.add_argument("--steps", type=int, nargs="+", default=[8], help="decoding steps, one row each")
    parser.add_argument("--cfg", type=float, nargs="+", default=[0.0],
                        help="classifier-free guidance scales, one row each per --steps (0 = off)")
    parser.add_argument("--k", type=int, default=3, help="neighbours of the precision / recall balls")
    parser.add_argument("--batch-size", type=int, default=250)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write the rows as JSON here")
    args = parser.parse_args(argv)
    if args.n < args.k + 2:
        parser.error(f"--n={args.n}: at least --k + 2 samples")
    return args


def real_batches(dataset, items, n: int, batch_size: int):
    """The first n of the chosen items (None: all) of a dataset, in batches (one loader worker)."""
    from unimask.probe import make_loader

    items = list(range(len(dataset)) if items is None else items)[:n]
    return make_loader(dataset, items, batch_size, num_workers=1)


def split_into_batches(images: torch.Tensor, labels: torch.Tensor, key: str, batch_size: int):
    for start in range(0, len(images), batch_size):
        yield {key: images[start:start + batch_size], "label": labels[start:start + batch_size]}


def row(name: str, real: torch.Tensor, fake: torch.Tensor, k: int, accuracy=None) -> dict:
    from unimask.evaluation.generation import frechet_distance, precision_recall

    precision, recall = precision_recall(real, fake, k)
    out = {"set": name, "fd": frechet_distance(real, fake), "precision": precision, "recall": recall,
           "cas": accuracy}
    cas = "" if accuracy is None else f", CAS {100 * accuracy:.1f}%"
    print(f"{name:<22} fd {out['fd']:8.2f}, precision {precision:.3f}, recall {recall:.3f}{cas}", flush=True)
    return out


def run(argv=None) -> dict:
    from modalities.codes import CodesAdapter, sample_codes
    from unimask.evaluation.generation import classifier_outputs
    from unimask.evaluation.probe_data import eval_data

    args = parse_args(argv)
    torch.manual_seed(args.seed)
    classifier, _ = model_from_checkpoint(args.classifier, trust_pickle=args.trust_pickle)
    classifier.eval()
    data = eval_data(classifier, torch.device("cpu"), args.seed)
    n = min(args.n, len(data.test_items or data.test), len(data.train_items or data.train))
    test_batches = list(real_batches(data.test, data.test_items, n, args.batch_size))
    test_features, test_pred = classifier_outputs(classifier, test_batches)
    test_labels = torch.cat([classifier.labels_of(b) for b in test_batches])
    accuracy = float((test_pred == test_labels).double().mean())
    print(f"feature classifier {args.classifier}: {100 * accuracy:.1f}% on {n} real test items", flush=True)
    train_features, _ = classifier_outputs(classifier, real_batches(data.train, data.train_items, n, args.batch_size))
    rows = [row("floor (train vs test)", test_features, train_features, args.k)]

    generator, _ = model_from_checkpoint(args.generator, trust_pickle=args.trust_pickle)
    generator.eval()
    adapter = generator.adapter
    if not isinstance(adapter, CodesAdapter):
        raise TypeError(f"{args.generator}: its adapter is {type(adapter).__name__}, not CodesAdapter")
    classes = adapter.num_classes
    labels = torch.arange(n) % classes if classes else torch.zeros(n, dtype=torch.long)
    key = classifier.adapter.batch_key

    def score(name: str, codes: torch.Tensor) -> dict:
        images = torch.cat([adapter.decode(codes[i:i + args.batch_size]) for i in range(0, n, args.batch_size)])
        features, pred = classifier_outputs(classifier, split_into_batches(images, labels, key, args.batch_size))
        cas = float((pred == labels).double().mean()) if classes else None
        return row(name, test_features, features, args.k, cas)

    grid = adapter.code_grid(torch.device("cpu")).num_tokens
    random_codes = torch.randint(adapter.num_codes, (n, grid), generator=torch.Generator().manual_seed(args.seed))
    rows.append(score("random codes", random_codes))
    for steps in args.steps:
        for cfg in args.cfg:
            codes = sample_codes(generator, n, labels if classes else None, steps=steps, seed=args.seed, cfg=cfg)
            rows.append(score(f"MaskGIT, {steps} steps" + (f", cfg {cfg:g}" if cfg else ""), codes))
    print(f"fd={rows[-1]['fd']:.2f}")
    write_json(args.json, {"classifier": args.classifier, "classifier_test_top1": accuracy, "n": n, "rows": rows})
    return {"rows": rows, "classifier_test_top1": accuracy}


main = tool_main(run)

if __name__ == "__main__":
    sys.exit(main())
