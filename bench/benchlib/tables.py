"""``overhead.py``'s markdown: the Table 4 table and the generation table of a shape, the anchors' tables, the
start-up line."""

from __future__ import annotations

from benchlib.methods import BASE, LABELS


def fmt_count(n: int | None) -> str:
    if n is None:
        return "—"
    if n >= 10**6:
        return f"{n / 1e6:.2f}M"
    if n >= 10**3:
        return f"{n / 1e3:.1f}K"
    return str(n)


def served_table(shapes: dict[str, dict]) -> str:
    """Served inference vs the base model, one row per method and form, one column per shape: median of the
    per-round ratios, best / best, and the per-round spread (min–max)."""
    forms = (("", "served"), ("_unfused", "served, fusions off"), ("_merged", "merged"), ("_unfolded", "prefix unfolded"))
    names = list(shapes)
    head = "| method | form | " + " | ".join(f"{n} × base (best/best) [spread]" for n in names) + " |"
    lines = [head, "|---|---|" + "---:|" * len(names)]
    methods = [k for k in next(iter(shapes.values()))["methods"] if k not in (BASE, "finetune")]
    for k in methods:
        for suffix, form in forms:
            cells = []
            for n in names:
                d = shapes[n]["methods"].get(k, {}).get(f"infer{suffix}_ratio_vs_base")
                cells.append("—" if not d else f"{d['median']:.3f}× ({d['best']:.3f}) [{d['min']:.2f}–{d['max']:.2f}]")
            if any(c != "—" for c in cells):
                label = shapes[names[0]]["methods"][k].get("label", k)
                lines.append(f"| {label} | {form} | " + " | ".join(cells) + " |")
    rounds = "; ".join(f"{n}: {s['rounds'].get('inference', '?')} rounds, base {s['methods'][BASE]['infer_ms']['median']:.0f} ms"
                       for n, s in shapes.items() if "infer_ms" in s["methods"].get(BASE, {}))
    return "\n".join(lines) + f"\n\n({rounds})"


def table(shape: str, s: dict) -> str:
    """The shape's results as a markdown table (Table 4 of the paper, plus memory)."""
    base_params = s["base_params"]
    head = ("| method | trainable (train) | #param (saved) | train step ms | × full FT | inference ms (served) "
            "| × base | × base unfolded | × base merged | peak RSS MB |")
    note = ("ms: median over rounds; ratios: median of per-round ratios (in parentheses: best time / best "
            "time); served = after fold_prefix")
    rounds = ", ".join(f"{ph} {n}" for ph, n in s["rounds"].items())
    lines = [f"**{shape}** — {s.get('architecture', '')}, hidden {s['config']['hidden']}, {s['config']['layers']} layers, "
             f"{s['config']['attn_implementation']}, batch {s.get('batch', '?')} × seq {s.get('seq', '?')}, rounds: {rounds}",
             "", head, "|" + "---|" * 10]

    def ms(d: dict | None) -> str:
        return "—" if not d else f"{d['median']:.0f}" if d["median"] >= 100 else f"{d['median']:.1f}"

    def ratio(d: dict | None) -> str:
        if not d:
            return "—"
        return f"{d['median']:.2f}×" + (f" ({d['best']:.2f})" if "best" in d else "")

    for k, m in s["methods"].items():
        if "unsupported" in m:
            lines.append(f"| {m['label']} | {m['unsupported']} |" + " — |" * 8)
            continue
        rep = m.get("report")
        if rep is None:
            tr, saved = "—", "—"
        elif rep["base_trainable"]:
            n = rep["base_trainable"] + rep["pelt_trainable"]
            tr = saved = f"{fmt_count(n)} ({100 * n / base_params:.0f}%)"
        else:
            tr = fmt_count(rep["pelt_trainable"])
            saved = f"{rep['saved_total']:,} ({100 * rep['saved_total'] / base_params:.2f}%)"
        rss = m.get("rss") or {}
        rss_s = (f"{rss['peak_rss_mb']:.0f}" if "peak_rss_mb" in rss else
                 f"+{rss['delta_mb']:.0f} (delta)" if "delta_mb" in rss else "err" if "error" in rss else "—")
        if k == "finetune":       # served fine-tuned model = the base architecture
            inf, inf_r = "= base", "1.00×"
        else:
            inf, inf_r = ms(m.get("infer_ms")), ratio(m.get("infer_ratio_vs_base"))
        lines.append(f"| {m['label']} | {tr} | {saved} | {ms(m.get('train_ms'))} | "
                     f"{ratio(m.get('train_ratio_vs_finetune'))} | {inf} | {inf_r} | "
                     f"{ratio(m.get('infer_unfolded_ratio_vs_base'))} | {ratio(m.get('infer_merged_ratio_vs_base'))} | "
                     f"{rss_s} |")
    lines.append(f"\n{note}; peak RSS: {s['rss_mode']}")
    for name, t in s["targets"].items():
        if "ratio" in t:
            detail = f"ratio {t['ratio']:.2f}, best/best {t['best']:.2f}"
        else:
            detail = f"slowest PELT {t['worst']:.2f}×" + (f"; slower: {', '.join(t['slower'])}" if t["slower"] else "")
        lines.append(f"\ntarget {name}: {'MET' if t['met'] else 'NOT MET'}" + (f" ({detail})" if detail else ""))
    if "generate" in s:
        lines += ["", generation_table(s)]
    return "\n".join(lines)


def generation_table(s: dict) -> str:
    """Greedy generation per method vs the base model, with and without the KV cache."""
    g = s["generate"]
    lines = [f"generation ({g['architecture']}, greedy): batch {g['batch']} × prompt {g['prompt_tokens']} + "
             f"{g['new_tokens']} new tokens, rounds {g['rounds']}", "",
             "| method | cache: ms/token | × base | + ms/token | decode step ms | × base | + ms | "
             "no cache: ms/token | × base | + ms/token |", "|---|" + "---:|" * 9]

    def num(x) -> str:
        return "—" if x is None else f"{x:+.1f}"

    def ratio(d: dict | None) -> str:
        return "—" if not d else f"{d['median']:.2f}× ({d['best']:.2f})"

    for k, m in s["methods"].items():
        if k == "finetune":
            continue
        if "unsupported" in m:
            lines.append(f"| {m['label']} | {m['unsupported']} |" + " — |" * 8)
            continue
        if "generate" not in m:
            continue
        c, nc = m["generate"]["cache"], m["generate"]["nocache"]
        base = k == BASE
        dec = c.get("decode_ms_per_token")
        dec_s = "—" if not dec else f"{dec['median']:.1f}"
        lines.append(
            f"| {m['label']} | {c['ms_per_token']['median']:.1f} | {'1' if base else ratio(c.get('ratio_vs_base'))} | "
            f"{'—' if base else num(c.get('overhead_ms_per_token'))} | {dec_s} | "
            f"{'1' if base else ratio(c.get('decode_ratio_vs_base'))} | "
            f"{'—' if base else num(c.get('decode_overhead_ms_per_token'))} | {nc['ms_per_token']['median']:.1f} | "
            f"{'1' if base else ratio(nc.get('ratio_vs_base'))} | {'—' if base else num(nc.get('overhead_ms_per_token'))} |")
    lines.append("\nms/token: generate() wall time / new tokens (prefill included; each step makes one token for "
                 "each sequence of the batch); decode step: the mean step after the first token (streamer "
                 "timestamps); + ms: median over rounds of (method − base) in the same round; ratios: median of "
                 "per-round ratios (best / best); served = compiled + fold_prefix")
    return "\n".join(lines)


def anchors_table(shape: str, s: dict) -> str:
    """Every configuration, then peltc vs the fastest anchor per method."""
    def ms(d: dict | None) -> str:
        return "—" if not d else f"{d['median']:.0f}" if d["median"] >= 100 else f"{d['median']:.1f}"

    def ratio(d: dict | None, best: bool = True) -> str:
        if not d:
            return "—"
        return f"{d['median']:.2f}×" + (f" ({d['best']:.2f})" if best and "best" in d else "")

    def rss(d: dict | None) -> str:
        d = d or {}
        return (f"{d['peak_rss_mb']:.0f}" if "peak_rss_mb" in d else f"+{d['delta_mb']:.0f} (delta)" if "delta_mb" in d
                else "err" if "error" in d else "—")

    envs = s["envs"]
    tf = {env: e["versions"].get("transformers") for env, e in envs.items()}
    rounds = ", ".join(f"{ph} {n}" for ph, n in s["rounds"].items())
    env_line = "; ".join(f"{env}: transformers {tf[env]}" + (f", adapters {e['versions']['adapters']}" if e["versions"].get("adapters") else "")
                         + (f", peft {e['versions']['peft']}" if e["versions"].get("peft") else "") for env, e in envs.items())
    lines = [f"**{shape}** vs anchors — hidden {s['config']['hidden']}, {s['config']['layers']} layers, "
             f"{s['config']['attn_implementation']}, batch {s['batch']} × seq {s['seq']}, rounds: {rounds}; {env_line}", "",
             "| configuration | trainable | train step ms | × own FT | served inference ms | × own base | peak RSS MB |",
             "|---|---:|---:|---:|---:|---:|---:|"]
    for cid, c in s["configs"].items():
        build = c.get("train_build") or c.get("served_build") or {}
        if "error" in build:
            lines.append(f"| {cid} | error: {build['error'][:60]} |" + " — |" * 5)
            continue
        n = (c.get("train_build") or {}).get("trainable")
        lines.append(f"| {cid} | {fmt_count(n) if n else '—'} | {ms(c.get('train_ms'))} | "
                     f"{ratio(c.get('train_ratio_vs_finetune'))} | {ms(c.get('infer_ms'))} | "
                     f"{ratio(c.get('infer_ratio_vs_base'))} | {rss(c.get('rss'))} |")
    eb = s.get("env_base_ratio") or {}
    if eb:
        lines.append("\nbase model, main / anchor environment (same shape, same batch): full fine-tuning "
                     f"{ratio(eb.get('finetune_main_vs_anchor'))}, inference {ratio(eb.get('base_main_vs_anchor'))}")
    lines += ["", "peltc vs the fastest anchor per method (ratio = peltc / anchor; normalised = (peltc / main FT or base) "
                  "/ (anchor / its env's FT or base)):", "",
              "| method | train: fastest anchor | peltc / anchor | normalised | served inference: fastest anchor "
              "| peltc / anchor | normalised | peak RSS MB peltc / anchor (above import) | train ≤ 1.00 | RSS ≤ |",
              "|---|---|---:|---:|---|---:|---:|---:|---|---|"]
    tt, tr = s["targets"].get("train_le_fastest_anchor", {}), s["targets"].get("rss_le_anchor", {})
    for m, c in s["compare"].items():
        label = LABELS.get(m, m)
        if not c["anchors"]:
            lines.append(f"| {label} | no anchor here |" + " — |" * 8)
            continue
        pr = c.get("peak_rss_mb")
        above = c.get("above_import_mb")
        rss_s = "—" if not pr else (f"{pr['peltc']:.0f} / {pr['anchor']:.0f} ({above['peltc']:.0f} / {above['anchor']:.0f})"
                                    + (f" [{c['lowest_rss']}]" if c.get("lowest_rss") != c.get("fastest_train") else ""))
        lines.append(f"| {label} | {c.get('fastest_train', '—')} | {ratio(c.get('train_ratio'))} | "
                     f"{ratio(c.get('train_ratio_normalised'), False)} | {c.get('fastest_infer', '—')} | "
                     f"{ratio(c.get('infer_ratio'))} | {ratio(c.get('infer_ratio_normalised'), False)} | {rss_s} | "
                     f"{'—' if m not in tt else 'yes' if tt[m]['met'] else '**no**'} | "
                     f"{'—' if m not in tr else 'yes' if tr[m]['met'] else '**no**'} |")
    lines.append("\nms: median over rounds; ratios: median of per-round ratios (in parentheses: best time / best time); "
                 f"served: peltc fold_prefix, AdapterHub eject_prefix_tuning; peak RSS: {s['rss_mode']}")
    for name, t in s["targets"].items():
        miss = [m for m, v in t.items() if not v["met"]]
        lines.append(f"\ntarget {name}: {'MET' if not miss else 'NOT MET: ' + ', '.join(miss)}")
    if s.get("skipped"):
        lines.append("\nskipped: " + "; ".join(s["skipped"]))
    return "\n".join(lines)


def startup_line(s: dict) -> str:
    if "error" in s:
        return f"start-up: `{s['command']}` failed ({s['error']})"
    ms = s["ms"]
    return (f"start-up: `{s['command']}` median {ms['median'] / 1000:.3f} s wall (min {ms['min'] / 1000:.3f}, "
            f"max {ms['samples'][-1] / 1000:.3f}; {s['runs']} fresh processes) — target ≤ {s['target_s']:.2f} s: "
            f"{'met' if s['met'] else 'missed'}")
