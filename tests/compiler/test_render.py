"""`peltc render`: the diagram drawn from the IR — clusters per layer group, a node per module,
gates with their source edges, a legend, collapse vs expand, files written, no model, torch-free."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from peltc.compiler.pipeline import build_ir, check_file
from peltc.compiler.diagram import compact_layers, diagram_module_nodes, layer_groups
from peltc.compiler.render import render, to_dot
from peltc.errors import UsageError

ROOT = Path(__file__).resolve().parents[2]
SPECS = sorted((ROOT / "specs").glob("*.pelt"))
BERT = "bert-base-uncased"

APL = """
adapter ffn_adapter { at layers[*].ffn.output size 48 gate sigmoid(ffn.output) }
prefix kv { at layers[*].attention length 10 gate sigmoid(layer.input) }
lora qv { at layers[*].attention.{query, value} rank 8 gate sigmoid(layer.input) }
"""
MAM = """
prefix kv { at layers[*].attention length 30 }
adapter par { at layers[*].ffn.output size 512 placement parallel scale 4 }
"""
# Inline stand-ins, also rendered when specs/ is empty.
INLINE = {
    "apl": APL,
    "mam": MAM,
    "top": "lora top { at layers[-3..].attention.query }",
    "bitfit_gated": "bitfit b { at layers[*].attention } adapter a { at layers[*].ffn.output gate const(0.5) }",
    "every": "bitfit b { at all gate scalar }",
}

needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz `dot` is not installed")


def dot_source(text: str, model: str | None = BERT, expand: bool = False) -> str:
    return to_dot(build_ir(text, model=model).ir, expand).source


def clusters(src: str) -> list[str]:
    return re.findall(r"subgraph (cluster_L\w+) \{", src)


def layer_clusters(src: str) -> list[str]:
    return [c for c in clusters(src) if re.fullmatch(r"cluster_L(\d+|sym)", c)]


def module_nodes(src: str, method: str, instance: str) -> list[str]:
    """Node ids whose label is a module of ``method instance``."""
    return re.findall(rf'^\s*"?([^"\s]+)"? \[label=<<B>{method} {instance}</B>', src, re.M)


def edges(src: str) -> set[tuple[str, str]]:
    return {(a, b) for a, b in re.findall(r'^\s*"?([^"\s]+)"? -> "?([^"\s]+)"? ', src, re.M)}


# --- structure --------------------------------------------------------------------------------
def test_collapsed_diagram_has_one_layer_cluster_a_node_per_module_and_a_legend():
    src = dot_source(APL)
    assert layer_clusters(src) == ["cluster_L0"]
    assert "layers 0–11 ×12" in src
    assert "cluster_legend" in src
    assert len(module_nodes(src, "lora", "qv")) == 2            # query and value
    assert len(module_nodes(src, "prefix", "kv")) == 1
    assert len(module_nodes(src, "adapter", "ffn_adapter")) == 1
    # the attention block and the feed-forward block are clusters inside the layer
    assert {"cluster_L0_attention", "cluster_L0_ffn"} <= set(clusters(src))


def test_gates_are_diamonds_with_an_edge_from_their_source_point_and_one_to_their_module():
    src = dot_source(APL)
    gates = re.findall(r'^\s*"?([^"\s]+\.gate)"? \[label="([^"]+)"[^\]]*shape=diamond', src, re.M)
    labels = sorted(label for _, label in gates)
    assert labels == ["σ(ffn.output)", "σ(layer.input)", "σ(layer.input)", "σ(layer.input)"]
    es = edges(src)
    for gid, label in gates:
        source = "L0.ffn.output" if label == "σ(ffn.output)" else "L0.input"
        assert (source, gid) in es
        module = gid[: -len(".gate")]
        assert (gid, module) in es or (module, gid) in es        # a row edge may be written right to left


def test_scalar_and_const_gates_have_no_source_edge():
    src = dot_source("adapter a { at layers[*].ffn.output gate scalar } adapter b { at layers[*].attention.output gate const(0.5) }")
    assert 'label="scalar\nstarts 0.5"' in src and 'label="const 0.5"' in src
    assert not [e for e in edges(src) if e[1].endswith(".gate")]


@pytest.mark.parametrize("init,start", [("", "0.5"), ("(init=0.5)", "0.622"), ("(init=-2)", "0.119"),
                                        ("(init=0)", "0.5")])
def test_a_scalar_gate_is_labelled_with_the_value_it_starts_at(init, start):
    """`scalar(init=w)` is σ(w) at the start: init=0.5 starts at 0.62, not 0.5."""
    src = dot_source(f"adapter a {{ at layers[*].ffn.output gate scalar{init} }}")
    assert f'label="scalar\nstarts {start}"' in src
    assert f"so g starts at {start}" in src                     # the tooltip says how


def test_sequential_adapter_is_inline_and_parallel_adapter_reads_the_block_input():
    es = edges(dot_source(APL))
    (seq,) = module_nodes(dot_source(APL), "adapter", "ffn_adapter")
    assert ("L0.ffn.output", seq) in es and (seq, "head") in es   # in the data path, before the head
    src = dot_source(MAM)
    (par,) = module_nodes(src, "adapter", "par")
    es = edges(src)
    assert ("L0.attention.output", par) in es and (par, "L0.ffn.output") in es
    assert ("L0.ffn.output", "head") in es                     # the path itself does not go through it
    assert re.search(rf'"?L0\.attention\.output"? -> "?{re.escape(par)}"? \[[^\]]*style=dashed', src)


def test_parameter_counts_module_paths_and_title():
    src = dot_source(APL)
    assert "75,313 ×12 (incl. gate 769)" in src                 # adapter per layer, gate included
    assert "+ shared MLP 9,857,024" in src                      # the prefix reparameterisation
    assert "trainable 1,410,672" in src and "model bert-base-uncased (bert, 12 layers" in src
    assert 'tooltip="bert.encoder.layer.{0–11}.attention.self.query"' in src
    assert ">attention.self.query</FONT>" in src                 # the small second label line


# --- collapse vs expand -----------------------------------------------------------------------
def test_collapse_groups_identical_layers_and_expand_draws_every_layer():
    text = INLINE["top"]
    ir = build_ir(text, model=BERT).ir
    assert [g.label for g in layer_groups(ir)] == ["layers 0–8 ×9", "layers 9–11 ×3"]
    assert len(layer_groups(ir, expand=True)) == 12
    collapsed, expanded = dot_source(text), dot_source(text, expand=True)
    assert len(layer_clusters(collapsed)) == 2 and len(layer_clusters(expanded)) == 12
    assert len(module_nodes(collapsed, "lora", "top")) == 1
    assert len(module_nodes(expanded, "lora", "top")) == 3
    assert len(module_nodes(dot_source(APL, expand=True), "lora", "qv")) == 24


def test_groups_are_contiguous_runs_in_the_models_order():
    """Identical layers that are not consecutive are not one place in the flow: every group is a
    run of consecutive layers, and groups are drawn top to bottom in layer order."""
    ir = build_ir("adapter a { at layers[0..11 by 2].ffn.output }", model=BERT).ir
    assert [g.layers for g in layer_groups(ir)] == [[i] for i in range(12)]
    ir = build_ir("adapter a { at layers[*].ffn.output layers[0] { size 64 } }", model=BERT).ir
    assert [g.label for g in layer_groups(ir)] == ["layer 0", "layers 1–11 ×11"]
    ir = build_ir("lora l { at layers[2..5].attention.query }", model=BERT).ir
    assert [g.label for g in layer_groups(ir)] == ["layers 0–1 ×2", "layers 2–5 ×4", "layers 6–11 ×6"]
    src = to_dot(ir).source
    assert layer_clusters(src) == ["cluster_L0", "cluster_L2", "cluster_L6"]
    es = edges(src)
    assert ("embeddings", "L0.input") in es and ("L0.input", "L2.input") in es     # (L0 has no modules)
    assert ("L2.ffn.output", "L6.input") in es and ("L6.input", "head") in es


def test_relative_sizes_are_drawn_resolved_and_as_written():
    assert "size 512 (hidden/1.5)" in dot_source(MAM.replace("size 512", "size hidden/1.5"))
    assert "size hidden/1.5" in dot_source(MAM.replace("size 512", "size hidden/1.5"), model=None)


def test_compact_layers():
    assert compact_layers([3]) == "3"
    assert compact_layers(list(range(12))) == "0–11"
    assert compact_layers([1, 3, 5]) == "1–5 by 2"
    assert compact_layers([0, 1, 2, 7, 9]) == "0–2, 7, 9"


# --- whole-model modules, module nodes --------------------------------------------------------
def test_bitfit_everywhere_and_diagram_module_nodes():
    ir = build_ir(INLINE["every"], model=BERT).ir
    nodes = diagram_module_nodes(ir)
    assert len(nodes) == 1 + 12 * 8 + 1                       # embeddings LN, 8 per layer, pooler
    assert {"bert.embeddings.LayerNorm", "bert.pooler.dense", "bert.encoder.layer.11.output.LayerNorm"} <= nodes
    src = to_dot(ir).source
    assert module_nodes(src, "bitfit", "b") and "every bias" in src and 'label="scalar\nstarts 0.5"' in src


def test_diagram_module_nodes_are_the_attachments_modules():
    ir = build_ir(APL, model=BERT).ir
    nodes = diagram_module_nodes(ir)
    assert len(nodes) == 12 * 4
    assert nodes == {a.module_path for a in ir.attachments()}
    ir = build_ir("bitfit b { at layers[2].ffn }", model=BERT).ir
    assert diagram_module_nodes(ir) == {"bert.encoder.layer.2.intermediate.dense", "bert.encoder.layer.2.output.dense",
                                        "bert.encoder.layer.2.output.LayerNorm"}


# --- no model ---------------------------------------------------------------------------------
def test_without_a_model_the_diagram_is_one_symbolic_layer_labelled_by_selector():
    text = APL + "lora top { at layers[-3..].attention.out } bitfit e { at embeddings }"
    ir = build_ir(text).ir
    assert ir.settings.family is None and diagram_module_nodes(ir) == set()
    src = to_dot(ir).source
    assert layer_clusters(src) == ["cluster_Lsym"]
    assert "layers[*]" in src and "layers[-3..]" in src
    assert module_nodes(src, "lora", "top") and module_nodes(src, "bitfit", "e")
    assert len(module_nodes(src, "lora", "qv")) == 2
    (prefix,) = module_nodes(src, "prefix", "kv")
    assert ("Lsym.input", f"{prefix}.gate") in edges(src)     # the gate reads the layer input


# --- files ------------------------------------------------------------------------------------
@needs_dot
@pytest.mark.parametrize("spec", SPECS or [None], ids=[p.name for p in SPECS] or ["no-specs"])
def test_every_spec_renders_to_png_and_svg(spec, tmp_path):
    if spec is None:
        pytest.skip("specs/ is empty")
    ir = check_file(spec, model=BERT).ir
    png = render(ir, tmp_path / f"{spec.stem}.png", title=spec.name)
    svg = render(ir, tmp_path / f"{spec.stem}.svg")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = svg.read_text(encoding="utf-8")
    assert "<svg" in text and "legend" in text


@needs_dot
@pytest.mark.parametrize("name", sorted(INLINE))
def test_inline_specs_render_with_and_without_a_model(name, tmp_path):
    for model in (BERT, None):
        out = render(build_ir(INLINE[name], model=model).ir, tmp_path / f"{name}-{model}.svg")
        assert out.stat().st_size > 1000


def test_dot_output_needs_no_dot_program(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))                  # no `dot` on PATH
    ir = build_ir(APL, model=BERT).ir
    out = render(ir, tmp_path / "sub" / "apl.dot")
    assert out.read_text(encoding="utf-8").startswith("digraph")
    assert render(ir, tmp_path / "apl.gv").exists()
    with pytest.raises(UsageError) as e:
        render(ir, tmp_path / "apl.png")
    assert e.value.diagnostic.code == "U014" and "dot" in e.value.diagnostic.message


def test_unknown_format_is_a_usage_error(tmp_path):
    ir = build_ir(APL).ir
    for out, fmt in ((tmp_path / "x.jpeg", None), (tmp_path / "x", None), (tmp_path / "x.svg", "bmp")):
        with pytest.raises(UsageError) as e:
            render(ir, out, fmt=fmt)
        assert e.value.diagnostic.code == "U015"


@needs_dot
def test_format_argument_overrides_the_suffix(tmp_path):
    out = render(build_ir(APL, model=BERT).ir, tmp_path / "diagram.out", fmt="svg")
    assert out.read_text(encoding="utf-8").lstrip().startswith("<?xml")


def test_render_does_not_import_torch_or_transformers(tmp_path):
    code = f"""
import sys
from peltc.compiler.pipeline import build_ir
from peltc.compiler.render import render, to_dot
ir = build_ir({APL!r}, model="bert-base-uncased").ir
to_dot(ir, expand=True)
render(ir, {str(tmp_path / 'x.dot')!r})
bad = sorted(m for m in ("torch", "transformers") if m in sys.modules)
assert not bad, bad
"""
    subprocess.run([sys.executable, "-c", code], check=True, cwd=ROOT)
