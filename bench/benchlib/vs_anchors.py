"""``overhead.py --anchors``: peltc beside the anchors (benchlib.anchor_systems) on one shape, timed through the
anchors' workers (benchlib.workers); peltc vs the fastest anchor per method; ``--combine`` of several results."""

from __future__ import annotations

import copy
import json
import sys
import time
from pathlib import Path
from typing import Any, Callable

from benchlib.anchor_systems import ANCHOR_NOTES, ANCHORS, RUNS_IN, env_of, parse_id
from benchlib.methods import DEFAULT_METHODS
from benchlib.shapes import batch_seq, is_decoder, shape_config
from benchlib.timing import interleave, normalised, paired_ratio, summary
from benchlib.workers import WorkerProcess, rss_subprocess


def anchor_configs(methods: list[str], args, envs: dict[str, str]) -> tuple[list[str], dict[str, list[str]], list[str]]:
    """The configurations of an anchors run: the references of each environment, peltc's method and every
    requested anchor that can run here. Returns (configuration ids, anchors per method, what was skipped)."""
    ids = [f"ref@{env}:finetune" for env in envs] + [f"ref@{env}:base" for env in envs]
    per_method: dict[str, list[str]] = {}
    skipped = []
    for m in methods:
        ids.append(f"peltc@main:{m}")
        per_method[m] = []
        for system, forced in args.anchors:
            if m not in ANCHORS or system not in ANCHORS[m]:
                continue
            env = env_of(system, m, forced)
            if env is None:
                skipped.append(f"{system}@{forced}:{m} (runs only in {', '.join(RUNS_IN[(system, m)])})")
            elif env not in envs:
                skipped.append(f"{system}@{env}:{m} (no --anchor-python)")
            elif f"{system}@{env}:{m}" not in ids:
                ids.append(f"{system}@{env}:{m}")
                per_method[m].append(f"{system}@{env}:{m}")
    return ids, per_method, skipped


def run_anchors(shape: str, args, log: Callable[[str], None]) -> dict:
    """peltc vs the anchors on one shape: one worker process per environment (peltc's interpreter and
    ``--anchor-python``), each holding its configurations; this process only coordinates, sending "time
    configuration X once" round-robin, so configurations in different processes interleave exactly like
    in-process ones and one computes at a time."""
    if is_decoder(shape):
        raise SystemExit(f"--anchors: encoder shapes only (not {shape})")
    t_shape = time.perf_counter()
    methods = [k for k in (args.methods or DEFAULT_METHODS["anchors"]) if k != "finetune"]
    envs = {"main": sys.executable}
    if args.anchor_python:
        envs["anchor"] = args.anchor_python
    ids, per_method, skipped = anchor_configs(methods, args, envs)
    for s in skipped:
        log(f"[{shape}] anchors: skipped {s}")
    bsz, seq = batch_seq(shape, args)
    env_of = {cid: parse_id(cid)[1] for cid in ids}
    workers: dict[str, Any] = {}
    out: dict[str, Any] = {"mode": "anchors", "batch": bsz, "seq": seq, "methods": methods, "envs": {},
                           "skipped": skipped, "notes": {m: ANCHOR_NOTES[m] for m in methods if m in ANCHOR_NOTES},
                           "configs": {cid: {} for cid in ids}}
    res = out["configs"]
    rss_delta = args.rss == "delta"
    try:
        for env, python in envs.items():
            log(f"[{shape}] starting the {env} worker: {python}")
            workers[env] = WorkerProcess(python, env)
            r = workers[env].call({"op": "setup", "shape": shape, "batch": bsz, "seq": seq, "attn": args.attn,
                                   "threads": args.threads})
            out["envs"][env] = r
        cfg = shape_config(shape)
        out["config"] = {"hidden": cfg.hidden_size, "layers": cfg.num_hidden_layers, "heads": cfg.num_attention_heads,
                         "intermediate": cfg.intermediate_size, "vocab": cfg.vocab_size, "attn_implementation": args.attn}
        out["base_params"] = out["envs"]["main"]["base_params"]
        out["rounds"] = {}
        phases = [ph for ph in ("train", "inference") if ph in args.phases]
        phase_budget = args.budget / max(1, len(phases))
        records_by_phase: dict[str, list[dict[str, float]]] = {}
        for phase in phases:
            kind = "train" if phase == "train" else "infer"
            # train: full fine-tuning (the reference) and every method; inference: the base model and every method
            phase_ids = [c for c in ids if not c.endswith(":base" if phase == "train" else ":finetune")]
            for env, w in workers.items():
                mine = [c for c in phase_ids if env_of[c] == env]
                log(f"[{shape}] {phase}: building {len(mine)} configurations in the {env} worker")
                built = w.call({"op": "build", "ids": mine, "phase": kind, "rss_delta": rss_delta})["items"]
                for cid, info in built.items():
                    key = "train_build" if phase == "train" else "served_build"
                    res[cid][key] = info
                    if "error" in info:
                        log(f"[{shape}] {cid}: {info['error']}")
            items: dict[str, Callable[[], Any]] = {}
            for c in phase_ids:
                if "error" in res[c]["train_build" if phase == "train" else "served_build"]:
                    continue
                items[c] = (lambda c=c, w=workers[env_of[c]]: float(w.call({"op": "time", "id": c})["t"]))
            log(f"[{shape}] {phase} phase ({len(items)} configurations, {len(workers)} processes)")
            samples, records = interleave(items, args.warmup, args.rounds, phase_budget, log, phase)
            out["rounds"][phase] = len(records)
            records_by_phase[phase] = records
            ref = "finetune" if phase == "train" else "base"
            for c in items:
                name = "train" if phase == "train" else "infer"
                res[c][f"{name}_ms"] = summary(samples[c])
                own = f"ref@{env_of[c]}:{ref}"
                if c != own and own in items:
                    res[c][f"{name}_ratio_vs_{'finetune' if phase == 'train' else 'base'}"] = paired_ratio(records, c, own)
            for w in workers.values():
                w.call({"op": "drop", "phase": kind})
    finally:
        for w in workers.values():
            w.close()

    out["records"] = {ph: [{k: round(v * 1e3, 3) for k, v in r.items()} for r in recs]    # ms, per round
                      for ph, recs in records_by_phase.items()}

    # --- peak RSS: each configuration again in a fresh process of its environment (or from --rss-from)
    if args.rss_from:
        earlier = json.loads(Path(args.rss_from).read_text())["shapes"].get(shape) or {}
        if (earlier.get("batch"), earlier.get("seq")) != (bsz, seq):
            raise SystemExit(f"--rss-from {args.rss_from}: no {shape} result at batch {bsz} × seq {seq}")
        for cid in ids:
            r = (earlier.get("configs", {}).get(cid) or {}).get("rss")
            if r:
                res[cid]["rss"] = {**r, "from": str(args.rss_from)}
        out["rss_from"] = str(args.rss_from)
    elif args.rss == "subprocess":
        for cid in ids:
            if "error" not in (res[cid].get("train_build") or res[cid].get("served_build") or {}):
                log(f"[{shape}] peak RSS: {cid} (fresh process)")
                res[cid]["rss"] = rss_subprocess(envs[env_of[cid]], {
                    "id": cid, "shape": shape, "batch": bsz, "seq": seq, "attn": args.attn, "threads": args.threads},
                    args.rss_repeats)
    for cid in ids:
        info = res[cid].get("train_build") or res[cid].get("served_build") or {}
        if rss_delta and "rss_delta_mb" in info:
            res[cid]["rss"] = {"mode": "delta", "delta_mb": info["rss_delta_mb"]}

    anchors_compare(out)
    out["rss_mode"] = {"subprocess": f"VmHWM of a fresh process in the configuration's environment (after "
                                     f"importing its library: build + apply + 2 train steps; base: 1 inference), "
                                     f"median of {args.rss_repeats} processes",
                       "delta": "RSS growth of the worker while building + warming each configuration (not a peak)",
                       "none": "not measured"}["subprocess" if args.rss_from else args.rss]
    if args.rss_from:
        out["rss_mode"] += f" — measured by an earlier run ({args.rss_from})"
    out["elapsed_s"] = round(time.perf_counter() - t_shape, 1)
    return out


def anchors_compare(out: dict) -> None:
    """peltc vs each anchor per method, and the fastest anchor, from a shape's ``configs`` and per-round
    ``records`` (an anchors result, or several combined): sets ``compare``, ``targets``, ``env_base_ratio``."""
    res = out["configs"]
    records_by_phase = out.get("records") or {}
    env_of = {cid: parse_id(cid)[1] for cid in res}
    per_method = {m: [cid for cid in res if parse_id(cid)[2] == m and parse_id(cid)[0] not in ("peltc", "ref")]
                  for m in out["methods"]}
    methods = out["methods"]
    compare: dict[str, Any] = {}
    targets: dict[str, Any] = {"train_le_fastest_anchor": {}, "rss_le_anchor": {}}
    for m in methods:
        p = f"peltc@main:{m}"
        c: dict[str, Any] = {"anchors": {}}
        for a in per_method[m]:
            d: dict[str, Any] = {}
            for phase, name, ref in (("train", "train", "finetune"), ("inference", "infer", "base")):
                recs = records_by_phase.get(phase) or []
                if f"{name}_ms" in res[p] and f"{name}_ms" in res[a]:
                    d[f"{name}_ratio"] = paired_ratio(recs, p, a)
                    d[f"{name}_ratio_normalised"] = normalised(recs, p, f"ref@main:{ref}", a, f"ref@{env_of[a]}:{ref}")
            c["anchors"][a] = d
        for name in ("train", "infer"):
            timed = [a for a in per_method[m] if f"{name}_ms" in res[a]]
            if timed and f"{name}_ms" in res[p]:
                fastest = min(timed, key=lambda a: res[a][f"{name}_ms"]["median"])
                c[f"fastest_{name}"] = fastest
                c[f"{name}_ratio"] = c["anchors"][fastest][f"{name}_ratio"]
                c[f"{name}_ratio_normalised"] = c["anchors"][fastest][f"{name}_ratio_normalised"]
        with_rss = [a for a in per_method[m] if "peak_rss_mb" in (res[a].get("rss") or {})]
        if with_rss and "peak_rss_mb" in (res[p].get("rss") or {}):
            lowest = min(with_rss, key=lambda a: res[a]["rss"]["peak_rss_mb"])
            c["lowest_rss"] = lowest
            c["peak_rss_mb"] = {"peltc": res[p]["rss"]["peak_rss_mb"], "anchor": res[lowest]["rss"]["peak_rss_mb"]}
            c["above_import_mb"] = {k: round(res[x]["rss"]["peak_rss_mb"] - res[x]["rss"]["rss_after_import_mb"], 1)
                                    for k, x in (("peltc", p), ("anchor", lowest))}
            targets["rss_le_anchor"][m] = {"met": c["peak_rss_mb"]["peltc"] <= c["peak_rss_mb"]["anchor"],
                                           "anchor": lowest, **c["peak_rss_mb"]}
        if "train_ratio" in c:
            targets["train_le_fastest_anchor"][m] = {"met": c["train_ratio"]["median"] <= 1.0, "anchor": c["fastest_train"],
                                                     "ratio": c["train_ratio"]["median"], "best": c["train_ratio"]["best"]}
        compare[m] = c
    envs_cmp = {}
    for phase, ref in (("train", "finetune"), ("inference", "base")):
        recs = records_by_phase.get(phase) or []
        a, b = f"ref@main:{ref}", f"ref@anchor:{ref}"
        if recs and a in recs[0] and b in recs[0]:
            envs_cmp[f"{ref}_main_vs_anchor"] = paired_ratio(recs, a, b)
    out["env_base_ratio"] = envs_cmp
    out["compare"] = compare
    out["targets"] = {k: v for k, v in targets.items() if v}


def combine_anchor_results(paths: list[Path]) -> dict:
    """One anchors result from several runs (``--combine``): phases run separately on a busy machine, more
    rounds of a phase from another run (pooled: each round was interleaved within its own run, so its
    per-round ratios stay paired), peak RSS from a ``--phases ''`` run, other shapes. Per shape the
    configurations' builds and RSS are merged (a later file's peak RSS wins), the per-round records of each
    phase are concatenated, and times, ratios and peltc vs the anchors are recomputed from them."""
    docs = [(str(pth), json.loads(Path(pth).read_text())) for pth in paths]
    out: dict[str, Any] = {"benchmark": "peltc vs anchors (peft, AdapterHub adapters, BitFit in place), per method",
                           "combined_from": [{"path": pth, "started": d.get("started"), "args": d.get("args"),
                                              "machine": d.get("machine"), "elapsed_s": d.get("elapsed_s"),
                                              "rounds_by_shape": {sh: v.get("rounds") for sh, v in d.get("shapes", {}).items()}}
                                             for pth, d in docs],
                           "method": next((d["method"] for _, d in docs if d.get("method")), None), "shapes": {}}
    for pth, d in docs:
        for shape, s in d.get("shapes", {}).items():
            if s.get("mode") != "anchors":
                raise SystemExit(f"--combine: {pth}: {shape} is not an anchors result")
            t = out["shapes"].setdefault(shape, {k: copy.deepcopy(v) for k, v in s.items()
                                                 if k in ("mode", "batch", "seq", "config", "base_params", "envs")})
            if (t["batch"], t["seq"]) != (s["batch"], s["seq"]):
                raise SystemExit(f"--combine: {pth}: {shape} at batch {s['batch']} × seq {s['seq']}, "
                                 f"earlier {t['batch']} × {t['seq']}")
            for env, e in s["envs"].items():
                if env in t["envs"] and t["envs"][env]["versions"] != e["versions"]:
                    raise SystemExit(f"--combine: {pth}: the {env} environment differs from the earlier run's")
                t["envs"].setdefault(env, e)
            configs = t.setdefault("configs", {})
            for cid, c in s["configs"].items():
                mine = configs.setdefault(cid, {})
                for k in ("train_build", "served_build"):
                    if k in c:
                        mine[k] = c[k]
                if "peak_rss_mb" in (c.get("rss") or {}) or ("rss" in c and "rss" not in mine):
                    mine["rss"] = c["rss"]
            for ph, recs in (s.get("records") or {}).items():
                t.setdefault("records", {}).setdefault(ph, []).extend(recs)
            t["methods"] = t.get("methods", []) + [m for m in s["methods"] if m not in t.get("methods", [])]
            if any("peak_rss_mb" in (c.get("rss") or {}) for c in s["configs"].values()) or "rss_mode" not in t:
                t["rss_mode"] = s["rss_mode"]
            t["skipped"] = sorted(set(t.get("skipped", [])) | set(s.get("skipped", [])))
            t["notes"] = {**t.get("notes", {}), **s.get("notes", {})}
    for s in out["shapes"].values():
        recs_by_phase = s.get("records") or {}
        s["rounds"] = {ph: len(recs) for ph, recs in recs_by_phase.items()}
        for cid, c in s["configs"].items():
            env = parse_id(cid)[1]
            for ph, name, ref in (("train", "train", "finetune"), ("inference", "infer", "base")):
                recs = recs_by_phase.get(ph) or []
                xs = [r[cid] / 1e3 for r in recs if cid in r]
                if xs:
                    c[f"{name}_ms"] = summary(xs)
                    own = f"ref@{env}:{ref}"
                    if cid != own and any(own in r for r in recs):
                        c[f"{name}_ratio_vs_{ref}"] = paired_ratio(recs, cid, own)
        anchors_compare(s)
    startups = [d["startup"] for _, d in docs if "startup" in d]
    if startups:
        out["startup"] = startups[-1]           # a later file's start-up measurement wins, like its peak RSS
    return out
