"""Trainer: one loop for every modality, bound in gin as `train.*`.

`train.batch_size` is the global batch per optimizer step (all processes, all accumulation
steps); lr = base_lr * batch_size / 256 as in MAE. Every step re-seeds torch from
(seed, step, rank) and draws its mask from a generator seeded the same way, and the data
sampler is indexed by global sample position, so resume is bit-identical.
"""
from __future__ import annotations

import contextlib
import math
import os
import signal
import time
from typing import Optional

import gin
import torch
from tqdm import tqdm

from unimask.data import SampleDataset, StepBatchSampler, to_device
from unimask.ema import ema_update
from unimask.train import checkpoint as ckpt
from unimask.train import sharded
from unimask.train.distributed import all_or_none, all_reduce_mean, any_rank, barrier, failed_ranks, init_distributed
from unimask.train.logging import MetricsLog, check_loggers, write_run_info
from unimask.optim import Stages, make_optimizer, set_schedules
from unimask.train.precision import autocast, resolve_device, resolve_precision
from unimask.train.scoring import score_split
from unimask.train.workdir import (RunLock, WorkdirError, check_data, check_fresh_start, config_changes, data_identity,
                                   has_checkpoints, keep_original_config)
from unimask.train.workers import close_loader, ignore_stop_signals


def step_seed(seed: int, step: int, micro: int = 0) -> int:
    """Seed of global micro-batch `micro` of optimizer step `step`."""
    return (seed * 1_000_003 + step * 8_191 + micro * 131) % (2**62)


class NonFiniteLossError(RuntimeError):
    pass


@gin.configurable("train")
class Trainer:
    def __init__(self, model=gin.REQUIRED, dataset=gin.REQUIRED, steps: int = 1000, batch_size: int = 64,
                 base_lr: float = 1.5e-4, lr: Optional[float] = None, min_lr: float = 0.0,
                 warmup_steps: int = 0, weight_decay: float = 0.05, final_weight_decay: Optional[float] = None,
                 betas=(0.9, 0.95), optimizer: str = "adamw",
                 clip_grad: Optional[float] = None, accum_steps: int = 1, seed: int = 0,
                 precision: str = "auto", device: str = "auto", num_workers: int = 2, pin_memory: bool = True,
                 persistent_workers: bool = True, prefetch_factor: int = 2, log_every: int = 50,
                 eval_every: int = 500, ckpt_every: int = 1000, keep_every: Optional[int] = None,
                 stop_at: Optional[int] = None, max_consecutive_skips: int = 20, compile: bool = False,
                 ema_decay: Optional[float] = None, fsdp: bool = False, progress_bar: bool = True,
                 init_from: Optional[str] = None, init_strict: bool = True, init_trust_pickle: bool = False,
                 allow_data_change: bool = False, eval_dataset=None,
                 eval_batch_size: Optional[int] = None, activation_checkpointing: bool = False,
                 collective_timeout_s: float = 300, stages: int = 1, loggers=("tensorboard",)):
        """optimizer: 'adamw' (betas), or 'lars' (MAE's linear probe: timm's Lars, momentum 0.9).
        init_from: weights to start from (unimask, timm, MAE, VideoMAE or Hugging Face files;
        unimask/weights), init_strict=False loads the keys that fit; a resumed run ignores it.
        init_trust_pickle=True lets init_from fully unpickle a file the weights-only reader
        refuses (it can run code: only for files you trust).
        allow_data_change: resume even though the dataset's size or file list changed since the
        checkpoint (the saved data position is then kept as a position in the new list).
        eval_dataset: a labeled split (the test split) scored by model.score_batch at every eval
        step (fine-tuning reports top-1), in batches of eval_batch_size (default batch_size).
        activation_checkpointing: every transformer block recomputes its activations in the
        backward pass instead of keeping them (less memory, about one more forward of compute).
        collective_timeout_s: under torchrun, how long any collective may wait for the other ranks
        before the job fails (torch's default is 10-30 minutes): a lost or stuck rank ends the job.
        final_weight_decay: the weight decay of the decaying groups follows a half cosine from
        weight_decay to this value over the run (I-JEPA: 0.04 -> 0.4); None keeps it fixed.
        stages: dBOT's multi-stage distillation: the run splits into equal stages; at each new one
        model.begin_stage (its teacher takes the student's weights, the student is re-initialized),
        the optimizer's state is cleared and the learning-rate schedule (warmup too) restarts.
        loggers: where metrics go besides metrics.jsonl: 'tensorboard', 'wandb', 'mlflow' (trackers.py)."""
        if final_weight_decay is not None and not (weight_decay > 0 and final_weight_decay >= 0):
            raise ValueError(f"train.final_weight_decay={final_weight_decay} needs train.weight_decay > 0 (the start "
                             f"of the curve; got {weight_decay}) and a final value >= 0")
        self.device = resolve_device(device)
        self.dist = init_distributed(self.device, collective_timeout_s)
        if self.dist.world > 1 and self.device.type == "cuda":
            self.device = torch.device("cuda", self.dist.local_rank)
            torch.cuda.set_device(self.device)
        self.precision = resolve_precision(precision, self.device)
        micro_total = self.dist.world * accum_steps
        self.declared = SampleDataset.declared(dataset)
        samples_per_item = self.declared.samples_per_item
        if batch_size % (micro_total * samples_per_item):
            raise ValueError(f"train.batch_size={batch_size} must be divisible by world size x train.accum_steps x "
                             f"samples per dataset item = {self.dist.world} x {accum_steps} x {samples_per_item}")
        self.micro_batch = batch_size // micro_total // samples_per_item  # dataset items per micro-step
        self.model, self.dataset = model.to(self.device), dataset
        if init_from:
            from unimask.weights import load_pretrained

            load_pretrained(self.model, init_from, strict=init_strict, verbose=self.dist.is_main,
                            trust_pickle=init_trust_pickle)
        self.eval_dataset, self.eval_batch_size = eval_dataset, eval_batch_size or batch_size
        self.steps, self.batch_size, self.accum_steps, self.seed = steps, batch_size, accum_steps, seed
        self.stop_at = steps if stop_at is None else min(stop_at, steps)
        self.peak_lr = lr if lr is not None else base_lr * batch_size / 256
        self.min_lr, self.warmup_steps, self.clip_grad = min_lr, warmup_steps, clip_grad
        self.stages = Stages(stages, steps, self.model.restarts_stages)
        self.log_every, self.eval_every, self.ckpt_every, self.keep_every = log_every, eval_every, ckpt_every, keep_every
        self.max_consecutive_skips, self.progress_bar = max_consecutive_skips, progress_bar
        self.allow_data_change, self.loggers = allow_data_change, check_loggers(loggers)  # a missing package: now
        self.loader_kwargs = dict(num_workers=num_workers, pin_memory=pin_memory and self.device.type == "cuda",
                                  persistent_workers=persistent_workers and num_workers > 0,
                                  prefetch_factor=prefetch_factor if num_workers > 0 else None,
                                  collate_fn=self.declared.collate)
        self.fsdp = fsdp and self.dist.world > 1
        if activation_checkpointing:
            from unimask.transformer import set_activation_checkpointing

            set_activation_checkpointing(self.model, True)
        self.train_model = self._wrap(self.model, compile, fsdp)  # before the optimizer: FSDP swaps params
        self.optimizer = make_optimizer(self.model, self.peak_lr, weight_decay, betas, self.device, optimizer)
        self.weight_decays = (weight_decay, final_weight_decay)
        self.decaying = [group["weight_decay"] > 0 for group in self.optimizer.param_groups]
        self.scaler = torch.amp.GradScaler("cuda") if self.precision == "fp16" else None
        self.ema = {k: v.detach().clone() for k, v in self.model.state_dict().items()} if ema_decay else None
        self.ema_decay = ema_decay
        self.step, self.skipped, self.n_bad, self.position = 0, 0, 0, 0
        self.consecutive_skips = 0
        self._stop_signal = None
        self._wrote_last = False  # this process wrote the current last.pt (so it need not be re-read)
        self._micro_hook = None  # progress inside long accumulations (big recipes on one CPU)
        self._fixed = None  # the fixed evaluation batch and mask, made on first use
        self._data_identity = None  # the data set's size and fingerprint, computed on first use

    # ---- setup ---------------------------------------------------------------------------
    def _wrap(self, model, compile: bool, fsdp: bool):
        if compile:  # the transformer stacks; adapters and maskers run eagerly
            from unimask.train.compile import compile_stacks

            compile_stacks(model)
        if self.dist.world > 1:
            if fsdp:
                from torch.distributed.fsdp import fully_shard

                from timm.models.vision_transformer import Block

                for module in model.modules():  # every transformer block its own unit (teachers' too)
                    if isinstance(module, Block):
                        fully_shard(module)
                return fully_shard(model)
            return torch.nn.parallel.DistributedDataParallel(
                model, device_ids=[self.device.index] if self.device.type == "cuda" else None,
                find_unused_parameters=True)
        return model

    def make_loader(self, start: int):
        sampler = StepBatchSampler(len(self.dataset), self.micro_batch, self.seed, start, self.dist.rank, self.dist.world,
                                   self.accum_steps)
        kwargs = {k: v for k, v in self.loader_kwargs.items() if v is not None}  # unset = DataLoader default
        if kwargs.get("num_workers", 0) > 0:
            kwargs["worker_init_fn"] = ignore_stop_signals
        return torch.utils.data.DataLoader(self.dataset, batch_sampler=sampler, **kwargs)

    # ---- checkpoints -----------------------------------------------------------------------
    def tensor_state(self) -> dict:
        """Model, optimizer (keyed by parameter name, so any world size can read it) and EMA
        state: plain tensors, or this rank's DTensor shards in an FSDP run."""
        from torch.distributed.checkpoint.state_dict import get_state_dict

        model_state, optimizer_state = get_state_dict(self.model, self.optimizer)
        return {"model": model_state, "optimizer": optimizer_state, **({"ema": self.ema} if self.ema else {})}

    def meta_state(self) -> dict:
        """Everything else a resume needs: step, schedules, RNG, data position, counters, config."""
        return {"step": self.step,
                "schedules": {"lr": {"peak": self.peak_lr, "warmup": self.warmup_steps, "min_lr": self.min_lr,
                                     "total": self.steps},
                              "mask": self.model.schedule.state_dict() if self.model.schedule is not None else {}},
                "scaler": self.scaler.state_dict() if self.scaler else None, "rng": ckpt.rng_state(),
                "data": {"position": self.position, "seed": self.seed, **self.data_identity},
                "classes": self.declared.classes, "skipped": self.skipped,
                "n_bad": self.n_bad, "world_size": self.dist.world, "config": gin.config_str()}

    def state(self) -> dict:
        return {**self.tensor_state(), **self.meta_state()}

    def restore(self, state: dict, path: str):
        """Load a checkpoint of any kind into this run: a sharded one into an FSDP run shard by
        shard (DCP re-shards from the saving world size), anything else as full state dicts."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions, set_optimizer_state_dict, set_state_dict

        if "model" not in state:  # meta only: a sharded checkpoint for this sharded run
            tensors = self.tensor_state()
            sharded.load_sharded_into(tensors, path)
            set_state_dict(self.model, self.optimizer, model_state_dict=tensors["model"],
                           optim_state_dict=tensors["optimizer"])
            self.ema = tensors.get("ema", self.ema)
        elif self.fsdp:
            set_state_dict(self.model, self.optimizer, model_state_dict=ckpt.clean_state_dict(state["model"]),
                           optim_state_dict=state["optimizer"],
                           options=StateDictOptions(full_state_dict=True, broadcast_from_rank0=False))
        else:
            ckpt.load_model_state(self.model, state["model"])
            if ckpt.is_id_keyed(state["optimizer"]):  # written by torch's optimizer.state_dict()
                self.optimizer.load_state_dict(state["optimizer"])
            else:
                set_optimizer_state_dict(self.model, self.optimizer, state["optimizer"])
        if self.scaler and state.get("scaler"):
            self.scaler.load_state_dict(state["scaler"])
        ckpt.set_rng_state(state["rng"])
        self.step, self.skipped, self.n_bad = state["step"], state.get("skipped", 0), state.get("n_bad", 0)
        self.position = state["data"]["position"]
        if self.ema is not None and state.get("ema") and "model" in state:
            self._load_ema(state["ema"])

    def _load_ema(self, full: dict):
        """Full EMA tensors -> this run's EMA (its own shards in an FSDP run)."""
        for key, value in self.ema.items():
            source = full[key].to(value.dtype)
            if hasattr(value, "device_mesh"):  # torch: a DTensor shard: cut the full tensor the same way
                from torch.distributed.tensor import distribute_tensor

                source = distribute_tensor(source.to(value.device), value.device_mesh, value.placements)
            self.ema[key] = source.to(value.device) if not hasattr(value, "device_mesh") else source  # torch

    def save(self, workdir: str):
        """Every rank calls this. A save that fails on any rank raises on every rank (rank 0's own
        error there, RankFailedError elsewhere), so the job ends non-zero instead of leaving the
        other ranks waiting in the next collective."""
        folder = os.path.join(workdir, "checkpoints")
        keep = bool(self.keep_every) and self.step % self.keep_every == 0
        if self.fsdp:  # every rank writes its shards; nothing is gathered
            ckpt.save_sharded_checkpoint(self.tensor_state(), self.meta_state(), folder, self.step, keep,
                                         self._wrote_last, self.dist.is_main)
        else:
            state = self.state()
            with all_or_none(f"saving the checkpoint in {folder} (rank 0 writes it)"):  # also the barrier
                if self.dist.is_main:
                    ckpt.save_checkpoint(state, folder, self.step, keep, self._wrote_last)
        self._wrote_last = True

    # ---- one optimizer step ---------------------------------------------------------------
    def train_step(self, batches: list) -> dict:
        """batches: accum_steps micro-batches -> metrics; skips (and counts) non-finite steps.
        metrics['stop']: some rank got SIGTERM/SIGINT, agreed by all ranks in this step."""
        progress = self.step / self.steps
        if self.stages.starts_at(self.step):  # dBOT: the teacher takes the student, which starts afresh
            self.model.begin_stage(self.stages.index(self.step))
            self.optimizer.state.clear()
        lr, scheduled = set_schedules(self.optimizer, self.step, self.steps, self.peak_lr, self.warmup_steps,
                                      self.min_lr, self.weight_decays, self.decaying, self.stages)
        self.train_model.train()
        total_loss, ratios, finite, terms = 0.0, [], True, {}
        for micro, batch in enumerate(batches):
            # seeds follow the global micro-batch index, so N processes match 1 process x N accumulation
            seed = step_seed(self.seed, self.step, self.dist.rank * self.accum_steps + micro)
            torch.manual_seed(seed)  # dropout, drop-path, BERT-style random replacement
            generator = torch.Generator().manual_seed(seed + 1)  # the mask
            sync = micro == len(batches) - 1 or not hasattr(self.train_model, "no_sync")  # torch: DDP has it
            with (contextlib.nullcontext() if sync else self.train_model.no_sync()):
                with autocast(self.precision, self.device):
                    out = self.train_model(batch, progress=progress, generator=generator)
                loss = out.loss / len(batches)
                finite &= bool(torch.isfinite(loss.detach()))
                (self.scaler.scale(loss) if self.scaler else loss).backward()
            total_loss += loss.detach().float()
            for name, value in out.terms.items():  # every named term: aux, masker, per modality
                terms[f"loss_{name}"] = terms.get(f"loss_{name}", 0.0) + value.detach().float() / len(batches)
            for name, value in out.stats.items():  # other numbers a model reports (codebook usage)
                terms[name] = terms.get(name, 0.0) + torch.as_tensor(value).detach().float() / len(batches)
            ratios.append(float(out.mask.ratio.float().mean()) if out.mask is not None else 0.0)
            if self._micro_hook is not None:
                self._micro_hook(micro + 1, len(batches))
        total_loss = float(all_reduce_mean(total_loss, self.dist))
        terms = {name: float(all_reduce_mean(value, self.dist)) for name, value in terms.items()}
        if self.scaler:
            self.scaler.unscale_(self.optimizer)
        params = [p for p in self.model.parameters() if p.grad is not None]
        grad_norm = torch.nn.utils.clip_grad_norm_(params, self.clip_grad if self.clip_grad else float("inf"))
        # one all-reduce agrees on both per-step decisions that change what comes next: skip the
        # update when any rank is non-finite, stop (save, exit) when any rank got SIGTERM/SIGINT.
        # Decided per rank, a stop would send one rank into the checkpoint's collectives while
        # another waits in the next step's gradient all-reduce: a hang until the timeout
        nonfinite, stop = any_rank([not (finite and bool(torch.isfinite(grad_norm))), self._stop_signal is not None],
                                   self.dist, self.device)
        finite = not nonfinite
        if finite:
            if self.scaler:
                self.scaler.step(self.optimizer)
                self.scaler.update()
            else:
                self.optimizer.step()
            self.model.after_step(progress)
            self._update_ema()
            self.consecutive_skips = 0
        else:
            self.skipped += 1
            self.consecutive_skips += 1
            if self.consecutive_skips >= self.max_consecutive_skips:
                raise NonFiniteLossError(f"{self.consecutive_skips} consecutive steps had a non-finite loss or "
                                         f"gradient (last at step {self.step}); stopping (train.max_consecutive_skips)")
        self.optimizer.zero_grad(set_to_none=True)
        self.step += 1
        self.position += self.batch_size // self.declared.samples_per_item
        return {"loss": total_loss if finite else float("nan"), "terms": terms if finite else {}, "lr": lr,
                "mask_ratio": sum(ratios) / len(ratios),
                "grad_norm": float(grad_norm) if finite else float("nan"), "stop": stop, **scheduled}

    def _update_ema(self):
        if self.ema is not None:
            ema_update(self.ema, self.model.state_dict(), self.ema_decay)

    # ---- fixed-batch evaluation -----------------------------------------------------------
    def fixed_batch(self):
        """One batch and one mask that stay the same for the whole run (and across runs)."""
        if self._fixed is None:
            sampler = StepBatchSampler(len(self.dataset), max(1, self.micro_batch), seed=12345, shuffle=False)
            items = next(iter(sampler))
            collate = self.loader_kwargs["collate_fn"] or torch.utils.data.default_collate
            batch = to_device(collate([self.dataset[item] for item in items]), self.device)
            with torch.no_grad():  # a learned masker must not keep this graph alive all run
                # through forward, so that FSDP gathers a learned masker's weights
                mask = self.model(batch, generator=torch.Generator().manual_seed(12345), mask_only=True).mask
            self._fixed = (batch, mask)
        return self._fixed

    @torch.no_grad()
    def evaluate(self, workdir: Optional[str]) -> dict:
        """{'eval_loss': loss on the fixed batch and mask (+ 'eval_loss_<term>' per modality)},
        and the reconstruction figure."""
        batch, mask = self.fixed_batch()
        self.model.eval()
        with autocast(self.precision, self.device):
            out = self.model(batch, progress=self.step / self.steps, mask=mask,
                             generator=torch.Generator().manual_seed(12345))
        if workdir and self.dist.is_main:
            path = os.path.join(workdir, "recon", f"step_{self.step}.png")
            try:  # no figure where the adapter cannot draw or the target is not the input
                self.log.image("recon", self.model.render(batch, out, path), self.step)
            except NotImplementedError:
                pass
        self.model.train()
        recon_loss = out.loss - out.extras.get("aux_loss", 0.0)  # comparable across maskers
        row = {"eval_loss": float(all_reduce_mean(recon_loss.detach().float(), self.dist))}
        for name, value in out.terms.items():
            row[f"eval_loss_{name}"] = float(all_reduce_mean(value.detach().float(), self.dist))
        if self.eval_dataset is not None:  # fine-tuning: top-1 on the labeled split
            row.update(score_split(self.model, self.eval_dataset, self.eval_batch_size, self.device, self.dist,
                                   self.precision, self.loader_kwargs["num_workers"],
                                   SampleDataset.declared(self.eval_dataset).collate))
        return row

    # ---- the loop --------------------------------------------------------------------------
    def _on_signal(self, signum, frame):
        """Only note the signal: the stop itself is agreed with the other ranks in the next
        train_step (a rank that acted alone would hang the job in mismatched collectives)."""
        self._stop_signal = signum

    def fit(self, workdir: str, resume=False, overwrite: bool = False) -> dict:
        """Train to train.steps (or stop_at). resume: True = from the workdir's checkpoint (an
        error without one), 'auto' = from it when there is one, False = from scratch. A run from
        scratch into a workdir holding checkpoints is refused unless overwrite (which deletes
        them); the workdir is locked for the run (unimask/train/workdir.py)."""
        os.makedirs(workdir, exist_ok=True)
        lock = self._claim(workdir, resume, overwrite)
        try:
            return self._fit(workdir, resume)
        finally:
            if lock is not None:
                lock.release()

    def _claim(self, workdir: str, resume, overwrite: bool):
        """Rank 0 locks the workdir and checks that a fresh run overwrites nothing, before anything
        is written; every rank learns whether that worked, so none trains alone."""
        lock, error = None, None
        if self.dist.is_main:
            try:
                lock = RunLock(workdir)
                if not (resume and has_checkpoints(workdir)):
                    check_fresh_start(workdir, overwrite)
            except WorkdirError as err:
                error = err
                if lock is not None:
                    lock.release()
        if failed_ranks(error is not None) and error is None:  # one all-reduce under torchrun
            raise WorkdirError(f"rank 0 could not claim {workdir} (its error says why)")
        if error is not None:
            raise error
        return lock

    def _fit(self, workdir: str, resume) -> dict:
        folder = os.path.join(workdir, "checkpoints")
        config = gin.config_str()
        if resume and has_checkpoints(workdir):
            state, path = ckpt.find_latest(folder, meta_only=self.fsdp)
            changes = config_changes(state.get("config", ""), config)
            if changes and self.dist.is_main:  # before restoring: an architecture change fails there
                print(f"warning: resuming with settings that differ from {path}'s:\n  " + "\n  ".join(changes),
                      flush=True)
            check_data(state.get("data", {}), self.data_identity, path, self.allow_data_change)
            try:
                self.restore(state, path)
            except RuntimeError as err:  # torch's load_state_dict: shapes that do not fit
                raise ckpt.CheckpointError(f"{path} does not fit this model (see the settings that differ above): "
                                           f"{str(err).splitlines()[0][:300]}") from err
            if self.dist.is_main:
                print(f"resumed from {path} at step {self.step}", flush=True)
        elif resume is True:
            raise FileNotFoundError(f"--resume: no checkpoint in {folder}")
        self.preflight()
        self.log = MetricsLog(workdir, self.dist.is_main, self.step, self.loggers, config)  # step 0: stale rows go
        if self.dist.is_main:
            keep_original_config(workdir, config, self.step)
            write_run_info(workdir, world_size=self.dist.world, device=str(self.device), precision=self.precision,
                           micro_batch=self.micro_batch, accum_steps=self.accum_steps, resumed_at=self.step,
                           classes=self.declared.classes)
        old_handlers = {s: signal.signal(s, self._on_signal) for s in (signal.SIGTERM, signal.SIGINT)}
        ok = False
        try:
            result = self._loop(workdir)
            ok = True
            return result
        finally:
            for s, handler in old_handlers.items():
                signal.signal(s, handler)
            self.log.close(ok, complete=ok and self.step >= self.steps)
            # a clean teardown only when every rank got here: after a failure the other ranks may sit in
            # a collective that this rank will never join, so this one just exits (non-zero) and the
            # launcher stops the rest
            if ok and self.dist.world > 1 and torch.distributed.is_initialized():
                barrier(self.dist)
                torch.distributed.destroy_process_group()

    @property
    def data_identity(self) -> dict:
        """The data set's size and sample-list fingerprint, saved in every checkpoint (computed once)."""
        if self._data_identity is None:
            self._data_identity = data_identity(self.dataset)
        return self._data_identity

    def preflight(self):
        """One micro-batch through the adapter and the masker in this process, before any worker
        starts: a sample, a shape or a setting that does not fit fails here, in seconds, with the
        dataset's own message. The batch is the fixed evaluation batch, so nothing is wasted."""
        self.fixed_batch()

    def _loop(self, workdir: str) -> dict:
        loader = iter(self.make_loader(self.position))
        try:
            return self._steps(loader, workdir)
        finally:
            close_loader(loader)  # workers ignore SIGTERM: stop them here, on success and on failure

    def _steps(self, loader, workdir: str) -> dict:
        bar = tqdm(total=self.stop_at, initial=self.step, disable=not (self.progress_bar and self.dist.is_main),
                   dynamic_ncols=True, mininterval=1.0, desc="train")
        window, term_window, t0, last = [], {}, time.perf_counter(), {}
        if self.accum_steps >= 8 and bar.disable is False:
            self._micro_hook = lambda done, total: bar.set_postfix_str(f"step {self.step + 1}: micro-batch {done}/{total}")
        while self.step < self.stop_at:
            batches = []
            for _ in range(self.accum_steps):
                batch = next(loader)
                self.n_bad += int(batch.pop("n_bad").sum()) if isinstance(batch, dict) and "n_bad" in batch else 0
                batches.append(to_device(batch, self.device, non_blocking=True))
            metrics = self.train_step(batches)
            if math.isfinite(metrics["loss"]):
                window.append(metrics["loss"])
                for name, value in metrics["terms"].items():
                    term_window.setdefault(name, []).append(value)
            bar.update(1)
            bar.set_postfix(loss=f"{metrics['loss']:.4f}", lr=f"{metrics['lr']:.2e}", ratio=f"{metrics['mask_ratio']:.2f}",
                            refresh=False)
            final = self.step == self.stop_at
            if self.step % self.log_every == 0 or final:
                elapsed = time.perf_counter() - t0
                row = {"step": self.step, "loss": sum(window) / len(window) if window else float("nan"),
                       **{name: sum(values) / len(values) for name, values in term_window.items()},
                       "lr": metrics["lr"], **{k: metrics[k] for k in ("weight_decay",) if k in metrics},
                       "mask_ratio": metrics["mask_ratio"], "grad_norm": metrics["grad_norm"],
                       "samples_per_s": len(window or [0]) * self.batch_size / max(elapsed, 1e-9),
                       "skipped": self.skipped, "bad_samples": self.n_bad}
                if self.step % self.eval_every == 0 or final:
                    row.update(self.evaluate(workdir))
                self.log.write(row)
                bar.set_postfix(loss=f"{row['loss']:.4f}", lr=f"{row['lr']:.2e}", ratio=f"{row['mask_ratio']:.2f}",
                                sps=f"{row['samples_per_s']:.1f}")
                last, window, term_window, t0 = row, [], {}, time.perf_counter()
            # under torchrun only the agreed stop (train_step's all-reduce) is safe: every rank saves
            # this same step; one process may also take a signal that came during eval
            stop = metrics.get("stop", False) or (self.dist.world == 1 and self._stop_signal is not None)
            if final or self.step % self.ckpt_every == 0 or stop:
                self.save(workdir)
            if stop:
                where = f"signal {self._stop_signal}" if self._stop_signal is not None else "a signal on another rank"
                bar.write(f"{where}: checkpoint saved at step {self.step}, exiting")
                break
        bar.close()
        return last
