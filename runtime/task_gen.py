"""Generation tasks (``--train gen:arith | gen:jsonl:PATH``, with a decoder): `GenTask`, the `task.Task` a
causal LM on prompt → completion pairs is — its examples built in (``gen:arith``) or read from JSON Lines
(with ``--validation`` / ``--test`` files of the same form), split by the protocol of `data.sample_own`,
encoded with the loss on the completion only, scored by greedy exact match (`generation`).

    raw, record = load_gen(task)                  # DatasetDict: train (the pool) [, test]; prompt, completion
    splits = task.sample(raw, k=100, seed=1, dev_size=1000)   # a fixed ⌊n/5⌋ test, dev and K per seed
    enc = task.encode(splits, tokenizer)          # input_ids, attention_mask, labels (-100 on the prompt)
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable

from peltc.errors import DataError, Span, UsageError, did_you_mean
from peltc.runtime.data import MAX_LENGTH, hold_out_test, sample_own
from peltc.runtime.own_files import sha256_files

GEN_PREFIX = "gen:"
GEN_BUILTIN = {   # gen:NAME → what it is (gen_examples makes its examples)
    "arith": "additions of two 2–3 digit numbers: '123+45=' → '168'",
}
PROMPT, COMPLETION = "prompt", "completion"
ARITH_POOL = 2500        # gen:arith: examples generated (seed ARITH_SEED); ⌊n/5⌋ of them are the test set
ARITH_SEED = 0


@dataclass(frozen=True)
class GenTask:
    """A generation task for a decoder's ``*ForCausalLM``: prompt → completion pairs, the loss on the
    completion tokens only, scored by exact match of the greedy completion (stripped) with the
    reference. ``gen:arith`` is built in (`gen_examples`, deterministic); ``gen:jsonl:PATH``
    reads a user's JSON Lines of ``{"prompt": …, "completion": …}``, with ``validation`` / ``test`` files of
    the same form when given (``--validation`` / ``--test``). Round-trips through JSON, so a run folder's
    manifest reloads it.

    >>> t = gen_task("gen:arith")
    >>> (t.name, t.main_metric, t.causal_lm)
    ('arith', 'exact_match', True)
    """

    name: str                                   # arith, or the JSONL file's stem
    source: str                                 # "arith", or "jsonl"
    path: str | None = None                     # the JSONL file (absolute)
    max_new_tokens: int = 16                    # greedy decoding budget when scoring (and peltc generate's default)
    validation: str | None = None               # gen:jsonl: the dev set's JSONL file (absolute); None: held out
    test: str | None = None                     # gen:jsonl: the test set's JSONL file (absolute); None: held out
    test_size: int | None = None                # score only the test set's first N examples (None: all)
    data: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)   # e.g. the file's sha256

    causal_lm = True                            # a ``*ForCausalLM``: no task head
    labels = None
    columns = (PROMPT, COMPLETION)
    metrics = ("exact_match",)
    main_metric = "exact_match"
    is_regression = False
    is_pair = False
    num_labels = 0

    @property
    def ref(self) -> str:
        return f"{GEN_PREFIX}{self.source}" + (f":{self.path}" if self.path else "")

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "source": self.source, "path": self.path,
                "max_new_tokens": self.max_new_tokens, "data": self.data,
                **({"validation": self.validation} if self.validation else {}),
                **({"test": self.test} if self.test else {}),
                **({"test_size": self.test_size} if self.test_size else {})}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "GenTask":
        return cls(name=d["name"], source=d["source"], path=d.get("path"),
                   max_new_tokens=int(d.get("max_new_tokens") or 16), data=d.get("data") or {},
                   validation=d.get("validation"), test=d.get("test"), test_size=d.get("test_size"))

    # --- the task.Task protocol ----------------------------------------------------------------
    def prepare_ir(self, ir, mc, ref: str | None):
        """A generation task trains a decoder's ``*ForCausalLM``; ``head { pool mean }`` cannot apply there."""
        _check_causal_lm(ir, mc, ref)
        return ir

    def load(self, data_dir: str | None = None):
        return load_gen(self)[0]

    def sample(self, raw, k, seed: int, dev_size: int):
        splits = sample_own(raw, k, seed, dev_size=dev_size)
        splits["test"] = shrink_test(splits["test"], self.test_size)
        return splits

    def encode(self, splits, tokenizer, max_length: int = MAX_LENGTH):
        return tokenize_gen(splits, tokenizer, max_length=max_length)

    def fit(self, enc) -> "GenTask":
        """gen:jsonl's scoring budget: the longest completion (+ end token) in the tokenised data."""
        if self.source != "jsonl":
            return self
        longest = max(len(ids) - n for s in enc.values() for ids, n in zip(s["input_ids"], s["prompt_length"]))
        return replace(self, max_new_tokens=longest)

    def collator(self, tokenizer):
        from peltc.runtime.generation import gen_collator
        return gen_collator(tokenizer)

    def trainer_metrics(self):
        from peltc.runtime.generation import gen_argmax, gen_metrics
        return gen_metrics, gen_argmax

    def init_head(self, model, settings, train) -> None:
        """A causal LM has no task head to start."""

    def test_warnings(self, predictions, test: dict[str, float], pool: str | None = None) -> list[str]:
        return []

    def score(self, model, tokenizer, test, gates: bool = True):
        """Greedy exact match on the test split, and (``gates``) the mean gates, teacher-forced."""
        from peltc.runtime.generation import evaluate_generation, gen_gates
        metrics = evaluate_generation(model, tokenizer, test, self)
        return metrics, (gen_gates(model, tokenizer, test) if gates else {}), None

    def probe(self, tokenizer, sub, parts: list[list[int]]):
        from peltc.runtime.generation import CompletionProbe
        return CompletionProbe(tokenizer, sub, parts)

    def check_serves(self, command: str, run_dir) -> None:
        """A generation run completes prompts (`peltc generate`); it labels nothing."""
        if command == "predict":
            raise UsageError(f"'{run_dir}' is a generation run ({self.ref}): it completes prompts, it labels "
                             "nothing", code="U132", help=f"peltc generate {run_dir} --prompt \"…\"")

    def run_record(self) -> dict[str, Any]:
        return {"generation": self.to_dict()}

    def artifact_record(self) -> dict[str, Any]:
        return {"task": self.name, "labels": None, "task_type": "generation", "generation": self.to_dict()}

    def eval_split(self, run_dir, run: dict[str, Any], data_dir: str | None, tokenizer, max_length: int):
        """`peltc eval`'s test split (`gen_test_split`), tokenised; and a note when its data changed."""
        import datasets

        test, record = gen_test_split(self)
        before = (run.get("identity") or {}).get("data", {}).get("hashes", {})
        changed = [k for k, h in record.get("hashes", {}).items() if k in before and before[k] != h]
        notes = [f"the generation data ({' and '.join(changed)}) changed since the run: this is not its test "
                 "set"] if changed else []
        return tokenize_gen(datasets.DatasetDict({"test": test}), tokenizer, max_length=max_length)["test"], notes


def gen_task(ref: str) -> GenTask:
    """``gen:arith`` or ``gen:jsonl:PATH`` (the path made absolute; not read here)."""
    rest = ref.strip()[len(GEN_PREFIX):]
    kind, _, path = rest.partition(":")
    if kind.lower() == "jsonl":
        if not path:
            raise UsageError(f"'{ref}' names no file", code="U114", help="--train gen:jsonl:PATH (JSON Lines of "
                                                                         "{\"prompt\": …, \"completion\": …})")
        full = os.path.abspath(os.path.expanduser(path))
        stem = os.path.splitext(os.path.basename(full))[0] or "data"
        return GenTask(name=stem, source="jsonl", path=full, max_new_tokens=32)
    if kind.lower() in GEN_BUILTIN and not path:
        return GenTask(name=kind.lower(), source=kind.lower(), max_new_tokens=6)
    raise UsageError(f"unknown generation task '{ref}'", code="U115",
                     help=did_you_mean(kind.lower(), [*GEN_BUILTIN, "jsonl"], "generation tasks")
                     + "; the forms are gen:arith and gen:jsonl:PATH")


# --- the examples -------------------------------------------------------------------------------

def gen_examples(n: int, seed: int) -> list[dict[str, str]]:
    """``n`` distinct additions of two numbers of 2 or 3 digits (each size equally likely), as
    ``{"prompt": "123+45=", "completion": "168"}``; the same list for the same seed on any machine."""
    import numpy as np

    rng = np.random.default_rng(seed)
    seen: set[str] = set()
    out: list[dict[str, str]] = []
    while len(out) < n:
        a, b = (int(rng.integers(10, 100)) if rng.random() < 0.5 else int(rng.integers(100, 1000)) for _ in "ab")
        prompt = f"{a}+{b}="
        if prompt not in seen:
            seen.add(prompt)
            out.append({"prompt": prompt, "completion": str(a + b)})
    return out


def read_gen_jsonl(path: str | os.PathLike, flag: str = "--train") -> list[dict[str, str]]:
    """The ``{"prompt": …, "completion": …}`` rows of a JSON Lines file (blank lines skipped; other keys
    ignored). A missing or empty file, a line that is not a JSON object, a missing key, or a prompt /
    completion that is not a non-empty string is a DataError naming the file, row and line. ``flag``: the
    option that named the file (--train, --validation, --test), for the message of a missing one."""
    import json

    p = Path(path)
    if not p.is_file():
        what = "--train gen:jsonl:PATH" if flag == "--train" else f"{flag} PATH"
        raise DataError(f"{flag}: generation data file '{path}' not found", code="D101",
                        help=f"{what} reads JSON Lines: one {{\"prompt\": …, \"completion\": …}} per line")
    rows: list[dict[str, str]] = []
    try:
        lines = p.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as e:
        raise DataError(f"cannot read '{path}': {e}", code="D105", span=Span(str(p), 1, 1)) from None
    for line_no, text in enumerate(lines, 1):
        if not text.strip():
            continue
        where = f"{p.name}: row {len(rows) + 1} (line {line_no})"
        try:
            obj = json.loads(text)
        except json.JSONDecodeError as e:
            raise DataError(f"{where}: not valid JSON: {e.msg}", code="D105", span=Span(str(p), line_no, e.colno),
                            help="one JSON object per line: {\"prompt\": \"…\", \"completion\": \"…\"}") from None
        if not isinstance(obj, dict):
            raise DataError(f"{where}: a JSON {type(obj).__name__}, not an object", code="D105",
                            span=Span(str(p), line_no, 1),
                            help="one JSON object per line: {\"prompt\": \"…\", \"completion\": \"…\"}")
        for key in (PROMPT, COMPLETION):
            if key not in obj:
                raise DataError(f"{where}: no '{key}'", code="D104", span=Span(str(p), line_no, 1),
                                help=did_you_mean(key, list(obj), "keys") or f"every row needs '{PROMPT}' and "
                                                                             f"'{COMPLETION}'")
            v = obj[key]
            if not isinstance(v, str) or not v.strip():
                raise DataError(f"{where}: '{key}' is {'empty' if isinstance(v, str) else 'not a string: ' + repr(v)}",
                                code="D110", span=Span(str(p), line_no, 1),
                                help=f"'{PROMPT}' and '{COMPLETION}' must be non-empty strings")
        rows.append({PROMPT: obj[PROMPT], COMPLETION: obj[COMPLETION]})
    if not rows:
        raise DataError(f"{p.name}: the file has no rows", code="D108", span=Span(str(p), 1, 1))
    return rows


_GEN_FLAGS = {"train": "--train", "validation": "--validation", "test": "--test"}


def load_gen(task, roles: Iterable[str] = ("train", "validation", "test")):
    """A generation task's examples: ``(DatasetDict with train — the pool — [, validation] [, test], the
    identity's data record)``. ``gen:arith``: `gen_examples` (ARITH_POOL, seed ARITH_SEED);
    ``gen:jsonl:PATH``: the file's rows, and those of the task's validation and test files when it names
    them (the record holds each file's sha256). ``roles``: the splits to read."""
    import datasets

    if task.source == "jsonl":
        files = {role: path for role, path in (("train", task.path), ("validation", task.validation),
                                               ("test", task.test)) if path and role in roles}
        rows = {role: read_gen_jsonl(path, _GEN_FLAGS[role]) for role, path in files.items()}
        record = {"source": task.ref,
                  **{role: path for role, path in files.items() if role != "train"},
                  "hashes": {role: sha256_files([Path(path)], Path(path).parent) for role, path in files.items()}}
    else:
        rows = {"train": gen_examples(ARITH_POOL, ARITH_SEED)}
        record = {"source": task.ref, "pool": ARITH_POOL, "pool_seed": ARITH_SEED}
    feats = datasets.Features({"prompt": datasets.Value("string"), "completion": datasets.Value("string"),
                               "idx": datasets.Value("int32")})
    return datasets.DatasetDict({role: datasets.Dataset.from_dict(
        {"prompt": [r["prompt"] for r in rs], "completion": [r["completion"] for r in rs],
         "idx": list(range(len(rs)))}, features=feats) for role, rs in rows.items()}), record


def gen_test_split(task):
    """The test split of a generation task (its --test file, else the fixed fifth held out of the training
    data: it does not depend on the seed), for `peltc eval`; and the data record of what was read."""
    if task.source == "jsonl" and task.test:
        raw, record = load_gen(task, roles=("test",))
        return raw["test"], record
    raw, record = load_gen(task, roles=("train",))
    return shrink_test(hold_out_test(raw["train"])[0], task.test_size), record


def shrink_test(test, size: int | None):
    """The test split's first ``size`` examples (in file order; the whole split when ``size`` is None or
    larger): ``--test-size`` makes scoring a generation run quicker, the same examples for every seed."""
    if size is None or size >= len(test):
        return test
    return test.select(range(size))


# --- encoding ---------------------------------------------------------------------------------

def encode_gen(tokenizer, prompt: str, completion: str | None = None, max_length: int | None = None):
    """Token ids of a prompt (with the tokenizer's special tokens, as `peltc generate` encodes it) and, given
    a completion, the completion's (no special tokens) followed by the end-of-sequence token. A prompt
    longer than ``max_length`` loses its start (the completion is kept whole)."""
    p = tokenizer(prompt, add_special_tokens=True)["input_ids"]
    if completion is None:
        return p, None
    c = tokenizer(completion, add_special_tokens=False)["input_ids"]
    if tokenizer.eos_token_id is not None:
        c = [*c, tokenizer.eos_token_id]
    if max_length is not None and len(p) + len(c) > max_length:
        p = p[max(0, len(p) + len(c) - max_length):]
    return p, c


def tokenize_gen(ds, tokenizer, max_length: int = MAX_LENGTH):
    """Every split as a causal-LM example: ``input_ids`` = prompt + completion + end-of-sequence,
    ``labels`` = -100 on the prompt (the loss is on the completion only), ``attention_mask``,
    ``length``, and ``prompt_length`` (where the completion starts). ``prompt`` and ``completion`` stay
    (the Trainer drops them; scoring reads them)."""
    def encode(batch):
        out = {"input_ids": [], "attention_mask": [], "labels": [], "length": [], "prompt_length": []}
        for prompt, completion in zip(batch["prompt"], batch["completion"]):
            p, c = encode_gen(tokenizer, prompt, completion, max_length)
            out["input_ids"].append(p + c)
            out["attention_mask"].append([1] * (len(p) + len(c)))
            out["labels"].append([-100] * len(p) + c)
            out["length"].append(len(p) + len(c))
            out["prompt_length"].append(len(p))
        return out

    return ds.map(encode, batched=True, desc="tokenising")



# --- resolving --train gen:…, reading a run's record -------------------------------------------

def claims(ref: Any) -> bool:
    """``ref`` names a generation task (``gen:arith``, ``gen:jsonl:PATH``), or is a `GenTask`."""
    return isinstance(ref, GenTask) or (isinstance(ref, str) and ref.strip().lower().startswith(GEN_PREFIX))


def resolve(opts, say=print):
    """A generation task (``gen:arith``, ``gen:jsonl:PATH`` [--validation FILE] [--test FILE]): the task,
    its examples (JSONL files are read and checked here, before weights load) and the identity's data
    record (each file's sha256)."""
    from peltc.runtime.task_own import OWN_FLAGS

    task = gen_task(opts.task)
    split_flags = ("validation", "test") if task.source == "jsonl" else ()
    given = [flag for key, flag in OWN_FLAGS.items()
             if key not in split_flags and getattr(opts, key, None) is not None]
    if opts.data_dir is not None:
        given.insert(0, "--data-dir")
    if given:
        raise UsageError(f"{', '.join(given)} {'does' if len(given) == 1 else 'do'} not apply to generation task "
                         f"'{opts.task}'", code="U130",
                         help="a gen:jsonl:PATH file holds prompt / completion pairs (--validation FILE and "
                              "--test FILE name files of the same form); without them its test set is a fixed "
                              "fifth of the pairs, dev and K per seed as for GLUE; gen:arith's splits are built in "
                              "(--test-size N scores only the first N test examples, for any gen: task)")
    task = replace(task, **{key: _gen_file(getattr(opts, key), f"--{key}")
                            for key in split_flags if getattr(opts, key, None) is not None},
                   test_size=getattr(opts, "test_size", None))
    raw, record = load_gen(task)
    if task.test_size is not None:
        record = {**record, "test_size": task.test_size}
    return task, raw, record


def _gen_file(value: str, flag: str) -> str:
    """A --validation / --test value of a gen:jsonl task: a JSON Lines file, as PATH or gen:jsonl:PATH
    (made absolute; read later)."""
    from peltc.runtime.own_files import is_own

    v = value.strip()
    if v.lower().startswith(GEN_PREFIX + "jsonl:"):
        v = v[len(GEN_PREFIX + "jsonl:"):]
    elif v.lower().startswith(GEN_PREFIX) or is_own(v) or v.lower().startswith("glue/"):
        raise UsageError(f"{flag} {value!r}: a generation task's {flag[2:]} set is a JSON Lines file of prompt / "
                         "completion pairs", code="U114", help=f"{flag} PATH (or {flag} gen:jsonl:PATH)")
    if not v:
        raise UsageError(f"{flag} {value!r} names no file", code="U114", help=f"{flag} PATH")
    return os.path.abspath(os.path.expanduser(v))


def _check_causal_lm(ir, mc, ref: str) -> None:
    """A generation task trains a decoder's ``*ForCausalLM``; ``head { pool mean }`` cannot apply there."""
    from peltc.compiler.archs import FAMILIES, family_of
    fam = family_of(mc.config)
    if not (fam.causal and fam.lm_head):
        decoders = ", ".join(n for n, f in FAMILIES.items() if f.causal)
        raise UsageError(f"generation task '{ref}' needs a decoder; model '{mc.ref}' is {fam.name}", code="U131",
                         help=f"pass --model smollm2-135m (or a {decoders} model)")
    if (ir.settings.head or {}).get("pool") == "mean":
        raise UsageError(f"the spec's head {{ pool mean }} applies to classifiers, not to generation task '{ref}'",
                         code="U131", help="remove the head { } block for generation tasks")


def from_record(manifest: dict[str, Any]) -> GenTask | None:
    """The `GenTask` an artifact's manifest records (``generation``), or None when it records none."""
    from peltc.compiler.torch.artifact import read_task_record
    return read_task_record(manifest, "generation", GenTask.from_dict)
