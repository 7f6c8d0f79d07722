"""How one training step walks the code: the project modules it visits, in order, and how often
it comes back to one it had left (docs/architecture.md, "One image-MAE step").

`python tools/bench.py trace [--gin gin/image_mae_cpu.gin]` builds the recipe under
gin/smoke.gin, runs one step untraced (lazy state: the optimizer's buffers), then traces the
next `Trainer.train_step` (forward, backward, optimizer step, after_step; the data loader is
outside it) with sys.setprofile. Only Python frames of unimask/ and modalities/ count; torch,
timm and gin frames in between are skipped, so a call from the model through torch back into
the model is not a visit. The sequence is the module of the innermost project frame after
every call and return, repeats collapsed; a re-entry is a step of it into a module seen before
(a return to the caller counts); a call-back is a call into a module the walk has already
left (the core asking the adapter again, a base class calling its subclass's hook).
"""
from __future__ import annotations

import collections
import os
import sys

TRACED_TOPS = ("unimask", "modalities")


def project_module(filename: str, root: str):
    """'unimask/models/masked.py' for a file of the project, else None."""
    rel = os.path.relpath(filename, root)
    return rel if rel.split(os.sep)[0] in TRACED_TOPS and rel.endswith(".py") else None


def module_walk(run, root: str) -> tuple:
    """Trace run() -> (the module sequence, the calls from unimask/ into modalities/ as
    'caller -> callee:function' strings, and the call-backs as 'callee:function', in order)."""
    stack, sequence, adapter_calls, callbacks = [], [], [], []

    def profile(frame, event, arg):
        if event not in ("call", "return"):
            return
        module = project_module(frame.f_code.co_filename, root)
        if module is None:
            return
        if event == "call":
            if stack and stack[-1].startswith("unimask") and module.startswith("modalities"):
                adapter_calls.append(f"{stack[-1]} -> {module}:{frame.f_code.co_name}")
            if stack and stack[-1] != module and module in sequence:
                callbacks.append(f"{module}:{frame.f_code.co_name}")
            stack.append(module)
        elif stack:
            stack.pop()
        current = stack[-1] if stack else None
        if current is not None and (not sequence or sequence[-1] != current):
            sequence.append(current)

    sys.setprofile(profile)
    try:
        run()
    finally:
        sys.setprofile(None)
    return sequence, adapter_calls, callbacks


def walk_summary(sequence: list, adapter_calls: list, callbacks: list) -> dict:
    """Counts of a module sequence: modules visited, re-entries, entries per module."""
    seen, reentries = set(), 0
    for module in sequence:
        reentries += module in seen
        seen.add(module)
    return {"modules": len(seen), "reentries": reentries, "callbacks": len(callbacks),
            "entries": collections.Counter(sequence).most_common(),
            "adapter_calls": collections.Counter(adapter_calls).most_common()}


def trace_step(args) -> dict:
    """Build the recipe's trainer, step once, trace the second step; print and return the counts."""
    import torch

    from unimask.cli import REPO_ROOT, parse_gin, seed_for_init
    from unimask.data import to_device
    from unimask.train.trainer import Trainer

    torch.set_num_threads(1)
    parse_gin([args.gin, os.path.join(REPO_ROOT, "gin", "smoke.gin")],
              ["train.num_workers=0", "train.precision='fp32'", "train.progress_bar=False", *args.gin_param])
    seed_for_init()
    trainer = Trainer()
    loader = iter(trainer.make_loader(0))
    batches = [[to_device(next(loader), trainer.device)] for _ in range(2)]
    trainer.train_step(batches[0])
    sequence, adapter_calls, callbacks = module_walk(lambda: trainer.train_step(batches[1]), REPO_ROOT)
    summary = walk_summary(sequence, adapter_calls, callbacks)
    print(f"one step of {args.gin}: {summary['modules']} project modules, {summary['reentries']} re-entries "
          f"into a module already left (returns included), {summary['callbacks']} calls into a module already left, "
          f"{len(adapter_calls)} calls from unimask/ into modalities/")
    for module, count in summary["entries"]:
        print(f"  {count:3d}  {module}")
    print("calls from the core into the adapter:")
    for call, count in summary["adapter_calls"]:
        print(f"  {count:3d}  {call}")
    if args.sequence:
        print(" -> ".join(sequence))
    return summary
