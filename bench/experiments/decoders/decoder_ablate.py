"""Usage: OMP_NUM_THREADS=1 .venv/bin/python bench/experiments/decoders/decoder_ablate.py FIELD=JSON [FIELD=JSON ...] -- compile ARGS...

`peltc` with fields of every decoder family (`compiler/archs.py`, `Family`) replaced for this process only —
an ablation of a per-family default, e.g. `gate_source_norm=false` or `prefix_gate='"kv"'`. Nothing is saved
in the repository; the run folder's run.json does not record the override (name the run folder after it)."""
import dataclasses
import json
import sys

from peltc.compiler import archs


def main() -> int:
    if "--" not in sys.argv:
        print(__doc__, file=sys.stderr)
        return 2
    i = sys.argv.index("--")
    over = {}
    for a in sys.argv[1:i]:
        k, _, v = a.partition("=")
        if k not in {f.name for f in dataclasses.fields(archs.Family)} | set(archs.GateBehaviour.model_fields):
            print(f"error: unknown Family or GateBehaviour field '{k}'", file=sys.stderr)
            return 2
        try:
            over[k] = json.loads(v)
        except ValueError:
            print(f"error: {k}={v}: the value must be JSON (false, -10.0, '\"kv\"')", file=sys.stderr)
            return 2
    for name, fam in list(archs.FAMILIES.items()):
        if fam.causal:
            gates = {k: v for k, v in over.items() if k in archs.GateBehaviour.model_fields}
            rest = {k: v for k, v in over.items() if k not in gates}
            archs.FAMILIES[name] = dataclasses.replace(fam, **rest, gates=fam.gates.model_copy(update=gates))
    print("decoder families:", over, flush=True)
    from peltc.cli import main as peltc_main
    return peltc_main(sys.argv[i + 1:])


if __name__ == "__main__":
    raise SystemExit(main())
