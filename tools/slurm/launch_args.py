#!/usr/bin/env python
"""SLURM's environment -> torchrun's arguments, for one torchrun per node (tools/slurm/train.sbatch).

    torchrun $(python tools/slurm/launch_args.py) tools/train.py --gin ... --resume auto

prints `--nnodes N --nproc-per-node G --rdzv-backend c10d --rdzv-endpoint HEAD:PORT --rdzv-id JOB`:
N from SLURM_NNODES (or the node list's length), G the GPUs on this node (SLURM_GPUS_ON_NODE,
else SLURM_GPUS_PER_NODE, else 1 process for a CPU node; --nproc-per-node overrides), HEAD the
first host of SLURM_JOB_NODELIST (expanded here in pure Python, as `scontrol show hostnames`
would: `node[01-03,07]` -> node01 node02 node03 node07), PORT 20000 + job id mod 20000 (two jobs
sharing a head node do not collide; MASTER_PORT overrides), JOB the job id (a requeued job keeps
it). The c10d rendezvous hands out the ranks, so the node's own SLURM_NODEID is not needed.
A missing or malformed variable is an error naming it (exit 2), never a torchrun that waits.
"""
from __future__ import annotations

import argparse
import os
import re
import shlex
import sys
from typing import List, Mapping, Optional


class SlurmEnvError(ValueError):
    """A SLURM variable is missing or does not parse; the message names it."""


def split_top(text: str) -> List[str]:
    """'a[1-2],b,c[3,5]' -> ['a[1-2]', 'b', 'c[3,5]']: commas outside brackets only."""
    parts, depth, start = [], 0, 0
    for i, char in enumerate(text):
        depth += {"[": 1, "]": -1}.get(char, 0)
        if depth < 0 or depth > 1:
            raise SlurmEnvError(f"SLURM_JOB_NODELIST={text!r}: unbalanced or nested brackets")
        if char == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    if depth:
        raise SlurmEnvError(f"SLURM_JOB_NODELIST={text!r}: unbalanced brackets")
    return parts + [text[start:]]


def expand_nodelist(nodelist: str) -> List[str]:
    """SLURM's compressed host list -> host names in order, zero padding kept; several bracket
    groups in one name expand as a product (`r[1-2]n[1-2]` -> r1n1 r1n2 r2n1 r2n2)."""
    hosts = []
    for item in split_top(nodelist.strip()):
        found = re.match(r"^([^\[]*)\[([^\]]*)\](.*)$", item)
        if not found:
            if not item:
                raise SlurmEnvError(f"SLURM_JOB_NODELIST={nodelist!r}: an empty host name")
            hosts.append(item)
            continue
        prefix, ranges, rest = found.groups()
        tails = expand_nodelist(rest) if rest else [""]
        for part in ranges.split(","):
            bounds = re.fullmatch(r"(\d+)(?:-(\d+))?", part)
            if not bounds:
                raise SlurmEnvError(f"SLURM_JOB_NODELIST={nodelist!r}: {part!r} is not a number or a range")
            low, high = bounds.group(1), bounds.group(2) or bounds.group(1)
            if int(high) < int(low):
                raise SlurmEnvError(f"SLURM_JOB_NODELIST={nodelist!r}: the range {part!r} runs backwards")
            hosts += [f"{prefix}{n:0{len(low)}d}{tail}" for n in range(int(low), int(high) + 1) for tail in tails]
    return hosts


def count(env: Mapping[str, str], name: str) -> Optional[int]:
    """An integer variable ('4', 'a100:4', '4(x2)' -> 4), None when unset."""
    value = env.get(name)
    if value is None or value == "":
        return None
    found = re.fullmatch(r"(?:[\w-]+:)?(\d+)(?:\(x\d+\))?", value.strip())
    if not found or int(found.group(1)) < 1:
        raise SlurmEnvError(f"{name}={value!r} is not a positive count")
    return int(found.group(1))


def torchrun_args(env: Mapping[str, str], nproc_per_node: Optional[int] = None) -> List[str]:
    """SLURM variables (a mapping like os.environ) -> torchrun's arguments for this node."""
    nodelist = env.get("SLURM_JOB_NODELIST") or env.get("SLURM_NODELIST")
    job = env.get("SLURM_JOB_ID")
    if not nodelist or not job:
        raise SlurmEnvError("SLURM_JOB_NODELIST and SLURM_JOB_ID must be set: run inside a SLURM job "
                            "(sbatch tools/slurm/train.sbatch ...)")
    if not job.isdigit():
        raise SlurmEnvError(f"SLURM_JOB_ID={job!r} is not a job number")
    hosts = expand_nodelist(nodelist)
    nodes = count(env, "SLURM_NNODES") or len(hosts)
    if nodes != len(hosts):
        raise SlurmEnvError(f"SLURM_NNODES={nodes} but SLURM_JOB_NODELIST={nodelist!r} lists {len(hosts)} hosts")
    tasks = count(env, "SLURM_NTASKS_PER_NODE")
    if tasks is not None and tasks > 1:
        raise SlurmEnvError(f"SLURM_NTASKS_PER_NODE={tasks}: launch one torchrun per node (--ntasks-per-node=1); "
                            "torchrun starts one process per GPU itself")
    nproc = nproc_per_node or count(env, "SLURM_GPUS_ON_NODE") or count(env, "SLURM_GPUS_PER_NODE") or 1
    port = count(env, "MASTER_PORT") or 20000 + int(job) % 20000
    return ["--nnodes", str(nodes), "--nproc-per-node", str(nproc), "--rdzv-backend", "c10d",
            "--rdzv-endpoint", f"{hosts[0]}:{port}", "--rdzv-id", job]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nproc-per-node", type=int, default=None, help="processes on this node (default: its GPUs)")
    args = parser.parse_args(argv)
    try:
        line = shlex.join(torchrun_args(os.environ, args.nproc_per_node))
    except SlurmEnvError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print(line)  # one line, for $(...) in the sbatch script
    return 0


if __name__ == "__main__":
    sys.exit(main())
