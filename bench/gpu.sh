#!/usr/bin/env bash
# The paper's Table 4 on a GPU, in one command (< 8 minutes on one H100 / H200): train step and served
# inference vs full fine-tuning on the bert-base shape and the SmolLM2-135M shape (random init, no weights),
# fp32 and bf16, eager and torch.compile'd, peltc beside peft LoRA — bench/overhead.py --compile --precision
# (benchlib/speed_axes.py), JSON under $PELT_GPU_OUT (default docs/results/gpu), the tables on stdout.
#
#   bash bench/gpu.sh                  # on the GPU machine, from the repository root
#   PELT_GPU_TINY=1 bash bench/gpu.sh  # tiny shapes on the CPU (the smoke test: tests/bench/)
#
# What it assumes of the machine (it checks each and says what is missing): a Python ($PYTHON, else
# .venv/bin/python, else python3) with torch built with CUDA, transformers, peft and this repository's
# peltc importable (pip install -e . --no-deps, or PYTHONPATH). The GPU machine has no internet: the run tool
# copies the working tree and at most 64 MiB of ignored paths, so a CPU .venv cannot travel; use the
# machine's preinstalled torch + CUDA and install transformers / peft / lark / networkx / pydantic from
# wheels carried in the tree if they are missing. AdapterHub (adapters, pinning transformers 4.57) needs its
# own environment, which cannot be built offline there: not run (bench/overhead.py --anchors does it on CPU).
set -u
cd "$(dirname "$0")/.."
PY="${PYTHON:-}"
if [ -z "$PY" ]; then if [ -x .venv/bin/python ]; then PY=.venv/bin/python; else PY=python3; fi; fi
OUT="${PELT_GPU_OUT:-docs/results/gpu}"
missing=$("$PY" - <<'PYEOF'
import importlib.util as u
need = ["torch", "transformers", "peft", "lark", "networkx", "pydantic", "peltc"]
print(" ".join(n for n in need if u.find_spec(n) is None))
PYEOF
)
if [ -n "$missing" ]; then
  echo "bench/gpu.sh: missing Python packages in $PY: $missing" >&2
  echo "  install them (pip install -e '.[torch]' where there is a network; wheels carried in the tree otherwise)" >&2
  exit 2
fi
cuda=$("$PY" -c "import torch; print(torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')")
if [ -n "${PELT_GPU_TINY:-}" ] || [ -z "$cuda" ]; then
  if [ -z "${PELT_GPU_TINY:-}" ]; then
    echo "bench/gpu.sh: no CUDA device (torch $("$PY" -c 'import torch; print(torch.__version__)')): nothing to" \
         "measure; PELT_GPU_TINY=1 runs the tiny CPU mode" >&2
    exit 3
  fi
  echo "bench/gpu.sh: tiny mode on the CPU (no CUDA device needed)"
  exec "$PY" bench/overhead.py --shapes tiny,tiny-llama --batch 2 --seq 16 --rounds 2 --warmup 1 --threads 1 \
      --compile --precision bf16 --compile-backend eager --methods lora,unipelt_apl --out "$OUT"
fi
echo "bench/gpu.sh: $cuda"
bf16=$("$PY" -c "import torch; print('bf16' if torch.cuda.is_bf16_supported() else 'fp16')")
# ~6 configurations x 2 precisions x 2 modes per shape; inductor compiles each once (~10-20 s on a GPU host)
exec "$PY" bench/overhead.py --device cuda --shapes bert-base,smollm2 --compile --precision "$bf16" \
    --rounds 10 --warmup 2 --threads 8 --out "$OUT"
