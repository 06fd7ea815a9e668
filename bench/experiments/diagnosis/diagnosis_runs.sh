#!/usr/bin/env bash
# The controlled runs of the STS-B / CoLA diagnosis (docs/results.md): K = 100, seed 1, dev 500, each
# spec with the head's bias at zero (the recipe before) and at the prior (the recipe now). Each run's
# metrics.json + diagnostics.json are gathered into docs/results/diagnosis/<name>.json;
# bench/reports/diagnosis_table.py prints the table from them. ~20 runs of 1–4 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/../../.."
OUT=${OUT:-runs/diagnosis}
GLUE=${PELT_GLUE_DIR:-../shared/glue}
run() {  # name spec task seed [flags]
  local name=$1 spec=$2 task=$3 seed=$4; shift 4
  [ -f "$OUT/$name/metrics.json" ] || OMP_NUM_THREADS=1 .venv/bin/peltc compile "$spec" --train "glue/$task" \
      --k 100 --seed "$seed" --dev-size 500 --data-dir "$GLUE" --out "$OUT/$name" --quiet --no-render "$@"
  .venv/bin/python - "$OUT/$name" "docs/results/diagnosis/$name.json" <<'PY'
import json, sys
from pathlib import Path
d = Path(sys.argv[1])
Path(sys.argv[2]).write_text(json.dumps({"metrics": json.loads((d / "metrics.json").read_text()),
                                          "diagnostics": json.loads((d / "diagnostics.json").read_text())}) + "\n")
PY
}
for spec in prefix unipelt_apl lora adapter; do
  for bias in zero prior; do run "$spec-stsb-s1-$bias" "specs/$spec.pelt" stsb 1 --head-bias $bias; done
done
for spec in unipelt_apl lora; do
  for bias in zero prior; do run "$spec-cola-s1-$bias" "specs/$spec.pelt" cola 1 --head-bias $bias; done
done
for bias in zero prior; do run "unipelt_apl-mrpc-s1-$bias" specs/unipelt_apl.pelt mrpc 1 --head-bias $bias; done
.venv/bin/python bench/reports/diagnosis_table.py
