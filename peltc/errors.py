"""Every user-facing error of peltc, defined in one place.

A diagnostic carries a stable code, a message, a source span and a help line. Tests assert on the
structured fields (code, line, column), never on message text. Exit codes are computed here too:

    0  success
    1  spec errors (syntax or semantic; the spec file is wrong)
    2  usage errors (bad command line, missing file, unknown model)
    3  runtime errors (bad checkpoint, bad data file, compile failure on a loaded model)
  130  interrupted by SIGINT (Ctrl-C), 143 by SIGTERM (128 + the signal number, as shells report)
"""

from __future__ import annotations

import difflib
import os
from dataclasses import dataclass
from typing import Iterable, Sequence

EXIT_OK = 0
EXIT_SPEC = 1
EXIT_USAGE = 2
EXIT_RUNTIME = 3


@dataclass(frozen=True)
class ErrorCode:
    """One entry of the registry: a code's kind, its one meaning and the help shown when a raise site
    gives none. ``kind`` is ``error`` / ``warning`` for spec diagnostics, else the PeltError subclass."""

    code: str
    kind: str
    meaning: str
    help: str

    @property
    def exit_code(self) -> int:
        return KIND_EXIT[self.kind]


KIND_EXIT = {"error": EXIT_SPEC, "warning": EXIT_OK, "UsageError": EXIT_USAGE,
             "CompileError": EXIT_RUNTIME, "ArtifactError": EXIT_RUNTIME, "DataError": EXIT_RUNTIME}

# code | kind | meaning | help. One line per code; every code the package raises is here with one meaning
# (tests/test_errors_registry.py checks the raise sites; docs/errors.md is generated from this table).
_TABLE = """
E001|error|unexpected token|check the syntax near the caret (docs/language.md describes it)
E002|error|unexpected character|check the syntax near the caret (docs/language.md describes it)
E003|error|unexpected end of file|close the open brace, bracket or string
E101|error|unknown method|methods: adapter, lora, prefix, prompt, bitfit, ia3, loreft, finetune
E102|error|unknown parameter of a method|docs/language.md lists each method's parameters
E103|error|a parameter value of the wrong type|docs/language.md gives each parameter's type
E104|error|a value out of range (incl. a size not below the hidden size)|docs/language.md gives each parameter's range
E105|error|an instance declared twice (or imported over an existing one)|give each instance its own name
E106|error|a member given twice (parameter, setting, gate or `at`)|keep one of them
E107|error|unknown insertion point|docs/language.md lists the points
E108|error|a method not allowed at that point|docs/language.md lists where each method attaches
E109|error|a layer index out of range for the model|layers count from 0; negative indices count from the end
E110|error|a layer selector that selects no layer|check the range's ends and step
E111|error|unknown gate|gates: none, const(v), scalar, sigmoid(point)
E112|error|unknown gate source|a sigmoid gate reads layer.input, attention.output or ffn.output
E113|error|a gate source not available before the gated module|gate on a value computed earlier in the layer
E114|error|bad gate arguments|docs/language.md gives each gate's form
E115|error|conflicting placements (two prefixes in one block, a bias trained twice, a target repeated)|keep one of them
E116|error|a member not allowed in a per-layer override (`at`, `lr`, prefix `init`, a nested override)|set it on the instance
E117|error|unknown section or setting, or a member its section does not take|docs/language.md lists sections and settings
E118|error|an imported or extended file cannot be read|check the path (relative to the importing spec)
E119|error|an import cycle|a spec cannot extend or import itself
E120|error|an imported instance that the file does not define|import a name the file defines
E121|error|`remove` of an instance that does not exist|remove a name the extended spec defines
E122|error|an override of an extended instance with another method|give the new instance another name
E123|error|the spec's model cannot be resolved|name a known model, a model directory or a config.json
E125|error|a layer step below 1|write a step of 1 or more
E126|error|`model` given twice|keep one `model` line
E127|error|`extends` not the first statement|move `extends` to the top of the spec
E128|error|the model family cannot support it|docs/language.md lists what each family supports
E129|error|a section name missing (method instance) or not allowed (settings section)|write `lora my_lora { ... }` or `train { ... }`
E130|error|a gate on a method that cannot be gated|remove the gate line
E131|error|a method instance without `at`|say where it attaches, e.g. `at layers[*].attention.query`
E140|error|a plug-in file a spec imports (`import "x.py"`) that cannot be read|check the path (relative to the spec)
E141|error|a plug-in a spec imports or names (an entry point) that raises an error when loaded|fix the plug-in (run it with python to see the traceback)
E142|error|a plug-in a spec imports that defines no valid method (or imported by name)|docs/extending.md lists what a Method needs
E143|error|a plug-in a spec imports whose method's name is taken (a built-in's or another plug-in's)|rename the plug-in method
E145|error|LoRA `init pissa` / `init olora` under a learned (scalar or sigmoid) gate|write `gate none` or `gate const(c)`, or `init default`
E150|error|(IA)³ on a linear that LoRA or BitFit also changes|keep one method on that projection (the order of scaling and adding would be ambiguous)
E151|error|a LoReFT instance with no positions (`first 0` and `last 0`)|intervene at some tokens: `first 3`, `last 1`
E155|error|a prompt's `init text` without a (non-empty) text|write `init text` and `text "…"` together
E156|error|a prompt's `text` that its `init` does not read|write `init text`, or remove the `text` line
E160|error|a search-space choice or `optional` where one spec is needed (compile, a file extended or imported)|check the space with `peltc check`, search it with `peltc search`, compile one point of it
E161|error|`optional` on a section that is not a method instance|only an instance may be optional: `optional lora my_lora { ... }`
E162|error|an empty or reversed range, or a loguniform range that reaches 0|write uniform(LOW, HIGH) with LOW < HIGH (loguniform: LOW > 0), intrange(LOW, HIGH) with LOW ≤ HIGH
E163|error|a choice's option given twice|keep one of them
E164|error|a search space too large to check every point|narrow some choices or ranges, or split the space
W201|warning|an instance covers its points unevenly|check the layer selectors and overrides
W202|warning|a parameter that the gate replaces has no effect (LoRA `alpha` under a gate)|remove it, or write `gate none`
W220|warning|a choice of one value (no choice)|write the value itself
A001|ArtifactError|nothing to save: no trainable parameters|compile a spec onto the model before saving
A002|ArtifactError|a folder without an artifact (no adapter/manifest.json)|name a finished run folder or an adapter folder
A003|ArtifactError|a manifest that is corrupt or not peltc's|save the artifact again
A004|ArtifactError|the artifact's weights file is missing|save the artifact again
A005|ArtifactError|the artifact's weights do not match the manifest's checksum|the file was changed or damaged: save the artifact again
A006|ArtifactError|the artifact's weights file cannot be read|check the file, or save the artifact again
A007|ArtifactError|the artifact's tensors differ from those its manifest or IR lists|save the artifact again
A008|ArtifactError|the artifact was trained on another base model|load it onto the base model it was trained on
A009|ArtifactError|the artifact was saved from another spec|load it with the spec it was saved with
A010|ArtifactError|the artifact's tensor names do not match the compiled model|load it onto the model and spec it was saved from
A011|ArtifactError|a tensor's shape or dtype does not match the compiled model|load it onto the model and spec it was saved from
A012|ArtifactError|the artifact's recorded IR or task cannot be read|the artifact comes from another peltc version or is damaged
A013|ArtifactError|a checkpoint's training state does not match the resumed run|resume with the run's own settings, or start again in a new folder
A014|ArtifactError|a checkpoint file is damaged|delete the damaged checkpoint-* folder and resume
A015|ArtifactError|the artifact's gates were trained under other gate semantics|train the run again with this peltc
A020|ArtifactError|not a readable peft LoRA adapter|name a folder that peft's save_pretrained wrote
A021|ArtifactError|a peft adapter with what a peltc spec or this model cannot hold|import adapters on canonical points, without biases
A022|ArtifactError|a peft adapter lacking or mis-shaping what the model trains|import it onto the base model and task it was trained for
A023|ArtifactError|runs trained on different base models|load runs that share one base model
A030|ArtifactError|an artifact that needs a plug-in method which is not loaded|pass --plugin FILE, or install the package providing the method
A031|ArtifactError|the plug-in file of a run's method changed since the run was saved|load the plug-in file the run was saved with
C001|CompileError|the model is already compiled|load a fresh base model
C002|CompileError|the spec was resolved for another model family|compile the spec for this model (`model` line or --model)
C003|CompileError|a module path not found in the model|check that the model matches the spec's family
C004|CompileError|prefix-tuning at a layer whose attention the family cannot wrap|remove the prefix from that layer
C005|CompileError|prefix-tuning cannot switch this model's attention implementation|load a transformers model with attn_implementation='sdpa' or 'eager'
C006|CompileError|bitfit where the module has no bias (or the family no pooler)|attach bitfit where there are biases
C007|CompileError|a sigmoid gate on a global point|gate a point inside a layer
C008|CompileError|the module at a point is not the kind the method wraps|check that the model matches the spec's family
C009|CompileError|merge of modules behind a sigmoid gate|merge runs whose gates are none, const or scalar
C010|CompileError|a layer value read before it was computed|gate on a value computed earlier in the layer
C011|CompileError|a reparameterised prefix whose layers differ in shape|give the prefix one shape over its layers
C012|CompileError|a model not compiled by peltc|call peltc.compile_model first
C013|CompileError|no instance of that name in the compiled model|name an instance of the compiled spec
C014|CompileError|the attention implementation was changed after compiling|keep the implementation compiling set
C015|CompileError|a layer's attention cannot be wrapped for prefix-tuning|load the model with attn_implementation='sdpa' or 'eager'
C016|CompileError|the prefix MLP cannot start at the tokens' keys and values|start the prefix another way (`init`)
C017|CompileError|head { pool mean } on a causal LM|pool mean applies to classifiers
C018|CompileError|a model carrying several runs called without a route|pass route= with one run per example
C019|CompileError|merge or save_adapter on a model routing several runs|merge or save a single run's own model
C045|CompileError|a soft prompt on a model routing several runs (each run's prompt shifts every position)|serve the run on its own model (load_run)
C046|CompileError|a soft prompt with an attention mask that is not (batch, seq)|call the model with a 2-D attention_mask
C047|CompileError|a prompt's `init text` whose text cannot be tokenized (no tokenizer for the model, or no tokens)|load the model from a folder with its tokenizer, or use `init vocab`
C020|CompileError|a run that cannot share the base model with others (finetune, a gated prefix on a decoder)|serve it on its own
C021|CompileError|a method the torch back end does not have|use a method the back end implements
C022|CompileError|a route whose length differs from the batch|give one run per example
C023|CompileError|no runs to attach|give at least one run
C024|CompileError|several runs on a model without its task head|load the base as a task model (with its head)
C025|CompileError|a run's task head tensor missing or of another shape|load runs trained for the same task on the same base
C030|CompileError|a plug-in method whose torch part fails to build its module|fix the plug-in's build function
D101|DataError|a data file or folder not found|check the path
D102|DataError|a row with the wrong number of columns|give every row the header's columns (a field holding the delimiter in double quotes)
D103|DataError|a bad label (missing, not a number, unknown)|fix the row's label
D104|DataError|a missing column or field|name the columns with --text-column / --label-column
D105|DataError|a data file that cannot be parsed|check the file's format
D106|DataError|too few examples for K and the held-out sets|choose a smaller K
D107|DataError|a dataset that cannot be loaded from the Hugging Face Hub|check the name and config, and the network; for GLUE, pass --data-dir DIR (or set $PELT_GLUE_DIR) to the original TSV files
D108|DataError|an empty data file or split|give data with rows
D109|DataError|a column of mixed types|make the column's values one type
D110|DataError|a missing or empty text|every example needs a non-empty text; remove or fill the row
D111|DataError|a run's data changed since it was trained|evaluate on the data the run was trained on
D112|DataError|a row naming no loaded run|name a run by its index or name in each row's `run`
D113|DataError|a classification column with a single label|classification needs at least two labels; or use --task-type regression
U001|UsageError|a spec file cannot be read|check the path
U002|UsageError|unknown or uninstalled model|name a config.json, a model directory or a known name
U003|UsageError|a model config that cannot be read|check the config.json
U004|UsageError|an unsupported architecture|use a model of a family peltc supports (compiler/archs.py)
U006|UsageError|model weights that cannot be loaded|install the model, or allow the Hugging Face Hub
U007|UsageError|nothing to resume (no readable run.json)|resume a folder a run wrote
U008|UsageError|a folder that does not exist|check the path
U009|UsageError|predict's inputs given in a wrong combination|peltc predict takes --text "…" [--text-pair "…"] or --file INPUTS.jsonl [--out]
U010|UsageError|an output folder that is taken (not empty, or holds a run)|choose a new --out folder (or --resume)
U011|UsageError|--resume of a folder that is not this run's|resume with the same spec, model, task and settings
U012|UsageError|Graphviz failed to draw|check the Graphviz installation
U013|UsageError|a task that reads a text pair given one text|give --text-pair too
U014|UsageError|Graphviz not installed (the Python package or the `dot` program)|install graphviz, or write a .dot file
U015|UsageError|an unknown diagram format|name the output .svg, .png, .pdf, .dot or .gv
U101|UsageError|a data source reference that is not one|csv:PATH | json:PATH | disk:DIR | hub:NAME[:CONFIG]
U102|UsageError|the GLUE data directory does not exist|pass --data-dir DIR (or set PELT_GLUE_DIR) holding the GLUE layout
U103|UsageError|a bad K|a positive number of training examples, or 'all'
U104|UsageError|an unknown training setting or option|docs/language.md lists the settings
U105|UsageError|a model with no trainable parameters|the spec must train something
U106|UsageError|an option value that is invalid or out of range|see peltc COMMAND --help
U107|UsageError|a task head without an output bias to initialise|train with head_bias zero
U108|UsageError|no runs recorded in a grid record|run the grid first
U109|UsageError|no specs given|name at least one spec
U110|UsageError|a dataset without the named split|name a split the dataset has
U112|UsageError|one column given two roles|give the text, text pair and label their own columns
U113|UsageError|unknown GLUE task|tasks: cola, sst2, mrpc, qqp, stsb, mnli, qnli, rte
U114|UsageError|a generation data reference that is not a JSON Lines file|gen:jsonl:PATH (JSON Lines of prompt / completion pairs)
U115|UsageError|unknown generation task|the forms are gen:arith and gen:jsonl:PATH
U120|UsageError|an export peft's LoRA format cannot hold|export with --partial, or train specs/lora_peft.pelt (LoRA, head { pool pooler })
U121|UsageError|nothing peft's LoRA format can hold|keep the peltc artifact
U122|UsageError|an export folder with other files|export into a new or empty folder
U123|UsageError|peltc import's outputs or task missing|give -o spec.pelt and/or --out RUN_DIR with --task
U124|UsageError|a run selector naming no loaded run|name a run by its index or name
U125|UsageError|an adapter that does not name its base model|pass --model
U126|UsageError|an adapter's head width differs from the task's labels|pass the task the adapter was trained for
U127|UsageError|a run name that several loaded runs share|select the run by its index
U128|UsageError|labels given to a model routing several runs|compute each run's loss on its own outputs
U130|UsageError|an option that does not apply to the task|drop the option, or name a task it applies to
U131|UsageError|a model or spec that does not fit a generation task|generation needs a decoder and no classifier head
U132|UsageError|a command for the other kind of run (classification / generation)|use predict for classifiers, generate for generation runs
U133|UsageError|two grid tasks with one name|give each task its own name
U134|UsageError|no runs given to load|give at least one run folder
U135|UsageError|names given for a different number of runs|give one name per run
U136|UsageError|a folder that is not a readable run folder (no run.json / metrics.json)|open a folder written by `peltc compile --train`
U137|UsageError|an optional extra that a command needs is not installed|pip install 'peltc[EXTRA]' (the error names it)
U160|UsageError|--report-to naming a logger whose package is not installed|pip install the package, or leave --report-to out
U161|UsageError|peltc merge of a run whose parts do not merge into the base weights|merge runs of LoRA / BitFit with head { pool pooler } (specs/lora_peft.pelt)
U170|UsageError|a plug-in file (--plugin) that cannot be read|check the path
U171|UsageError|a plug-in given to a command (--plugin, an entry point) that raises an error when loaded|fix the plug-in (run it with python to see the traceback)
U172|UsageError|a plug-in given to a command that defines no valid method|docs/extending.md lists what a Method needs
U173|UsageError|a plug-in given to a command whose method's name is taken|rename the plug-in method
U182|UsageError|a study storage that is not a journal file, postgresql:// or sqlite:/// URL|a file path (the embedded journal, one machine) or postgresql://USER@HOST[:PORT]/DB (many machines)
U183|UsageError|a study storage that cannot be reached or opened|start the database server, or check the URL's host, port, user and database (a file: a writable path)
U184|UsageError|a study (or study file) that does not exist|check --study and --storage; `peltc search SPACE --study NAME …` creates it
U185|UsageError|peltc search of a spec without choices|make a value a choice(…) / uniform(…) / loguniform(…) or an instance optional; train a plain spec with peltc compile --train
U186|UsageError|--emit naming a file that exists|name a new file: an emitted spec never overwrites one
U187|UsageError|--sampler grid over a continuous dimension|use --sampler tpe or random, or write the range as choice(…)
U188|UsageError|joining a study with settings other than those it was started with|run the study's own command (same space, task, K, seed, settings), or name a new --study
U189|UsageError|a peltc search option out of range or missing|peltc search SPACE --train TASK --trials N --study NAME (N, --jobs, --heartbeat ≥ 1)
U190|UsageError|a study with no complete trial to emit, or a trial whose run recorded no dev metric|run trials first; --emit writes the best complete trial
U196|UsageError|a --device that is not a device, or a CUDA device that is not there|--device auto (the best available), cpu, cuda or cuda:N
U197|UsageError|a --precision the device cannot run (fp16 on a CPU, bf16 on a GPU without it)|--precision bf16 or fp32 on a CPU; fp16 or fp32 on an older GPU
"""

REGISTRY: dict[str, ErrorCode] = {
    c.code: c for c in (ErrorCode(*(f.strip() for f in row.split("|", 3))) for row in _TABLE.strip().split("\n"))}


def help_for(code: str) -> str | None:
    """The registry's help line for ``code`` (None for an unknown code). With PELTC_STRICT_CODES=1
    (the test suite sets it) an unregistered code is a programming error and raises."""
    entry = REGISTRY.get(code)
    if entry is None and os.environ.get("PELTC_STRICT_CODES") == "1":
        raise AssertionError(f"error code {code!r} is not in the registry (peltc/errors.py)")
    return entry.help if entry else None


@dataclass(frozen=True)
class Span:
    """A 1-based source range. ``end_col`` is exclusive."""

    file: str
    line: int
    col: int
    end_line: int | None = None
    end_col: int | None = None

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"

    def to_dict(self) -> dict:
        return {"file": self.file, "line": self.line, "col": self.col,
                "end_line": self.end_line, "end_col": self.end_col}


# What an error echoes is capped: a source line to ECHO_WIDTH characters around the caret, a message or
# help line to TEXT_WIDTH (a 100 KB line of nested braces must not come back whole).
ECHO_WIDTH = 200
TEXT_WIDTH = 500
ELLIPSIS = "…"


def clip(text: str, width: int = TEXT_WIDTH) -> str:
    """``text`` cut to ``width`` characters, the cut marked with an ellipsis."""
    return text if len(text) <= width else text[:width - 1] + ELLIPSIS


def echo_window(text: str, col: int, width: int, limit: int = ECHO_WIDTH) -> tuple[str, int, int]:
    """The part of a source line an error shows: ``(shown, caret column, caret width)``, 1-based. A line
    longer than ``limit`` is cut to ``limit`` characters around the caret (a quarter of them before it),
    each cut end marked with an ellipsis; the caret still points at the same characters."""
    if len(text) <= limit:
        return text, col, width
    start = max(0, min(col - 1 - limit // 4, len(text) - limit))
    end = min(len(text), start + limit)
    shown = (ELLIPSIS if start else "") + text[start:end] + (ELLIPSIS if end < len(text) else "")
    caret = col - start + (1 if start else 0)
    return shown, caret, max(1, min(width, end - (col - 1)))


@dataclass(frozen=True)
class Diagnostic:
    code: str
    message: str
    span: Span | None = None
    help: str | None = None
    severity: str = "error"  # "error" | "warning" | "note"

    def __post_init__(self) -> None:
        default = help_for(self.code)        # the registry's help line unless the raise site gave one
        if self.help is None:
            object.__setattr__(self, "help", default)
        object.__setattr__(self, "message", clip(self.message))
        if self.help is not None:
            object.__setattr__(self, "help", clip(self.help))

    def render(self, source: str | None = None) -> str:
        where = f"{self.span}: " if self.span else ""
        lines = [f"{self.severity}: {where}{self.message} [{self.code}]"]
        if self.span and source is not None:
            src_lines = source.split("\n")   # as the parser counts lines (not str.splitlines)
            if 1 <= self.span.line <= len(src_lines):
                text = src_lines[self.span.line - 1].rstrip("\r").expandtabs(1)
                num = str(self.span.line)
                width = 1
                if self.span.end_line in (None, self.span.line) and self.span.end_col:
                    width = max(1, self.span.end_col - self.span.col)
                width = min(width, max(1, len(text) - self.span.col + 1))
                shown, col, width = echo_window(text, self.span.col, width)
                lines.append(f" {num} | {shown}")
                lines.append(f" {' ' * len(num)} | {' ' * (col - 1)}{'^' * width}")
        if self.help:
            lines.append(f"help: {self.help}")
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {"code": self.code, "message": self.message, "severity": self.severity,
                "help": self.help, "span": self.span.to_dict() if self.span else None}


class PeltError(Exception):
    """Root of every peltc error. ``exit_code`` says how the CLI ends."""

    exit_code = EXIT_RUNTIME

    def __init__(self, message: str, *, code: str = "E000", span: Span | None = None,
                 help: str | None = None):
        super().__init__(message)
        self.diagnostic = Diagnostic(code=code, message=message, span=span, help=help)

    @property
    def diagnostics(self) -> list[Diagnostic]:
        return [self.diagnostic]

    def render(self, sources: dict[str, str] | None = None) -> str:
        return "\n".join(_render_all(self.diagnostics, sources))

    def _render_traceback_(self) -> list[str]:
        """IPython / Jupyter show this instead of a traceback: the error as `peltc` prints it."""
        return self.render().split("\n")


class SpecError(PeltError):
    """One or more errors in a spec (syntax or semantics). Carries all of them."""

    exit_code = EXIT_SPEC

    def __init__(self, diagnostics: Sequence[Diagnostic], sources: dict[str, str] | None = None):
        diagnostics = list(diagnostics)
        first = diagnostics[0]
        super().__init__(first.message, code=first.code, span=first.span, help=first.help)
        self._diagnostics = diagnostics
        self.sources = dict(sources or {})

    @property
    def diagnostics(self) -> list[Diagnostic]:
        return self._diagnostics

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self._diagnostics if d.severity == "error"]

    def render(self, sources: dict[str, str] | None = None) -> str:
        return "\n".join(_render_all(self.diagnostics, {**self.sources, **(sources or {})}))


class UsageError(PeltError):
    """A bad command line, a missing input file, an unknown model name."""

    exit_code = EXIT_USAGE


class CompileError(PeltError):
    """A valid spec that cannot be applied to the loaded model (e.g. a family lacks a feature)."""


class ArtifactError(PeltError):
    """A checkpoint or adapter artifact that is missing, corrupt or does not match."""


class DataError(PeltError):
    """A data file that is missing or malformed (names the file and line)."""


class Interrupted(BaseException):
    """SIGINT or SIGTERM arrived. A ``BaseException`` (like ``KeyboardInterrupt``), so library code
    that catches ``Exception`` cannot swallow it; the CLI prints its one line and exits with
    ``exit_code`` (128 + the signal number)."""

    def __init__(self, signum: int, message: str = ""):
        import signal as _signal
        self.signum = signum
        self.signame = _signal.Signals(signum).name
        self.exit_code = 128 + signum
        self.explained = bool(message)       # the message says what was kept
        self.message = message or f"interrupted ({self.signame})"
        super().__init__(self.message)

    def render(self, sources: dict[str, str] | None = None) -> str:
        return self.message


def _render_all(diags: Iterable[Diagnostic], sources: dict[str, str] | None) -> list[str]:
    sources = sources or {}
    return [d.render(sources.get(d.span.file) if d.span else None) for d in diags]


def nearest(name: str, choices: Iterable[str], n: int = 3) -> list[str]:
    """The closest valid names to a misspelt one (for help lines)."""
    choices = sorted(set(choices))
    return difflib.get_close_matches(name, choices, n=n, cutoff=0.5)


def did_you_mean(name: str, choices: Iterable[str], what: str = "") -> str:
    choices = sorted(set(choices))
    close = nearest(name, choices)
    listing = ", ".join(choices)
    valid = f"valid {what}: {listing}" if what else f"valid: {listing}"
    if close:
        return f"did you mean {' or '.join(repr(c) for c in close)}? {valid}"
    return valid


def markdown() -> str:
    """docs/errors.md: the registry as a table (`python -m peltc.errors --markdown > docs/errors.md`)."""
    esc = lambda s: s.replace("|", "\\|")   # noqa: E731
    out = ["# Error codes", "",
           "<!-- generated from peltc/errors.py by `python -m peltc.errors --markdown > docs/errors.md`; "
           "do not edit -->", "",
           "Every code peltc reports, with its one meaning. An error prints as "
           "`error: path:line:col: message [CODE]` and a `help:` line (the raise site's own, else the one "
           "below). Exit codes: 0 ok (warnings only), 1 spec errors, 2 usage errors, 3 runtime errors "
           "(compile, artifact, data); 130 / 143 when interrupted, 141 when the reader of stdout goes away.", "",
           "| code | kind | exit | meaning | help |", "|---|---|---|---|---|"]
    for c in sorted(REGISTRY.values(), key=lambda c: ("EWACDU".index(c.code[0]), c.code)):
        out.append(f"| {c.code} | {c.kind} | {c.exit_code} | {esc(c.meaning)} | {esc(c.help)} |")
    return "\n".join(out) + "\n"


if __name__ == "__main__":
    import sys
    if sys.argv[1:] != ["--markdown"]:
        sys.exit("usage: python -m peltc.errors --markdown")
    sys.stdout.write(markdown())
