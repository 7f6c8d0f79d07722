#!/usr/bin/env bash
# GPU check (issue 52): on a GPU machine with no package registry, in about 5 minutes, with the
# machine's own python and torch:
#   1. env       python, torch, the device
#   2. wheels    every wheel in --wheels DIR whose package is not installed yet: pip install
#                --no-index --no-deps (nothing else is ever fetched or replaced)
#   3. install   pip install --no-index --no-deps --no-build-isolation -e .
#   4. imports   what the checks import (unimask, every adapter, timm, gin, pytest); a missing
#                module is named with the wheel to add
#   5. tests     tests/test_gpu.py (-m cuda): bf16 autocast, fused AdamW, the fused SDPA kernel,
#                torch.compile, activation checkpointing, DDP under NCCL with a resume, the
#                trainer's resume on the GPU with uint8 batches normalized there
#   6. imagemae  tools/bench.py imagemae --vs hf --device cuda   (needs transformers)
#   7. videomae  tools/bench.py videomae --vs hf --device cuda   (needs transformers)
# Each step runs under its own time limit; logs go to runs/gpu_check/<time>/, a summary ends
# the output, and the exit status is 1 if a step failed (a skipped step is not a failure).
#
#   tools/gpu_check.sh [--device cuda|cpu] [--full] [--wheels DIR] [--limit-scale X]
#
# --device cpu is the dry run (tested in CI by tests/test_gpu.py): nothing is installed (pip runs
# with --dry-run), the tests run on the CPU at small sizes (gloo for NCCL) but for the trainer's
# resume, the benches are only printed; --full adds the trainer's resume and the image bench at
# its CPU config for one step. --limit-scale X multiplies every step's time limit.
#
# The wheels folder, built beforehand on a machine with the registry, for the GPU machine's
# python (here 3.11; `python -c "import sys; print(sys.version)"` there tells) and platform:
#   pip download --no-deps -d wheels/ gin-config einops timm tqdm pytest iniconfig pluggy \
#       packaging huggingface-hub transformers
#   pip download --no-deps --only-binary=:all: --python-version 3.11 \
#       --platform manylinux2014_x86_64 -d wheels/ safetensors pyyaml tokenizers regex av
# (only what the GPU machine lacks is installed from it; `--device cpu --wheels wheels/` checks
# the folder against this machine without installing).
set -uo pipefail

DEVICE=cuda
WHEELS=""
SCALE=1
FULL=0
while [ $# -gt 0 ]; do
  case "$1" in
    --device) DEVICE="$2"; shift 2 ;;
    --wheels) WHEELS="$2"; shift 2 ;;
    --limit-scale) SCALE="$2"; shift 2 ;;
    --full) FULL=1; shift ;;
    -h|--help) sed -n '2,32p' "$0"; exit 0 ;;
    *) echo "unknown option: $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$DEVICE" in cuda|cpu) ;; *) echo "--device must be cuda or cpu" >&2; exit 2 ;; esac

cd "$(dirname "$0")/.."
PYTHON="${PYTHON:-python}"
LOGS="runs/gpu_check/$(date +%Y%m%d-%H%M%S)-$DEVICE"
mkdir -p "$LOGS"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-8}" PYTHONUNBUFFERED=1
DRY=()
[ "$DEVICE" = cpu ] && DRY=(--dry-run)
SUMMARY=()
FAILED=0
START=$(date +%s)

# step NAME SECONDS COMMAND...: run under a time limit, log, record PASS / FAIL / TIMEOUT
step() {
  local name="$1" limit="$2"; shift 2
  limit=$(awk -v l="$limit" -v s="$SCALE" 'BEGIN { printf "%d", l * s }')
  local began rc
  began=$(date +%s)
  echo "== $name (limit ${limit}s): $*"
  timeout --kill-after=15 "$limit" "$@" >"$LOGS/$name.log" 2>&1
  rc=$?
  local took=$(( $(date +%s) - began ))
  if [ $rc -eq 0 ]; then
    SUMMARY+=("PASS     $name (${took}s)")
    tail -n 3 "$LOGS/$name.log"
    return
  fi
  if [ $rc -eq 124 ] || [ $rc -eq 137 ]; then
    SUMMARY+=("TIMEOUT  $name (${took}s, limit ${limit}s)")
  else
    SUMMARY+=("FAIL     $name (${took}s, exit $rc)")
  fi
  FAILED=1
  tail -n 25 "$LOGS/$name.log"
}

skip() { SUMMARY+=("SKIP     $1: $2"); echo "== $1: skipped: $2"; }

step env 60 "$PYTHON" - "$DEVICE" <<'EOF'
import sys, platform, torch
device = sys.argv[1]
print(f"python {platform.python_version()}, torch {torch.__version__} (CUDA {torch.version.cuda}), "
      f"cuda available: {torch.cuda.is_available()}")
if device == "cuda":
    assert torch.cuda.is_available(), "no CUDA device: run with --device cpu for the dry run"
    print("device:", torch.cuda.get_device_name(0), f"{torch.cuda.get_device_properties(0).total_memory / 2**30:.0f} GiB")
EOF

if [ -n "$WHEELS" ]; then
  step wheels 120 "$PYTHON" - "$WHEELS" ${DRY[@]+"${DRY[@]}"} <<'EOF'
import importlib.metadata as md, pathlib, re, subprocess, sys
folder, dry = pathlib.Path(sys.argv[1]), sys.argv[2:]
norm = lambda name: re.sub(r"[-_.]+", "-", name).lower()
installed = {norm(d.metadata["Name"] or "") for d in md.distributions()}
wheels = sorted(folder.glob("*.whl"))
assert wheels, f"no wheels in {folder}"
todo = [w for w in wheels if norm(w.name.split("-")[0]) not in installed]
print(f"{len(wheels)} wheels in {folder}; not installed here: {[w.name for w in todo] or 'none'}")
if todo:
    subprocess.run([sys.executable, "-m", "pip", "install", "--no-index", "--no-deps", *dry, *map(str, todo)], check=True)
EOF
fi

step install 180 "$PYTHON" -m pip install --no-index --no-deps --no-build-isolation ${DRY[@]+"${DRY[@]}"} -e .

step imports 120 "$PYTHON" - <<'EOF'
import importlib, sys
sys.path.insert(0, ".")
WHEEL = {"gin": "gin-config", "yaml": "pyyaml", "PIL": "pillow", "huggingface_hub": "huggingface-hub"}
missing = []
for module in ("unimask", "modalities", "timm", "gin", "einops", "tqdm", "pytest"):
    try:
        importlib.import_module(module)
    except ModuleNotFoundError as err:
        missing.append(err.name)
if not missing:
    try:
        from unimask.configurables import register_all
        register_all()
    except ModuleNotFoundError as err:
        missing.append(err.name)
for name in ("transformers",):
    try:
        importlib.import_module(name)
        print(f"{name}: yes (the Hugging Face benches run)")
    except ImportError:
        print(f"{name}: no (the Hugging Face benches are skipped; add its wheels to run them)")
assert not missing, "missing: " + ", ".join(f"{m} (wheel: {WHEEL.get(m, m)})" for m in missing)
print("imports ok")
EOF

if [ "$DEVICE" = cuda ]; then
  step tests 300 env UNIMASK_GPU_CHECK_DEVICE=cuda "$PYTHON" -m pytest -q -rs -s -m cuda -p no:cacheprovider tests/test_gpu.py
elif [ "$FULL" = 1 ]; then
  step tests 240 env UNIMASK_GPU_CHECK_DEVICE=cpu "$PYTHON" -m pytest -q -rs -m cuda -p no:cacheprovider tests/test_gpu.py
else  # the trainer's three runs are left to --full
  step tests 120 env UNIMASK_GPU_CHECK_DEVICE=cpu "$PYTHON" -m pytest -q -rs -m cuda -p no:cacheprovider \
    -k "not trainer_resumes" tests/test_gpu.py
fi

if ! "$PYTHON" -c "import transformers" >/dev/null 2>&1; then
  skip imagemae "transformers is not installed"
  skip videomae "transformers is not installed"
elif [ "$DEVICE" = cuda ]; then
  step imagemae 180 "$PYTHON" tools/bench.py imagemae --vs hf --device cuda
  step videomae 240 "$PYTHON" tools/bench.py videomae --vs hf --device cuda
elif [ "$FULL" = 1 ]; then
  step imagemae 120 "$PYTHON" tools/bench.py imagemae --vs hf --device cpu --config cpu --batch 8 --steps 1 \
    --warmup 0 --precision fp32
  skip videomae "dry run (on a GPU: $PYTHON tools/bench.py videomae --vs hf --device cuda)"
else
  skip imagemae "dry run without --full (on a GPU: $PYTHON tools/bench.py imagemae --vs hf --device cuda)"
  skip videomae "dry run (on a GPU: $PYTHON tools/bench.py videomae --vs hf --device cuda)"
fi

echo "== summary ($DEVICE, $(( $(date +%s) - START ))s, logs in $LOGS)"
printf '%s\n' "${SUMMARY[@]}"
exit $FAILED
