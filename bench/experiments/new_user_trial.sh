#!/usr/bin/env bash
# Issue 22 items 1-6 as a new user would hit them, from a fresh clone: run `bash bench/experiments/new_user_trial.sh`
# in the clone's root after .ci/setup (GLUE from ../shared/glue). Prints, per step, the exit code, the number of
# tracebacks (0 expected) and the first error or warning line.
set -u
P=.venv/bin/peltc
T=$(mktemp -d /tmp/trial22.XXXX)
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
python3 - "$T" <<'PY'
import sys, random
t = sys.argv[1]; random.seed(0)
good = ["a gripping funny film", "dull and slow", "a joy to watch", "i want my money back", "moving and sharp", "a mess"]
with open(f"{t}/reviews.csv", "w") as f:
    f.write("review,sentiment\n")
    for i in range(150):
        j = random.randrange(6); f.write(f"{good[j]} {i},{'pos' if j % 2 == 0 else 'neg'}\n")
with open(f"{t}/commas.csv", "w") as f:
    f.write("review,sentiment\n")
    for i in range(60): f.write(f"so, a gripping funny film {i},pos\nbad {i},neg\n")
with open(f"{t}/four.csv", "w") as f:
    f.write("text,label\n" + "".join(f"ok {i},pos\nno {i},neg\n" for i in range(2)) + "bad,row,here,pos\n")
with open(f"{t}/latin.csv", "wb") as f:
    f.write(b"text,label\nok,pos\ncaf\xe9,neg\n")
with open(f"{t}/mixed.jsonl", "w") as f:
    f.write('{"review": "a joy to watch"}\n{"text": "a mess", "label": "neg"}\n')
PY
run() {  # name, then the command
  local name=$1; shift
  "$@" > "$T/$name.out" 2> "$T/$name.err"; local rc=$?
  local first; first=$(grep -m1 -E "^(error|warning)" "$T/$name.err" "$T/$name.out" | head -1)
  local tb; tb=$(grep -c Traceback "$T/$name.err")
  echo "[$name] exit $rc; tracebacks $tb; ${first:-(no error line)}"
}
FAST=(--k 16 --epochs 1 --dev-size 20 --quiet --no-render)
run item1-extra-field $P compile specs/lora.pelt --train csv:$T/commas.csv --text-column review --label-column sentiment "${FAST[@]}" --out $T/r1
run item3-one-step-run $P compile specs/lora.pelt --train csv:$T/reviews.csv --text-column review --label-column sentiment "${FAST[@]}" --out $T/run
grep -m1 "^schedule" $T/item3-one-step-run.out
mkdir -p $T/moved && mv $T/reviews.csv $T/moved/
run item2-eval-moved $P eval $T/run
run item2-eval-new-place $P eval $T/run --train $T/moved/reviews.csv
run item4-predict-file $P predict $T/run --file $T/mixed.jsonl --quiet
run item4-predict-stdin bash -c "cat $T/mixed.jsonl | $P predict $T/run --file - --quiet"
head -2 $T/item4-predict-stdin.out
run item5-k-too-large $P compile specs/lora.pelt --train glue/rte --data-dir ../shared/glue --k 5000 --out $T/r5
start=$(date +%s); run item5-glue-offline env -u PELT_GLUE_DIR $P compile specs/lora.pelt --train glue/rte --out $T/r6; echo "  took $(( $(date +%s) - start )) s"
run item6-non-utf8 $P compile specs/lora.pelt --train csv:$T/latin.csv "${FAST[@]}" --out $T/r7
run item6-four-fields $P compile specs/lora.pelt --train csv:$T/four.csv "${FAST[@]}" --out $T/r8
echo "files in $T"
