"""Fuzzing the front end (hypothesis, deterministic): every input ends in success or a clean
diagnostic, never an uncaught exception; and the formatter round-trips whatever parses.

(a) mutations of every valid spec (specs/ and a few inline ones): characters deleted, duplicated,
    swapped, replaced, tokens of the language inserted, the text truncated;
(b) specs generated from the grammar over methods, parameters, points, selectors, gates and
    overrides, with valid and invalid values, comments and odd whitespace.

For each input that parses, `format_source` must be idempotent, keep every comment, and give text
that builds to the same IR (spans and the source hash aside) or fails with the same error codes.
The number of inputs checked is printed at the end (`pytest -rP tests/test_fuzz.py`).
"""

from __future__ import annotations

import functools
import math
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from peltc.compiler import schema
from peltc.compiler.archs import FAMILIES
from peltc.compiler.pipeline import build_ir
from peltc.errors import PeltError, SpecError
from peltc.grammar.fmt import _comment_col, format_source

ROOT = Path(__file__).resolve().parents[1]
SPECS = sorted((ROOT / "specs").glob("*.pelt"))

# A shallow bert-base (3 layers): the passes run fast, the sizes of bert-base are valid.
SMALL = {"model_type": "bert", "hidden_size": 768, "num_hidden_layers": 3, "num_attention_heads": 12,
         "intermediate_size": 3072, "vocab_size": 100, "max_position_embeddings": 64, "type_vocab_size": 2}

LIB = {
    "base.pelt": "adapter a { at layers[*].ffn.output size 8 }\nlora l { at layers[*].attention.{query, value} }\n",
    "more.pelt": "bitfit b { at layers[0].attention }\nprefix p { at layers[-2..].attention length 4 mlp none }\n",
}

INLINE = [
    # UniPELT (APL), as in DESIGN.md
    """# UniPELT (APL)
model bert-base-uncased                  # default base model

adapter ffn_adapter {
  at    layers[*].ffn.output             # Pfeiffer placement
  size  48
  gate  sigmoid(ffn.output)
}
prefix kv {
  at     layers[*].attention
  length 10
  mlp    512
  gate   sigmoid(layer.input)
}
lora qv {
  at    layers[*].attention.{query, value}
  rank  8
  alpha 16
  gate  sigmoid(layer.input, pool=mean_unmasked)
}
""",
    """extends "base.pelt"
import b from "more.pelt"
remove l
adapter a {
  size 16
  layers[0..1] { size 4 gate const(0.5) }   # smaller below
  layers[-1] { gate scalar(init=-2) }
}
head { pool mean }
train { lr 1e-3 epochs 3 batch_size 8 warmup .1 }
""",
    """lora top {
  at layers[2.., 0..1 by 2].attention.{query, key}, layers[..1].ffn.{up, down}
  rank 4
  dropout 0.1
}
adapter par { at layers[*].ffn.output placement parallel activation gelu scale 4 gate scalar }
bitfit attn_bias { at layers[*].attention, embeddings }
""",
    """finetune all_weights {}
head { pool pooler }
""",
]


def _loader(path: str) -> str:
    try:
        return LIB[path]
    except KeyError:
        raise FileNotFoundError(2, "No such file or directory") from None


def _seeds() -> list[tuple[str, str]]:
    """(text, file) pairs: specs/ read from disk (their imports resolve there), then inline ones."""
    out = [(p.read_text(encoding="utf-8"), str(p)) for p in SPECS]
    out += [(t, "<inline>") for t in INLINE]
    return out


SEEDS = _seeds()
SYNTAX = ("E001", "E002", "E003")
COUNT = {"inputs": 0, "ok": 0, "errors": 0, "formatted": 0, "valid_drawn": 0}
MUTATED, GENERATED = 2500, 1500   # inputs per property (hypothesis max_examples)


# --- the properties -----------------------------------------------------------------------------
def _in_bounds(span, source: str) -> bool:
    lines = source.split("\n")
    if not 1 <= span.line <= len(lines):
        return False
    return 1 <= span.col <= len(lines[span.line - 1]) + 1


def _build(text: str, file: str, model):
    loader = _loader if file.startswith("<") else None
    return build_ir(text, file, model=model, loader=loader)


def check(text: str, file: str, model) -> None:
    """Success or a clean `PeltError`; then the formatter properties on text that parses."""
    COUNT["inputs"] += 1
    codes = None
    try:
        result = _build(text, file, model)
    except PeltError as e:
        COUNT["errors"] += 1
        sources = getattr(e, "sources", {}) or {}
        assert e.diagnostics, "an error with no diagnostic"
        rendered = e.render()
        for d in e.diagnostics:
            assert d.code and d.message
            if d.span is not None:
                src = sources.get(d.span.file, text if d.span.file == file else None)
                assert src is not None, f"no source for {d.span.file}"
                assert _in_bounds(d.span, src), f"{d.code} span {d.span} outside the text"
                assert f"error: {d.span}:" in rendered or d.severity != "error"
        codes = {d.code for d in e.errors} if isinstance(e, SpecError) else {e.diagnostic.code}
        if any(d.code in SYNTAX and d.span is not None and d.span.file == file for d in e.diagnostics):
            return   # the text does not parse: nothing to format
        result = None
    else:
        COUNT["ok"] += 1
    check_format(text, file, model, result, codes)


def _comments(text: str) -> list[str]:
    out = []
    for ln in text.split("\n"):
        c = _comment_col(ln)
        if c is not None:
            out.append(ln[c:].rstrip())
    return sorted(out)


def _strip(obj):
    """IR json without source positions and the source hash."""
    if isinstance(obj, dict):
        return {k: _strip(v) for k, v in obj.items() if k not in ("span", "spans", "gate_span", "spec_hash")}
    if isinstance(obj, list):
        return [_strip(v) for v in obj]
    return obj


def ir_json(result) -> dict:
    d = _strip(result.ir.to_dict())
    d["edges"] = sorted(d["edges"], key=lambda e: (e["src"], e["dst"], e["role"]))
    return d


def check_format(text: str, file: str, model, result, codes) -> None:
    COUNT["formatted"] += 1
    once = format_source(text, file)
    assert format_source(once, file) == once, "fmt is not idempotent"
    assert _comments(once) == _comments(text), "fmt lost or changed a comment"
    try:
        again = _build(once, file, model)
    except PeltError as e:
        assert result is None, f"formatted text fails ({e.diagnostics[0]}) where the original built"
        got = {d.code for d in e.errors} if isinstance(e, SpecError) else {e.diagnostic.code}
        assert got == codes, f"error codes changed by fmt: {codes} → {got}"
        return
    assert result is not None, f"formatted text builds where the original failed with {codes}"
    assert ir_json(again) == ir_json(result), "fmt changed the IR"


# --- drawing (strategies built once: hypothesis validates every new strategy object) ----------

@functools.lru_cache(maxsize=None)
def _sampler(choices: tuple) -> st.SearchStrategy:
    return st.sampled_from(choices)


@functools.lru_cache(maxsize=None)
def _ints(lo: int, hi: int) -> st.SearchStrategy:
    return st.integers(lo, hi)


def _pick(draw, choices):
    """draw(st.sampled_from(choices)), with the strategy built once (hypothesis validates each new one)."""
    return draw(_sampler(tuple(choices)))


def _int(draw, lo: int, hi: int) -> int:
    return draw(_ints(lo, hi))


def _some(draw, choices, lo: int, hi: int, unique: bool = False) -> list:
    pool, out = list(choices), []
    for _ in range(_int(draw, lo, min(hi, len(pool)) if unique else hi)):
        out.append(pool.pop(_int(draw, 0, len(pool) - 1)) if unique else _pick(draw, pool))
    return out


def _shuffled(draw, items: list) -> list:
    """A permutation of ``items``, drawn as one number (its index in the factorial number system)."""
    items, out = list(items), []
    k = _int(draw, 0, math.factorial(len(items)) - 1) if len(items) > 1 else 0
    while items:
        k, j = divmod(k, len(items))
        out.append(items.pop(j))
    return out


# --- (a) mutations ------------------------------------------------------------------------------
VOCAB = [
    # keywords, methods, sections, parameters, points, gates
    "model", "extends", "import", "from", "remove", "at", "gate", "layers", "by",
    *schema.METHODS, *schema.SECTIONS, "adaptor", "lora2",
    *sorted({p for m in schema.METHODS.values() for p in m.params}), *schema.TRAIN_PARAMS, "pool",
    *schema.LAYER_POINTS, *schema.GLOBAL_POINTS, "layer.input", "ffn.outptu",
    *schema.GATE_KINDS, "sigmoid(layer.input)", "sigmoid(ffn.output, pool=mean_unmasked)",
    "const(0.5)", "scalar(init=1)", "pool=first", *schema.POOLS, "parallel", "sequential", "none",
    # punctuation and literals
    "{", "}", "[", "]", "(", ")", ",", ".", "..", "*", "=", ":", ";", '"', "#", "# note\n", "\n",
    "0", "-1", "3", "12", "48", "768", "1e3", ".5", "-0.0", "99999999999999999999", "1e400", "by 0", "..-1",
    '"base.pelt"', '"more.pelt"', '""', '"nope.pelt"', '"adapter.pelt"', "{query, value}",
    "layers[*]", "layers[0..11 by 2]", "layers[-4..]", "[*]",
    # odd characters
    "\t", "\r", "\x0c", "\u2028", "é", "\x00", "💥", "\\",
]


CHARS = st.characters(codec="utf-8", exclude_categories=["Cs"])


@st.composite
def mutated(draw):
    text, file = _pick(draw, SEEDS)
    for _ in range(_int(draw, 1, 4)):
        n = len(text)
        i = _int(draw, 0, n)
        op = _pick(draw, ["delete", "duplicate", "swap", "insert", "insert", "replace", "truncate"])
        if op == "delete" and n:
            j = min(n, i + _int(draw, 1, 8))
            text = text[:i] + text[j:]
        elif op == "duplicate" and i < n:
            j = min(n, i + _int(draw, 1, 12))
            text = text[:j] + text[i:j] + text[j:]
        elif op == "swap" and i + 1 < n:
            text = text[:i] + text[i + 1] + text[i] + text[i + 2:]
        elif op == "insert":
            sep = _pick(draw, ["", " ", "\n"])
            text = text[:i] + sep + _pick(draw, VOCAB) + sep + text[i:]
        elif op == "replace" and i < n:
            text = text[:i] + draw(CHARS) + text[i + 1:]
        elif op == "truncate":
            text = text[:i]
    model = SMALL if _int(draw, 0, 2) else None
    return text, file, model


@settings(max_examples=MUTATED, derandomize=True, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
@given(mutated())
def _mutated_specs_end_cleanly(case):
    check(*case)


def _fed(prop, budget: int, label: str) -> None:
    """Run a hypothesis property and check how many inputs it fed through the front end.

    Each property checks its own count: under `pytest -n 2` the tests of a module may run on
    different workers, so no count can be summed across tests."""
    before = dict(COUNT)
    prop()
    fed = {k: COUNT[k] - before[k] for k in COUNT}
    print(f"{label}: {fed['inputs']} inputs ({fed['ok']} built, {fed['errors']} clean errors, "
          f"{fed['formatted']} parsed and round-tripped through fmt)")
    # Hypothesis may stop short of max_examples; it must have fed at least 95% of the budget.
    assert fed["inputs"] >= 0.95 * budget, fed


def test_mutated_specs_end_cleanly():
    _fed(_mutated_specs_end_cleanly, MUTATED, "mutated specs")


@pytest.mark.parametrize("text,file", SEEDS, ids=[Path(f).name if not f.startswith("<") else f"inline{k}"
                                                 for k, (_, f) in enumerate(SEEDS)])
def test_seeds_are_valid(text, file):
    """The mutation seeds are themselves valid (else the fuzz would mostly test one error)."""
    _build(text, file, SMALL)
    check(text, file, SMALL)


# --- (b) grammar-guided random specs ------------------------------------------------------------
# Each spec is drawn either "valid" (values from the schema's tables, chosen so the whole spec
# checks clean on the 3-layer model) or "wild" (any name, value, selector or gate, valid or not).
# Few draws per spec keep hypothesis' own overhead low.

VALID_VALUES = {  # parameter → values its type and range accept (on a bert-base-sized model)
    "size": ["1", "8", "48", "767"], "activation": ["relu", "gelu", "tanh", '"silu"'],
    "placement": ["sequential", "parallel"], "scale": ["0", "1", "4.0", "1e-1"],
    "length": ["1", "10", "512"], "mlp": ["none", "off", "1", "512"],
    "rank": ["1", "8", "16"], "alpha": ["0", "16", "32.5"], "dropout": ["0", "0.1", ".5"],
    "init": ["random", "tokens"], "lr": ["1e-4", "0.5", "3"],
    # LoRA's options (`init pissa` / `olora` is E145 under the learned gates drawn here: default only)
    "lora.init": ["default"], "scaling": ["standard", "rs"], "dora": ["true", "false"], "lr_ratio": ["1", "16", "0.5"],
    "tied": ["true", "false"], "prompt.init": ["random", "vocab"], "encoder": ["none", "mlp", "lstm"],
    "encoder_hidden": ["1", "128"],
}
WILD_VALUES = ["-3", "0", "768", "1000", "007", "1e3", "1e400", "0.5", "-0.1", "2E2", "relu", "swish", "none",
               "true", '"10"', "parallel", "pooler", "mean"]
VALID_SELECTORS = ["*", "0", "1", "2", "-1", "-3", "0..1", "1..", "-2..", "..1", "0..2 by 2", "0, 2", "0..0, 1..1 by 1"]
WILD_SELECTORS = ["3", "-4", "2..1", "5..", "0..2 by 0", "0..2 by -1", "-1..0", "..9", "0, 0", "*, 1",
                  "-1..-2", "0..99999999999999999999"]
POINT_SETS = {"attention.query": "attention.{query, value}", "ffn.up": "ffn.{up, down}",
              "attention.output": "{attention, ffn}.output"}
WILD_POINTS = ["ffn.outptu", "attention.qv", "{attention}.{key}", "embedding", "pooler", "layers", "at"]
VALID_GATES = ["none", "scalar", "scalar(init=-1)", "const(0.5)", "const(1)"]
SIGMOID_GATES = ["sigmoid(layer.input)", "sigmoid(layer.input, pool=mean_unmasked)",
                 "sigmoid(layer.input, pool=first)", "sigmoid(layer.input, pool=masked_mean)"]
WILD_GATES = ["none()", "const", "const(a)", "const(0.5, 2)", "sigmod(layer.input)", "scalar(0.5)",
              "sigmoid()", "sigmoid(1)", "sigmoid(layer.output)", "sigmoid(ffn.output)",
              "sigmoid(attention.output, pool=max)", "sigmoid(layer.input, pooling=first)", "gate"]
SEPARATORS = [" ", "\n", "\n  ", "\n\n", "\t", "  # c\n", "\n# full line\n", " #x\n\n", "\n\n\n# two\n# lines\n"]


def _target(draw, spec: schema.MethodSpec, wild: bool) -> tuple[str, str]:
    """A target of the method and the point it names (a valid draw: a point the BERT family has —
    the fuzz models are BERT-shaped; `ffn.gate` exists on gated-MLP decoders only)."""
    bert = FAMILIES["bert"].points
    point = _pick(draw, sorted(p for p in spec.points if p not in schema.LAYER_POINTS or p in bert
                               or schema.LAYER_POINTS[p] == "block"))
    if wild and _int(draw, 0, 2) == 0:
        point = _pick(draw, [*WILD_POINTS, *schema.LAYER_POINTS, *schema.GLOBAL_POINTS])
    if point in schema.GLOBAL_POINTS or point in WILD_POINTS[-5:]:
        return point, point
    sel = _pick(draw, WILD_SELECTORS if wild and _int(draw, 0, 1) else VALID_SELECTORS)
    written = POINT_SETS.get(point, point) if _int(draw, 0, 1) else point
    if spec.name == "lora" and written.startswith("{"):
        written = point
    return f"layers[{sel}]" + ("" if point == schema.WHOLE_LAYER else f".{written}"), point


def _gate(draw, spec: schema.MethodSpec, point: str, wild: bool) -> str | None:
    if not spec.gated and not wild:
        return None
    if wild and _int(draw, 0, 2) == 0:
        return _pick(draw, WILD_GATES + SIGMOID_GATES)
    in_layer = point in schema.LAYER_POINTS or point == schema.WHOLE_LAYER
    return _pick(draw, VALID_GATES + (SIGMOID_GATES if in_layer and point != "input" else []))


def _params(draw, spec: schema.MethodSpec, wild: bool, override: bool = False) -> list[str]:
    names = sorted(spec.params)
    if override and not wild:   # `lr`, prefix `init`: set for the whole instance only
        names = [n for n in names if not spec.params[n].instance_only]
    if not wild:                # a prompt's `text` goes with `init text` only (E155 / E156)
        names = [n for n in names if n != "text"]
    if wild:
        names += ["sizee", "rank", "lr", "size"]
    if not names:
        return []
    chosen = _some(draw, names, 0, 3, unique=not wild)
    out = []
    for name in chosen:
        pool = VALID_VALUES.get(f"{spec.name}.{name}", VALID_VALUES.get(name, ["1"]))
        if wild and _int(draw, 0, 1):
            pool = WILD_VALUES
        out.append(f"{name} {_pick(draw, pool)}")
    if not wild and "init tokens" in out and "mlp 1" in out:   # `init tokens` needs mlp ≥ length (E104)
        out[out.index("mlp 1")] = "mlp 512"
    return out


@st.composite
def instance(draw, method: str, name: str, wild: bool):
    spec = schema.METHODS[method]
    written, point = _target(draw, spec, wild)
    members, has_at = [f"at {written}"], True
    if spec.default_at and _int(draw, 0, 1):   # no `at`: the method's default place
        members, point, has_at = [], spec.default_at[0], False
    if wild and _int(draw, 0, 3) == 0:
        members.append(f"at {_target(draw, spec, wild)[0]}")   # a second `at`, or a second target
    members += _params(draw, spec, wild)
    gate = _gate(draw, spec, point, wild)
    if gate is not None and _int(draw, 0, 1):
        members.append(f"gate {gate}")
    # a per-layer override (valid when the instance covers every layer)
    if (wild or has_at and written.startswith("layers[*]")) and _int(draw, 0, 2) == 0:
        sel = _pick(draw, WILD_SELECTORS if wild else VALID_SELECTORS)
        inner = _params(draw, spec, wild, override=True)
        og = _gate(draw, spec, point, wild)
        if og is not None and _int(draw, 0, 1):
            inner.append(f"gate {og}")
        if wild and _int(draw, 0, 3) == 0:
            inner.append(_pick(draw, ["at layers[0].ffn.output", "layers[0] { }"]))
        members.append(f"layers[{sel}] {{ " + " ".join(inner) + " }")
    members = _shuffled(draw, members)
    return f"{method} {name} {{ " + " ".join(members) + " }"


@st.composite
def generated(draw):
    wild = _int(draw, 0, 2) == 0   # one spec in three draws from the wild values
    parts = []
    if _int(draw, 0, 3) == 0:
        refs = ["bert-base-uncased", '"bert-base-uncased"'] + (["nope", '"a b"', "minilm"] if wild else [])
        parts.append("model " + _pick(draw, refs))
    if _int(draw, 0, 5) == 0:
        parts.insert(0 if not wild else _int(draw, 0, len(parts)),
                     f'extends "{_pick(draw, list(LIB) + (["gone.pelt"] if wild else []))}"')
    # methods: in a valid spec at most one prefix and one bitfit, and finetune only alone
    methods = _some(draw, sorted(schema.METHODS), 1, 3)
    if not wild:
        if "finetune" in methods:
            methods = ["finetune"]
        methods = [m for k, m in enumerate(methods) if m not in ("prefix", "bitfit") or m not in methods[:k]]
        if any(m in ("lora", "bitfit") for m in methods):   # (IA)³ and LoRA / BitFit on one linear: E150
            methods = [m for m in methods if m != "ia3"]
        if parts and parts[0].startswith("extends"):   # base.pelt: adapter a, lora l
            methods = [m for m in methods if m not in ("finetune", "bitfit", "prefix", "ia3")] or ["adapter"]
    names = _some(draw, ["n1", "n2", "n3", "x-1", "_p", "a"], len(methods), len(methods), unique=not wild)
    if not wild:
        names = [n if n != "a" else "n4" for n in names]
    for m, n in zip(methods, names):
        if wild and _int(draw, 0, 9) == 0:
            m = _pick(draw, ["adaptor", "head", "train", "layers"])
            parts.append(f"{m} {n} {{ }}" if m != "layers" else "layers { }")
            continue
        parts.append(draw(instance(m, n, wild)))
    if _int(draw, 0, 3) == 0:
        which = _pick(draw, ["head", "train"] + (["trian"] if wild else []))
        body = {"head": ["pool mean", "pool pooler"], "train": ["lr 1e-4", "epochs 3", "batch_size 16", "warmup 0.1"],
                "trian": ["lr 1"]}[which]
        chosen = _some(draw, body, 0, 1 if which == "head" else 2, unique=True)
        parts.append(f"{which} {{ " + " ".join(chosen) + " }")
    if wild and _int(draw, 0, 4) == 0:
        parts.append(f"remove {_pick(draw, ['a', 'l', 'n1', 'zz'])}")
    # the tokens, joined by spaces except at a few random places: newlines, blank lines, comments
    tokens = " ".join(parts).split(" ")
    for _ in range(_int(draw, 0, 6)):
        pos, sep = divmod(_int(draw, 0, 10**6), len(SEPARATORS))
        tokens[pos % len(tokens)] += SEPARATORS[sep]
    text = " ".join(tokens)
    model = SMALL if _int(draw, 0, 4) else None   # None: the `model` line, if any, decides
    return text, model, wild


@settings(max_examples=GENERATED, derandomize=True, deadline=None, database=None,
          suppress_health_check=list(HealthCheck))
@given(generated())
def _generated_specs_end_cleanly(case):
    text, model, wild = case
    COUNT["valid_drawn"] += not wild
    built = COUNT["ok"]
    check(text, "<inline>", model)
    if not wild and COUNT["ok"] == built:   # a spec drawn valid must build
        _build(text, "<inline>", model)


def test_generated_specs_end_cleanly():
    _fed(_generated_specs_end_cleanly, GENERATED, "generated specs")
