"""Decoder diagrams (Llama, Mistral, Qwen2, Qwen3) follow the family's table: pre-norm blocks
(x → RMSNorm → self-attention → h_A → + x → RMSNorm → gated MLP → h_F → +), the value points where
they are on a decoder (the sub-layer outputs before the residual add), adapters, prefixes and LoRA at
their points, and BitFit only on modules that hold a bias. Also `peltc check` / `peltc show` wording."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest

from peltc.compiler.diagram import bias_modules, diagram_module_nodes, layer_layout
from peltc.compiler.archs import FAMILIES
from peltc.compiler.pipeline import build_ir, check_file
from peltc.compiler.render import render, to_dot
from peltc.compiler.summary import outline, summary

ROOT = Path(__file__).resolve().parents[2]
SMOL = "smollm2-135m"
_COMMON = {"vocab_size": 1000, "hidden_size": 64, "intermediate_size": 96, "num_hidden_layers": 4,
           "num_attention_heads": 4, "num_key_value_heads": 2, "max_position_embeddings": 128}
QWEN2 = {"model_type": "qwen2", **_COMMON}
QWEN3 = {"model_type": "qwen3", **_COMMON, "head_dim": 24}
MISTRAL = {"model_type": "mistral", **_COMMON}
LLAMA_BIASED = {"model_type": "llama", **_COMMON, "attention_bias": True}

UNIPELT_APL = """
adapter ffn_adapter { at layers[*].ffn.output size 48 gate sigmoid(ffn.output) }
prefix kv { at layers[*].attention length 10 mlp 512 gate sigmoid(layer.input) }
lora qv { at layers[*].attention.{query, value} rank 8 gate sigmoid(layer.input) }
"""
EVERY = """
adapter seq_a { at layers[*].attention.output size 8 gate scalar }
adapter par_a { at layers[*].attention.output size 8 placement parallel }
adapter par_f { at layers[*].ffn.output size 8 placement parallel scale 2 }
adapter seq_f { at layers[*].ffn.output size 8 gate sigmoid(ffn.output) }
lora l { at layers[*].attention.{query, key}, layers[*].ffn.{gate, up, down} rank 2 }
"""
needs_dot = pytest.mark.skipif(shutil.which("dot") is None, reason="Graphviz `dot` is not installed")


def dot(text: str, model, tmp_path: Path | None = None, expand: bool = False) -> str:
    ir = build_ir(text, model=model).ir
    if tmp_path is None:
        return to_dot(ir, expand).source
    return render(ir, tmp_path / "d.dot", expand=expand).read_text(encoding="utf-8")   # as `peltc render -o x.dot`


def edges(src: str) -> set[tuple[str, str]]:
    return {(a, b) for a, b in re.findall(r'^\s*"?([^"\s]+)"? -> "?([^"\s]+)"? ', src, re.M)}


def flow_edges(src: str) -> set[tuple[str, str]]:
    """The base data-flow edges (not gates, modules or the residual stream)."""
    return {(a, b) for a, b in re.findall(r'^\s*"?([^"\s]+)"? -> "?([^"\s]+)"? \[color="#707070"\]$', src, re.M)}


def label(src: str, node: str) -> str:
    """The node's declaration: its label and attributes (a node is declared on one line)."""
    m = re.search(rf'^\s*"?{re.escape(node)}"? \[label=(.*)\]$', src, re.M)
    assert m, f"no node {node}"
    return m.group(1)


def module_nodes(src: str, method: str, instance: str) -> list[str]:
    return re.findall(rf'^\s*"?([^"\s]+)"? \[label=<<B>{method} {instance}</B>', src, re.M)


def reaches(es: set[tuple[str, str]], a: str, b: str, avoiding: str | None = None) -> bool:
    """Whether ``b`` is reachable from ``a`` along the edges, not passing through ``avoiding``."""
    seen, todo = {a}, [a]
    while todo:
        x = todo.pop()
        for u, v in es:
            if u == x and v not in seen and v != avoiding:
                seen.add(v)
                todo.append(v)
    return b in seen


# --- the pre-norm block -----------------------------------------------------------------------------
def test_smollm2_unipelt_apl_draws_the_pre_norm_order(tmp_path):
    src = dot((ROOT / "specs" / "unipelt_apl.pelt").read_text(), SMOL, tmp_path)
    es = edges(src)
    # x → RMSNorm → q, k, v → (RoPE on q, k) → attention → o → h_A → + → RMSNorm → gate, up → act → down → h_F
    assert {("L0.input", "L0.attention.norm"), ("L0.attention.norm", "L0.attention.query"),
            ("L0.attention.norm", "L0.attention.key"), ("L0.attention.norm", "L0.attention.value"),
            ("L0.attention.query", "L0.attention.rope"), ("L0.attention.key", "L0.attention.rope"),
            ("L0.attention.rope", "L0.attention"), ("L0.attention.value", "L0.attention"),
            ("L0.attention", "L0.attention.out"), ("L0.attention.out", "L0.attention.output"),
            ("L0.attention.output", "L0.attention.add"), ("L0.attention.add", "L0.ffn.norm"),
            ("L0.ffn.norm", "L0.ffn.gate"), ("L0.ffn.norm", "L0.ffn.up"), ("L0.ffn.gate", "L0.ffn.act"),
            ("L0.ffn.up", "L0.ffn.act"), ("L0.ffn.act", "L0.ffn.down"), ("L0.ffn.down", "L0.ffn.output"),
            ("L0.ffn.add", "final_norm"), ("final_norm", "head")} <= es
    # the residual adds: the block input is added back after each sub-layer
    assert ("L0.input", "L0.attention.add") in es and ("L0.attention.add", "L0.ffn.add") in es
    # RMSNorm before attention and before the MLP: the data flow has no way around them
    flow = flow_edges(src)
    assert reaches(flow, "L0.input", "L0.attention")
    assert not reaches(flow, "L0.input", "L0.attention", avoiding="L0.attention.norm")
    assert not reaches(flow, "L0.attention.add", "L0.ffn.down", avoiding="L0.ffn.norm")
    assert reaches(flow, "L0.attention.output", "L0.ffn.norm")
    assert not reaches(flow, "L0.ffn.norm", "L0.attention.add")     # the add comes before the second norm
    # the modules named as the family names them
    assert "RMSNorm" in label(src, "L0.attention.norm") and "input_layernorm" in label(src, "L0.attention.norm")
    assert "post_attention_layernorm" in label(src, "L0.ffn.norm")
    assert "model.norm" in label(src, "final_norm") and "model.embed_tokens" in label(src, "embeddings")
    assert "mlp.gate_proj" in label(src, "L0.ffn.gate") and "SiLU(gate) · up" in label(src, "L0.ffn.act")
    assert "before the residual add" in label(src, "L0.attention.output")
    assert "before the residual add" in label(src, "L0.ffn.output")
    assert "masked mean over tokens" in label(src, "head") and "score" in label(src, "head")   # the recipe's
    assert "last non-pad token" in label(dot(UNIPELT_APL + "head { pool pooler }", SMOL), "head")
    # nothing of the encoders' post-norm block
    assert "Add &amp; LayerNorm" not in src and "LayerNorm<" not in src and "pooler" not in src


def test_adapters_prefix_and_lora_at_their_points():
    src = dot(UNIPELT_APL, SMOL)
    es = edges(src)
    (adapter,) = module_nodes(src, "adapter", "ffn_adapter")
    # sequential: after the sub-layer output, before the residual add
    assert ("L0.ffn.output", adapter) in es and (adapter, "L0.ffn.add") in es
    assert ("L0.ffn.output", "L0.ffn.add") not in es
    assert ("L0.ffn.output", f"{adapter}.gate") in es                    # σ(ffn.output) reads h_F
    # the prefix beside the attention, its K, V prepended after RoPE
    (prefix,) = module_nodes(src, "prefix", "kv")
    assert prefix == "L0.attention+kv@attention" and ("L0.attention", prefix) in es
    assert 'taillabel="K,V"' in src and "after RoPE" in label(src, prefix)
    assert ("L0.attention.rope", "L0.attention") in es
    assert ("L0.input", f"{prefix}.gate") in es                           # σ(layer.input) reads x
    # LoRA beside q and v
    assert sorted(module_nodes(src, "lora", "qv")) == ["L0.attention.query+qv@attention.query",
                                                       "L0.attention.value+qv@attention.value"]


@pytest.mark.parametrize("model", [QWEN2, QWEN3, MISTRAL, SMOL], ids=["qwen2", "qwen3", "mistral", "llama"])
def test_parallel_and_sequential_adapters_and_gate_lora(model):
    src = dot(EVERY, model)
    es = edges(src)
    (seq_a,), (par_a,) = module_nodes(src, "adapter", "seq_a"), module_nodes(src, "adapter", "par_a")
    (par_f,), (seq_f,) = module_nodes(src, "adapter", "par_f"), module_nodes(src, "adapter", "seq_f")
    # parallel: reads what the sub-layer reads (its normalised input), adds into its output h
    assert ("L0.attention.norm", par_a) in es and (par_a, "L0.attention.output") in es
    assert ("L0.ffn.norm", par_f) in es and (par_f, "L0.ffn.output") in es
    assert re.search(rf'"?L0\.ffn\.norm"? -> "?{re.escape(par_f)}"? \[[^\]]*style=dashed', src)
    # sequential: inline between h and the residual add
    assert ("L0.attention.output", seq_a) in es and (seq_a, "L0.attention.add") in es
    assert ("L0.ffn.output", seq_f) in es and (seq_f, "L0.ffn.add") in es
    # LoRA on ffn.gate (and up, down, query, key), beside each
    for p in ("attention.query", "attention.key", "ffn.gate", "ffn.up", "ffn.down"):
        (node,) = [n for n in module_nodes(src, "lora", "l") if n.startswith(f"L0.{p}+")]
        assert (node, f"L0.{p}") in es or (f"L0.{p}", node) in es
    assert "mlp.gate_proj" in label(src, "L0.ffn.gate+l@ffn.gate")


def test_qwen3_draws_its_per_head_q_and_k_norms():
    src = dot(EVERY, QWEN3)
    es = edges(src)
    assert {("L0.attention.query", "L0.attention.query.norm"), ("L0.attention.key", "L0.attention.key.norm"),
            ("L0.attention.query.norm", "L0.attention.rope"), ("L0.attention.key.norm", "L0.attention.rope")} <= es
    assert "self_attn.q_norm" in label(src, "L0.attention.query.norm")
    assert "L0.attention.query.norm" not in dot(EVERY, QWEN2)          # only where the family has them


def test_the_layout_is_the_familys_data():
    enc = layer_layout(FAMILIES["bert"])
    assert layer_layout(None) is enc and all(b.add is None and b.norm is None for b in enc.blocks)
    for name in ("llama", "mistral", "qwen2", "qwen3"):
        lay = layer_layout(FAMILIES[name])
        assert [b.norm for b in lay.blocks] == ["attention.norm", "ffn.norm"]
        assert [b.add for b in lay.blocks] == ["attention.add", "ffn.add"]
        assert ("ffn.gate", "ffn.up") in lay.blocks[1].rows
        assert ("attention.query.norm" in lay.nodes) == FAMILIES[name].qk_norm


# --- BitFit: only modules that hold a bias ----------------------------------------------------------
def test_bitfit_on_qwen2_names_only_q_k_v():
    ir = build_ir("bitfit b { at all }", model=QWEN2).ir
    nodes = diagram_module_nodes(ir)
    assert nodes == {f"model.layers.{i}.self_attn.{p}_proj" for i in range(4) for p in "qkv"}
    src = to_dot(ir).source
    assert "every bias: query, key, value of each layer" in src
    assert "o_proj" not in src.split("biases of:")[1].split('"')[0]
    ir = build_ir("bitfit b { at layers[*].attention }", model=QWEN2).ir
    src = to_dot(ir).source
    (node,) = module_nodes(src, "bitfit", "b")
    lab = label(src, node)
    assert "biases of query, key, value" in lab and "self_attn.{q_proj, k_proj, v_proj}" in lab
    for absent in ("o_proj", "self_attn<", "mlp", "LayerNorm", "RMSNorm"):
        assert absent not in lab
    ir = build_ir("bitfit b { at layers[0] }", model=QWEN2).ir
    assert bias_modules(FAMILIES["qwen2"], 0, "layer", 4, ir.settings.dims) == \
        [f"model.layers.0.self_attn.{p}_proj" for p in "qkv"]


def test_bitfit_follows_the_configs_bias_flags():
    ir = build_ir("bitfit b { at layers[*].attention }", model=LLAMA_BIASED).ir   # attention_bias: q, k, v, o
    assert diagram_module_nodes(ir) == {f"model.layers.{i}.self_attn.{p}_proj" for i in range(4) for p in "qkvo"}
    assert "biases of query, key, value, out" in to_dot(ir).source


def test_check_and_show_name_the_decoder_modules():
    ir = build_ir("bitfit b { at all }", model=QWEN2).ir
    text = summary(ir, "x.pelt")
    assert "→ model.layers.{0..3}.self_attn.{q_proj, k_proj, v_proj}" in text
    assert "o_proj" not in text and "mlp" not in text and "{self_attn, mlp}" not in text
    shown = outline(ir, "x.pelt")
    assert "all → model.layers.{0..3}.self_attn.{q_proj, k_proj, v_proj}" in shown and "o_proj" not in shown
    assert "4 heads over 2 KV heads" in shown
    ir = build_ir(EVERY, model=QWEN3).ir
    text = summary(ir, "x.pelt")
    assert "attention.{query, key}, ffn.{gate, up, down}" in text          # data-flow order
    assert "→ model.layers.{0..3}.self_attn.{q_proj, k_proj}" in text
    assert "  model.layers.{0..3}.mlp.{gate_proj, up_proj, down_proj}" in text
    assert "→ model.layers.{0..3}.mlp\n" in text                           # adapters ride on the sub-layer
    assert "4 heads of 24 over 2 KV heads" in outline(ir, "x.pelt")


def test_check_show_and_the_diagram_say_where_a_prefix_gate_starts():
    """A decoder starts a prefix gate the spec left without init= at the family's −10: `check`, `show` and the
    gate's diamond say so; a written init=, a non-prefix gate or an encoder get no note."""
    note = "gate starts at bias -10 (σ ≈ 4.5e-05): the llama family's default for a prefix gate"
    ir = build_ir(UNIPELT_APL, model=SMOL).ir
    text, shown = summary(ir, "x.pelt"), outline(ir, "x.pelt")
    assert text.count(note) == 1 and shown.count(note) == 1
    assert text.index("kv ") < text.index(note) < text.index("qv ")           # under the prefix's row
    src = dot(UNIPELT_APL, SMOL)
    (prefix,) = module_nodes(src, "prefix", "kv")
    assert f'"{prefix}.gate" [label="σ(layer.input)\nstarts ≈4.54e-05"' in src
    (adapter,) = module_nodes(src, "adapter", "ffn_adapter")
    assert f'"{adapter}.gate" [label="σ(ffn.output)" ' in src                 # adapters start at σ(0)
    written = UNIPELT_APL.replace("mlp 512 gate sigmoid(layer.input)", "mlp 512 gate sigmoid(layer.input, init=-2)")
    assert "family's default" not in summary(build_ir(written, model=SMOL).ir, "x.pelt")
    assert "family's default" not in summary(build_ir(UNIPELT_APL, model="bert-base-uncased").ir, "x.pelt")


# --- layer groups, files ----------------------------------------------------------------------------
def test_layers_without_modules_are_decoder_layers():
    src = dot("lora l { at layers[-1].ffn.gate }", MISTRAL)
    assert "decoder layer" in src and "encoder layer" not in src
    es = edges(src)
    assert ("L0.input", "L3.input") in es and ("L3.ffn.add", "final_norm") in es


def test_symbolic_diagrams_keep_the_encoder_layout():
    src = dot(UNIPELT_APL, None)
    assert "Add &amp; LayerNorm" in src and "RMSNorm" not in src


@needs_dot
@pytest.mark.parametrize("spec", ["unipelt_apl", "lora", "adapter", "mam_adapter", "prefix"])
def test_decoder_specs_render_to_png(spec, tmp_path):
    ir = check_file(ROOT / "specs" / f"{spec}.pelt", model=SMOL).ir
    png = render(ir, tmp_path / f"{spec}.png", title=f"{spec}.pelt")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ir = check_file(ROOT / "specs" / "bitfit.pelt", model=str(_write(tmp_path / "qwen2.json", QWEN2))).ir
    assert render(ir, tmp_path / "bitfit.svg").stat().st_size > 1000


def _write(path: Path, cfg: dict) -> Path:
    import json
    path.write_text(json.dumps(cfg))
    return path
