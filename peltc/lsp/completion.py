"""Completion: methods, each method's parameters, the points a method may attach at, gate forms and
sources, known model names, spec files for `extends` / `import`. The context comes from a lexical scan,
so it works on text that does not parse yet."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from lsprotocol import types as lsp

from peltc.compiler import schema
from peltc.compiler.archs import ALIASES, KNOWN_MODELS, PACKAGED_MODEL
from peltc.lsp.analysis import Analysis, offset_of, same_path
from peltc.lsp.glossary import GATE_DOCS, POINT_DOCS, param_doc, value_text

_TOKEN = re.compile(r'#[^\n]*|"[^"\n]*"?|[{}]|[A-Za-z_][A-Za-z0-9_-]*|\S')


@dataclass
class Context:
    blocks: list[tuple[str, str | None]]   # ("section", keyword) / ("override", keyword) / ("set", prefix)
    line: str                              # the current line up to the cursor, comment removed


def context_at(text: str, line0: int, char0: int) -> Context:
    """The blocks the cursor is in, from a lexical scan (works on text that does not parse yet)."""
    off = offset_of(text, line0, char0)
    upto = text[:off]
    blocks: list[tuple[str, str | None]] = []
    toks: list[str] = []   # the tokens of the current statement / member
    prev_end = 0
    for m in _TOKEN.finditer(upto):
        t = m.group(0)
        if t.startswith("#"):
            continue
        if "\n" in upto[prev_end:m.start()]:   # a new line: a new member or statement
            toks = []
        prev_end = m.end()
        if t == "{":
            if toks and toks[-1] == ".":
                prefix = []
                for x in reversed(toks[:-1]):
                    if x in ("]", " ", ",") or x == "at":
                        break
                    prefix.append(x)
                blocks.append(("set", "".join(reversed(prefix)).lstrip(".")))
            elif toks and toks[0] == "layers" and blocks and blocks[-1][0] == "section":
                blocks.append(("override", blocks[-1][1]))
            else:
                words = [x for x in toks if re.match(r"[A-Za-z_]", x)]
                blocks.append(("section", words[-2] if len(words) >= 2 else words[-1] if words else None))
            toks = []
        elif t == "}":
            if blocks:
                blocks.pop()
            toks = []
        else:
            toks.append(t)
    line = upto[upto.rfind("\n") + 1:]
    line = re.sub(r'#.*$', "", line) if not re.search(r'"[^"]*#', line) else line
    return Context(blocks, line)


def _item(label: str, kind: lsp.CompletionItemKind, detail: str | None = None, doc: str | None = None,
          insert: str | None = None, snippet: bool = False, rng: lsp.Range | None = None,
          sort: str | None = None) -> lsp.CompletionItem:
    text = insert if insert is not None else label
    return lsp.CompletionItem(
        label=label, kind=kind, detail=detail,
        documentation=lsp.MarkupContent(kind=lsp.MarkupKind.Markdown, value=doc) if doc else None,
        text_edit=lsp.TextEdit(range=rng, new_text=text) if rng is not None else None,
        insert_text=None if rng is not None else text,
        insert_text_format=lsp.InsertTextFormat.Snippet if snippet else lsp.InsertTextFormat.PlainText,
        sort_text=sort, filter_text=label if rng is not None else None)


def _models() -> list[str]:
    return sorted({*KNOWN_MODELS, *ALIASES, PACKAGED_MODEL})


def completion(a: Analysis, line0: int, char0: int) -> list[lsp.CompletionItem]:
    text = a.text
    ctx = context_at(text, line0, char0)
    line = ctx.line
    K = lsp.CompletionItemKind
    # the range the completion replaces: the token being typed (delimited by space , ( = { [ ")
    start = max(line.rfind(c) for c in ' \t,({="[') + 1
    rng = lsp.Range(start=lsp.Position(line=line0, character=start), end=lsp.Position(line=line0, character=char0))
    word = line[start:]
    items: list[lsp.CompletionItem] = []

    # spec files for extends / import
    m = re.match(r'^\s*(extends|import)\b.*"([^"]*)$', line)
    if m:
        base = Path(a.path).parent
        typed = m.group(2)
        folder = base / Path(typed).parent if "/" in typed else base
        frng = lsp.Range(start=lsp.Position(line=line0, character=line.rfind('"') + 1),
                         end=lsp.Position(line=line0, character=char0))
        prefix = typed[:typed.rfind("/") + 1]
        try:
            for p in sorted(folder.iterdir()):
                if p.suffix == ".pelt" and not same_path(str(p), a.path):
                    items.append(_item(prefix + p.name, K.File, "spec", rng=frng))
                elif p.is_dir() and not p.name.startswith("."):
                    items.append(_item(prefix + p.name + "/", K.Folder, rng=frng))
        except OSError:
            pass
        return items

    if not ctx.blocks:
        if re.match(r"^\s*model\s+\S*$", line):
            return [_item(n, K.Value, "model", rng=rng) for n in _models()]
        if re.match(r"^\s*remove\s+\w*$", line) and a.ir is not None:
            return [_item(i.name, K.Class, i.method, rng=rng) for i in a.ir.instances()]
        if re.match(r"^\s*import\s+[\w\s,]*$", line) and not re.match(r"^\s*import\s*$", line):
            return [_item("from", K.Keyword, rng=rng)]
        if re.match(r"^\s*\w*$", line):
            for name, meth in schema.METHODS.items():
                at = "" if meth.default_at else f"\n  at ${{2:layers[*].{sorted(meth.points - set(schema.GLOBAL_POINTS) - {schema.WHOLE_LAYER})[0] if meth.points - set(schema.GLOBAL_POINTS) - {schema.WHOLE_LAYER} else 'all'}}}"
                items.append(_item(name, K.Class, meth.doc, f"a new `{name}` instance",
                                   insert=f"{name} ${{1:my_{name}}} {{{at}\n  $0\n}}", snippet=True, rng=rng))
            for kw, snip, detail in [("model", "model ${1:bert-base-uncased}", "the default base model"),
                                     ("extends", 'extends "${1}"', "start from another spec (first statement)"),
                                     ("import", 'import "${1}"', "add the instances of another spec"),
                                     ("remove", "remove ${1}", "drop an inherited instance"),
                                     ("head", "head {\n  pool ${1|mean,pooler|}\n}", "task head settings"),
                                     ("train", "train {\n  $0\n}", "training recipe defaults")]:
                items.append(_item(kw, K.Keyword, detail, insert=snip, snippet=True, rng=rng))
        return items

    kind, keyword = ctx.blocks[-1]
    section_kw = next((k for b, k in reversed(ctx.blocks) if b in ("section", "override")), None)
    method = schema.METHODS.get(section_kw or "")
    if kind == "set" and method is not None:
        prefix = keyword or ""
        tails = sorted({p[len(prefix) + 1:] for p in method.points if p.startswith(prefix + ".")})
        return [_item(t, K.EnumMember, POINT_DOCS.get(f"{prefix}.{t}"), rng=rng) for t in tails]

    if section_kw in ("head", "train"):
        table = schema.HEAD_PARAMS if section_kw == "head" else schema.TRAIN_PARAMS
        m = re.match(r"^\s*(\w+)\s+\S*$", line)
        if m and m.group(1) in table:
            return [_item(c, K.EnumMember, rng=rng) for c in table[m.group(1)].choices]
        if re.match(r"^\s*\w*$", line):
            return [_item(n, K.Property, p.doc, param_doc(n, p, section_kw), rng=rng) for n, p in table.items()]
        return []
    if method is None:
        return []
    in_override = kind == "override"

    gm = re.match(r"^\s*gate\s+(.*)$", line)
    if gm:
        g = gm.group(1)
        if re.search(r"pool\s*=\s*\w*$", g):
            return [_item(p, K.EnumMember, rng=rng) for p in schema.POOLS]
        if re.match(r"^sigmoid\s*\(", g) and ")" not in g:
            return ([_item(s, K.EnumMember, f"gate source: {POINT_DOCS[schema.GATE_SOURCES[s]]}", rng=rng)
                     for s in schema.GATE_SOURCES] +
                    [_item("pool=", K.Property, "masked_mean | mean_unmasked | first", rng=rng),
                     _item("init=", K.Property, "the starting bias (σ(init))", rng=rng)])
        if re.match(r"^scalar\s*\(", g) and ")" not in g:
            return [_item("init=", K.Property, "the starting logit w (σ(w))", rng=rng)]
        if re.match(r"^\w*$", g):
            forms = [("none", "none", "no gate"), ("scalar", "scalar", "one learned scalar σ(w)"),
                     ("const(…)", "const(${1:0.5})", "a constant"),
                     *[(f"sigmoid({s})", f"sigmoid({s})", f"per-example gate read from {s}")
                       for s in schema.GATE_SOURCES]]
            return [_item(lbl, K.Function, det, GATE_DOCS.get(lbl.split("(")[0]), insert=ins, snippet=True, rng=rng)
                    for lbl, ins, det in forms]
        return []

    am = re.match(r"^\s*at\s+(.*)$", line)
    if am:
        tail = am.group(1)
        cur = re.split(r",\s*", tail)[-1]
        lm = re.match(r"^layers\s*\[[^\]]*\]\.?(.*)$", cur)
        layer_points = sorted(p for p in method.points if p in schema.LAYER_POINTS)
        if lm:   # after layers[…].: the points, relative
            if cur.rstrip().endswith("]"):
                return []
            dot = line.rfind(".")
            prng = lsp.Range(start=lsp.Position(line=line0, character=dot + 1 if lm.group(1).count(".") == 0 else
                                                start), end=lsp.Position(line=line0, character=char0))
            sub = lm.group(1)
            if "." in sub:   # `layers[*].attention.` → the tails
                head = sub.rsplit(".", 1)[0]
                prng = lsp.Range(start=lsp.Position(line=line0, character=dot + 1),
                                 end=lsp.Position(line=line0, character=char0))
                return [_item(p[len(head) + 1:], K.EnumMember, POINT_DOCS.get(p), rng=prng)
                        for p in layer_points if p.startswith(head + ".")]
            return [_item(p, K.EnumMember, POINT_DOCS.get(p), rng=prng) for p in layer_points]
        out = [_item(f"layers[*].{p}", K.EnumMember, POINT_DOCS.get(p), insert=f"layers[${{1:*}}].{p}",
                     snippet=True, rng=rng) for p in layer_points]
        if schema.WHOLE_LAYER in method.points:
            out.append(_item("layers[*]", K.EnumMember, POINT_DOCS["layer"], insert="layers[${1:*}]", snippet=True,
                             rng=rng))
        out += [_item(p, K.EnumMember, POINT_DOCS.get(p), rng=rng) for p in sorted(method.points)
                if p in schema.GLOBAL_POINTS]
        return out

    pm = re.match(r"^\s*(\w+)\s+\S*$", line)
    if pm and pm.group(1) in method.params:
        p = method.params[pm.group(1)]
        vals = list(p.choices) + (["none"] if p.type == "int_or_none" else []) + \
            (["hidden/16"] if p.below_hidden else [])
        return [_item(v, K.EnumMember, rng=rng) for v in vals]
    if re.match(r"^\s*\w*$", line):
        for n, p in method.params.items():
            if in_override and p.instance_only:
                continue
            items.append(_item(n, K.Property, p.doc, param_doc(n, p, method.name),
                               insert=f"{n} ${{1:{value_text(p.default) if p.default is not None else ''}}}",
                               snippet=True, rng=rng, sort=f"0{n}"))
        if not in_override:
            items.append(_item("at", K.Keyword, "where it attaches", insert="at ", rng=rng, sort="1at"))
            items.append(_item("layers", K.Keyword, "a per-layer override",
                               insert="layers[${1:-2..}] {\n  $0\n}", snippet=True, rng=rng, sort="1layers"))
        if method.gated:
            items.append(_item("gate", K.Keyword, "the instance's gate", insert="gate ", rng=rng, sort="1gate"))
    return items
