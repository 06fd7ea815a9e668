"""`peltc search` on the embedded journal file: its errors, the heartbeat journal, and two worker processes on
one study with one killed by SIGKILL mid-trial (exactly N complete trials, none stuck, the emitted spec checks
and reproduces its trial's dev metric)."""

from __future__ import annotations

import json
import os
import shlex
import signal
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
import search_helpers as H  # noqa: E402

from peltc.cli import main  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


# --- the heartbeat journal (no training) -------------------------------------------------------------

def test_a_stale_trial_is_failed_once_and_retried_with_its_point(tmp_path):
    """A RUNNING trial whose worker stopped beating: two other workers both look, one marks it FAIL, and the
    retry callback queues its parameters once, as a WAITING trial."""
    import optuna
    from optuna.storages import fail_stale_trials

    from peltc.runtime.study_storage import open_storage
    url = str(tmp_path / "s.journal")
    dead = optuna.create_study(study_name="x", storage=open_storage(url, heartbeat=1, grace=1))
    trial = dead.ask()
    trial.suggest_categorical("rank", ["2", "4"])
    time.sleep(1.5)
    a, b = (optuna.load_study(study_name="x", storage=open_storage(url, heartbeat=1, grace=1)) for _ in range(2))
    fail_stale_trials(a)
    fail_stale_trials(b)
    trials = b.get_trials(deepcopy=False)
    assert [t.state.name for t in trials] == ["FAIL", "WAITING"]
    assert trials[1].params == trials[0].params and trials[1].system_attrs["failed_trial"] == 0


def test_a_live_trial_is_not_stale(tmp_path):
    import optuna

    from peltc.runtime.study_storage import open_storage
    url = str(tmp_path / "s.journal")
    st = optuna.create_study(study_name="x", storage=open_storage(url, heartbeat=1, grace=5))
    st.ask()
    assert open_storage(url, heartbeat=1, grace=5)._get_stale_trial_ids(st._study_id) == []


# --- errors -------------------------------------------------------------------------------------------

@pytest.mark.parametrize("url,code", [("mysql://u@h/db", "U182"), ("postgresql://u@127.0.0.1:1/db", "U183")])
def test_bad_or_unreachable_storage(tmp_path, url, code):
    from peltc.errors import UsageError
    from peltc.runtime.study_storage import open_storage
    with pytest.raises(UsageError) as e:
        open_storage(url)
    assert e.value.diagnostic.code == code
    with pytest.raises(UsageError) as e:
        open_storage(str(tmp_path))            # a folder
    assert e.value.diagnostic.code == "U182"


def test_status_of_an_unknown_study(tmp_path, capsys):
    import optuna

    from peltc.runtime.study_storage import open_storage
    assert main(["search", "--status", "--study", "nope", "--out", str(tmp_path)]) == 2
    assert "[U184]" in capsys.readouterr().err                       # no study file yet
    optuna.create_study(study_name="rte-lora", storage=open_storage(str(tmp_path / "studies.journal")))
    assert main(["search", "--status", "--study", "rte-lor", "--out", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "[U184]" in err and "rte-lora" in err


def test_search_refusals(tmp_path, tiny_dir, capsys):
    data = H.write_data(tmp_path)
    base = ["--train", f"csv:{data}", "--trials", "1", "--study", "s", "--out", str(tmp_path / "o"),
            "--model", str(tiny_dir)]
    assert main(["search", str(ROOT / "specs" / "lora.pelt"), *base]) == 2          # a plain spec
    assert "[U185]" in capsys.readouterr().err
    (tmp_path / "best.pelt").write_text("taken")
    assert main(["search", str(H.write_space(tmp_path)), *base, "--emit", str(tmp_path / "best.pelt")]) == 2
    assert "[U186]" in capsys.readouterr().err
    cont = H.write_space(tmp_path, H.SPACE + "train { lr loguniform(1e-4, 1e-2) }\n")
    assert main(["search", str(cont), *base, "--sampler", "grid"]) == 2
    assert "[U187]" in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_joining_a_study_with_other_settings(tmp_path, tiny_dir, capsys):
    """A worker whose command differs from the study's is refused before it trains anything."""
    import optuna

    from peltc.runtime.search import SearchOptions, open_study, study_settings
    o = SearchOptions(space="s.pelt", task="csv:x.csv", trials=2, study="s", out=str(tmp_path), k="32")
    open_study(o, study_settings(o, H.SPACE), optuna.samplers.RandomSampler(), None)
    data = H.write_data(tmp_path)
    assert main(["search", str(H.write_space(tmp_path)), "--train", f"csv:{data}", "--trials", "2", "--study", "s",
                 "--out", str(tmp_path), "--model", str(tiny_dir), "--k", "64"]) == 2
    err = capsys.readouterr().err
    assert "[U188]" in err and "k: '32' in the study, '64' now" in err


# --- two workers, one killed ---------------------------------------------------------------------------

@pytest.mark.slow
def test_two_workers_one_killed_mid_trial(tmp_path, tiny_dir, capsys):
    """Two `peltc search` processes on one study (the embedded journal file); the one running a trial is
    SIGKILLed once its run folder exists. The other fails the dead trial (heartbeats) and runs its retry;
    the command re-run finds the study done: exactly N complete trials, none RUNNING, each trial's run
    folder its own; --emit writes a concrete spec that checks, and `peltc compile` with the command in its
    header reproduces the trial's dev metric."""
    n, out, emitted = 3, tmp_path / "out", tmp_path / "best.pelt"
    data, space = H.write_data(tmp_path), H.write_space(tmp_path)
    cmd = ["search", str(space), "--train", f"csv:{data}", "--trials", str(n), "--study", "kill", "--out", str(out),
           "--model", str(tiny_dir), "--pruner", "none", "--heartbeat", "1", "--grace", "8", *H.FAST]
    storage = str(out / "studies.journal")
    workers = [H.peltc(*cmd, log=tmp_path / f"w{i}.log") for i in range(2)]
    victim, deadline = None, time.time() + 240
    while victim is None and time.time() < deadline:
        time.sleep(0.5)
        if not Path(storage).is_file():
            continue
        try:
            trials = H.study(storage, "kill").get_trials(deepcopy=False)
        except KeyError:          # the journal file exists, the study is not in it yet
            continue
        for t in trials:
            if t.state.name == "RUNNING" and (Path(t.user_attrs.get("run_dir", "/nonexistent")) / "run.json").is_file():
                victim = t
                break
    assert victim is not None, (tmp_path / "w0.log").read_text()[-3000:]
    pid = victim.user_attrs["pid"]
    os.kill(pid, signal.SIGKILL)
    for w in workers:
        assert w.wait(timeout=400) in (0, -signal.SIGKILL), (tmp_path / "w0.log").read_text()[-3000:]
    assert main([*cmd, "--emit", str(emitted)]) == 0
    st = H.study(storage, "kill")
    s = H.states(st)
    assert s.get("COMPLETE") == n and "RUNNING" not in s and "WAITING" not in s, s
    trials = st.get_trials(deepcopy=False)
    assert trials[victim.number].state.name == "FAIL"
    retried = [t for t in trials if t.system_attrs.get("failed_trial") == victim.number]
    assert len(retried) == 1 and retried[0].state.name == "COMPLETE" and retried[0].params == victim.params
    complete = [t for t in trials if t.state.name == "COMPLETE"]
    assert len({t.user_attrs["run_dir"] for t in complete}) == n
    assert all(json.loads((Path(t.user_attrs["run_dir"]) / "metrics.json").read_text())["final"] for t in complete)
    assert not (Path(victim.user_attrs["run_dir"]) / "metrics.json").exists()   # the dead trial's folder: left alone

    text = emitted.read_text()
    assert "choice(" not in text and main(["check", str(emitted), "--model", str(tiny_dir)]) == 0
    best = max(complete, key=lambda t: t.value)
    command = next(line for line in text.splitlines() if line.startswith("# reproduce: "))
    args = shlex.split(command.removeprefix("# reproduce: "))[2:]
    assert args[0] == emitted.name
    capsys.readouterr()
    assert main(["compile", str(emitted), *args[1:], "--out", str(tmp_path / "again"), "--quiet", "--no-render"]) == 0
    m = json.loads((tmp_path / "again" / "metrics.json").read_text())
    assert m["dev"]["best"][m["main_metric"]] == pytest.approx(best.value)

    assert main(["search", "--status", "--study", "kill", "--out", str(out)]) == 0
    table = capsys.readouterr().out
    assert f"| {victim.number} | FAIL |" in table and f"(retry of {victim.number})" in table
    assert (out / "kill" / "history.png").is_file()
    assert main(["search", "--status", "--study", "kill", "--out", str(out), "--json"]) == 0
    dump = json.loads(capsys.readouterr().out)
    assert dump["study"] == "kill" and dump["settings"]["kind"] == "search"
    rows = {r["number"]: r for r in dump["trials"]}
    assert rows[victim.number]["state"] == "FAIL"
    assert rows[best.number]["value"] == best.value and rows[best.number]["dev"] == best.user_attrs["dev"]
    assert all(r["wall_seconds"] > 0 and r["steps"] >= 1 for r in rows.values() if r["state"] == "COMPLETE")


# --- the engine's rules, without training ------------------------------------------------------------

def test_a_trial_beyond_the_total_or_on_a_taken_grid_point_gives_way(tmp_path):
    """Two workers that both saw a free slot: the later trial is surplus. Two that drew the same grid point:
    the later one gives way too. Neither counts toward the total."""
    import optuna

    from peltc.runtime.search import Surplus, _live, claim, unique
    st = optuna.create_study(study_name="x")
    st.enqueue_trial({"spec": "lora"})
    st.enqueue_trial({"spec": "lora"})
    a, b, c = st.ask(), st.ask(), st.ask()
    claim(a, 2)
    claim(b, 2)
    with pytest.raises(Surplus):
        claim(c, 2)
    st.tell(c, state=optuna.trial.TrialState.FAIL)
    for t in (a, b):
        t.suggest_categorical("spec", ["lora", "adapter"])
    unique(a)                                               # the same point: the earlier trial keeps it
    with pytest.raises(Surplus):
        unique(b)
    st.tell(b, state=optuna.trial.TrialState.FAIL)
    assert [t.number for t in _live(st)] == [0]


def test_each_dev_evaluation_is_reported_and_a_pruned_run_stops_there():
    import optuna
    from types import SimpleNamespace

    from peltc.runtime.search import reporter
    st = optuna.create_study(direction="maximize", pruner=optuna.pruners.ThresholdPruner(lower=0.6))
    trial = st.ask()
    cb = reporter(trial)
    args, control = SimpleNamespace(metric_for_best_model="accuracy"), SimpleNamespace(should_training_stop=False)
    cb.on_evaluate(args, SimpleNamespace(global_step=30), control, metrics={"eval_accuracy": 0.7, "eval_loss": 1.0})
    assert not cb.pruned and not control.should_training_stop
    cb.on_evaluate(args, SimpleNamespace(global_step=60), control, metrics={"eval_accuracy": 0.5})
    assert cb.pruned and cb.pruned_at == 60 and control.should_training_stop
    assert st.trials[0].intermediate_values == {30: 0.7, 60: 0.5}


@pytest.mark.slow
def test_ctrl_c_fails_the_trial_and_queues_its_point_again(tmp_path, tiny_dir):
    """SIGINT mid-trial: the worker ends with 130, its trial is FAIL and its point waits for the next worker."""
    out = tmp_path / "out"
    data, space = H.write_data(tmp_path), H.write_space(tmp_path)
    w = H.peltc("search", str(space), "--train", f"csv:{data}", "--trials", "2", "--study", "int", "--out", str(out),
                "--model", str(tiny_dir), "--pruner", "none", *H.FAST, log=tmp_path / "w.log")
    storage, deadline, running = str(out / "studies.journal"), time.time() + 240, None
    while running is None and time.time() < deadline and w.poll() is None:
        time.sleep(0.5)
        if Path(storage).is_file():
            running = next((t for t in H.study(storage, "int").get_trials(deepcopy=False) if t.state.name == "RUNNING"
                            and (Path(t.user_attrs.get("run_dir", "/nonexistent")) / "run.json").is_file()), None)
    assert running is not None, (tmp_path / "w.log").read_text()[-3000:]
    w.send_signal(signal.SIGINT)
    assert w.wait(timeout=120) == 130, (tmp_path / "w.log").read_text()[-3000:]
    trials = H.study(storage, "int").get_trials(deepcopy=False)
    assert trials[running.number].state.name == "FAIL"
    waiting = [t for t in trials if t.state.name == "WAITING"]
    assert len(waiting) == 1 and waiting[0].params == running.params


def test_a_search_over_a_plugin_method(tmp_path, tiny_dir, capsys):
    """`peltc search` over the VeRA plug-in's rank (the space imports "vera.py" beside it): every grid point is
    trained from its spec saved under --out (its import rebased there), and --emit writes a spec that checks
    where it is written."""
    import shutil

    from peltc.methods import unregister
    spaces, out, emitted = tmp_path / "spaces", tmp_path / "out", tmp_path / "emit" / "best.pelt"
    spaces.mkdir()
    shutil.copy(ROOT / "tests" / "plugins" / "vera.py", spaces / "vera.py")
    space = H.write_space(spaces, 'import "vera.py"\nvera v {\n  at layers[*].attention.value\n  rank choice(2, 4)\n}\n')
    cmd = ["search", str(space), "--train", f"csv:{H.write_data(tmp_path)}", "--trials", "2", "--study", "vera",
           "--out", str(out), "--model", str(tiny_dir), "--sampler", "grid", "--pruner", "none", *H.FAST]
    try:
        assert main([*cmd, "--emit", str(emitted)]) == 0, capsys.readouterr().err
        st = H.study(str(out / "studies.journal"), "vera")
        done = [t for t in st.get_trials(deepcopy=False) if t.state.name == "COMPLETE"]
        assert sorted(int(t.params["v.rank"]) for t in done) == [2, 4]
        assert all((out / "vera" / f"t{t.number:04d}.pelt").read_text().startswith('import "../../spaces/vera.py"')
                   for t in done)
        assert 'import "../spaces/vera.py"' in emitted.read_text()
        assert main(["check", str(emitted), "--model", str(tiny_dir)]) == 0
    finally:
        unregister("vera")


def test_your_own_columns_reach_every_trial_and_the_emitted_command(tmp_path, tiny_dir, capsys):
    """`peltc search --train csv:… --text-column … --label-column …`: the trials read those columns, the study
    keeps them (a worker with other columns is refused, U188), and --emit's reproduce line carries them, quoted
    for a shell (names with spaces)."""
    src = H.write_data(tmp_path).read_text(encoding="utf-8").replace("text,label", "review text,stars", 1)
    data = tmp_path / "own.csv"
    data.write_text(src, encoding="utf-8")
    out, emitted = tmp_path / "out", tmp_path / "best.pelt"
    cmd = ["search", str(H.write_space(tmp_path)), "--train", f"csv:{data}", "--trials", "1", "--study", "own",
           "--out", str(out), "--model", str(tiny_dir), "--pruner", "none", *H.FAST]
    assert main(cmd) != 0                                  # no `text` column: D104 before the study opens
    err = capsys.readouterr().err
    assert "[D104]" in err and "review text" in err and "Traceback" not in err and "Trial" not in err
    assert not (out / "studies.journal").exists()
    cols = ["--text-column", "review text", "--label-column", "stars"]
    assert main([*cmd, *cols, "--study", "own2", "--emit", str(emitted)]) == 0, capsys.readouterr().err
    st = H.study(str(out / "studies.journal"), "own2")
    assert H.states(st).get("COMPLETE") == 1
    assert st.user_attrs["peltc"]["data"] == {"label_column": "stars", "text_column": "review text"}
    reproduce = next(line for line in emitted.read_text().splitlines() if line.startswith("# reproduce: "))
    args = shlex.split(reproduce.removeprefix("# reproduce: "))
    assert args[args.index("--text-column") + 1] == "review text" and args[args.index("--label-column") + 1] == "stars"
    capsys.readouterr()
    assert main([*cmd, *cols, "--task-type", "classification", "--study", "own2"]) == 2
    assert "U188" in capsys.readouterr().err


def test_json_goes_with_status(tmp_path, capsys):
    assert main(["search", "--study", "x", "--json", "--out", str(tmp_path)]) == 2
    assert "[U189]" in capsys.readouterr().err
