"""Where a study lives (`peltc search`, `peltc grid --storage`): the storage URL → an Optuna storage
with heartbeats and the retry of a crashed worker's trial.

- A **file** (any ``--storage`` without ``://``; the default is ``OUT/studies.journal``, next to the run
  folders): Optuna's `JournalStorage` over a `JournalFileBackend`. Optuna documents the journal file as the
  storage for several processes on one machine (it appends each operation under a file lock, every process
  replays the log), and documents SQLite as *not* fit for parallel optimisation (``RDBStorage``: "We would
  never recommend SQLite3 for parallel optimization"; its FAQ: writers meet "database is locked"). Optuna's
  journal has no heartbeats of its own, so `HeartbeatJournal` adds them through Optuna's own interface
  (`BaseHeartbeat`): a worker's heartbeat is a trial system attribute in the journal, a RUNNING trial whose
  last heartbeat is older than the grace period is stale. Optuna then does the rest unchanged
  (``fail_stale_trials`` before each trial, the retry callback).
- ``postgresql://USER@HOST:PORT/DB`` (many machines): Optuna's `RDBStorage` (SQLAlchemy), with
  its own heartbeats (SQLAlchemy's default driver for it, psycopg 3). ``sqlite:///FILE`` is accepted for one process at a time.

Either way a trial killed mid-run (SIGKILL, a lost machine) stops beating; the next worker to start a trial
marks it FAIL (exactly one does: the journal refuses a second state change of a finished trial, PostgreSQL
updates the row only while it is RUNNING) and `RetryHeartbeatStaleTrialCallback` queues its parameters again as a new
trial, which the next free worker takes. The dead trial's run folder is left as it is.
"""

from __future__ import annotations

import time
from pathlib import Path

from peltc.errors import UsageError

HEARTBEAT_S = 30          # a running trial writes its heartbeat this often (seconds)
GRACE_FACTOR = 4          # … and is stale after this many missed heartbeats
MAX_RETRY = 3             # a crashed trial's parameters are tried again this many times at most
HEARTBEAT_KEY = "peltc:heartbeat"
RDB_SCHEMES = ("postgresql", "sqlite")


def default_storage(out: str | Path) -> str:
    """The embedded default: one journal file for every study run under ``out``."""
    return str(Path(out) / "studies.journal")


def _heartbeat_journal_class():
    from optuna.storages import JournalStorage
    from optuna.storages._heartbeat import BaseHeartbeat   # Optuna's heartbeat interface (RDBStorage's too)
    from optuna.trial import TrialState

    class HeartbeatJournal(JournalStorage, BaseHeartbeat):
        """Optuna's journal storage with heartbeats (see the module's docstring)."""

        def __init__(self, backend, heartbeat_interval: int, grace_period: int, failed_trial_callback) -> None:
            super().__init__(backend)
            self.heartbeat_interval = heartbeat_interval
            self.grace_period = grace_period
            self.failed_trial_callback = failed_trial_callback

        def record_heartbeat(self, trial_id: int) -> None:
            self.set_trial_system_attr(trial_id, HEARTBEAT_KEY, time.time())

        def _get_stale_trial_ids(self, study_id: int) -> list[int]:
            now, stale = time.time(), []
            for t in self.get_all_trials(study_id, deepcopy=False, states=(TrialState.RUNNING,)):
                # a retried trial inherits its dead original's attributes: count from its own start too
                beats = [t.system_attrs.get(HEARTBEAT_KEY), t.datetime_start and t.datetime_start.timestamp()]
                last = max((b for b in beats if b is not None), default=None)
                if last is not None and now - last > self.grace_period:
                    stale.append(t._trial_id)
            return stale

        def get_heartbeat_interval(self) -> int | None:
            return self.heartbeat_interval

        def get_heartbeat_stale_trial_callback(self):
            return self.failed_trial_callback

    return HeartbeatJournal


def open_storage(url: str, *, heartbeat: int = HEARTBEAT_S, grace: int | None = None, retries: int = MAX_RETRY):
    """The Optuna storage behind ``url`` (see the module's docstring), heartbeats every ``heartbeat`` s, a
    trial stale after ``grace`` s (default ``GRACE_FACTOR`` heartbeats). Refuses a URL of another kind
    (U182) and a database that cannot be reached (U183) before any trial starts."""
    import warnings

    import optuna
    from optuna.exceptions import ExperimentalWarning
    optuna.logging.set_verbosity(optuna.logging.WARNING)     # peltc says what happens, a line per trial
    if heartbeat < 1:
        raise UsageError(f"--heartbeat {heartbeat} is out of range", code="U189", help="seconds, ≥ 1")
    grace = grace if grace is not None else GRACE_FACTOR * heartbeat
    retry = retry_callback(retries)
    if "://" not in url:
        from optuna.storages.journal import JournalFileBackend
        path = Path(url)
        if path.is_dir():
            raise UsageError(f"--storage '{url}' is a folder", code="U182",
                             help="a journal file (e.g. runs/search/studies.journal) or postgresql://USER@HOST/DB")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            backend = JournalFileBackend(str(path))
        except OSError as e:
            raise UsageError(f"cannot open the study file '{url}': {e.strerror or e}", code="U183",
                             help="a writable path (one file holds many studies)") from None
        return _heartbeat_journal_class()(backend, heartbeat, grace, retry)
    scheme = url.split("://", 1)[0].split("+", 1)[0].lower()
    if scheme == "postgres":
        url, scheme = "postgresql" + url[len("postgres"):], "postgresql"
    if scheme not in RDB_SCHEMES:
        raise UsageError(f"--storage '{_safe(url)}': '{scheme}' storage is not supported", code="U182",
                         help="a file path (the embedded journal, one machine), postgresql://USER[:PASS]@HOST[:PORT]/DB "
                              "(many machines) or sqlite:///FILE (one process)")
    import sqlalchemy.exc
    from optuna.storages import RDBStorage
    kwargs = {"pool_pre_ping": True} if scheme == "postgresql" else {}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", ExperimentalWarning)
            return RDBStorage(url, engine_kwargs=kwargs, heartbeat_interval=heartbeat, grace_period=grace,
                              heartbeat_stale_trial_callback=retry)
    except sqlalchemy.exc.ArgumentError as e:
        raise UsageError(f"--storage '{_safe(url)}' is not a database URL: {e}", code="U182",
                         help="postgresql://USER[:PASS]@HOST[:PORT]/DB") from None
    except (sqlalchemy.exc.OperationalError, sqlalchemy.exc.InterfaceError) as e:
        first = str(getattr(e, "orig", e)).strip().splitlines()[0] if str(getattr(e, "orig", e)).strip() else type(e).__name__
        raise UsageError(f"cannot reach the study database '{_safe(url)}': {first}", code="U183",
                         help="start the server, or check the host, port, user and database name") from None
    except ImportError as e:
        name = getattr(e.__cause__, "name", None) or "its database driver"
        raise UsageError(f"--storage '{_safe(url)}' needs the package '{name}'", code="U183",
                         help="pip install 'psycopg[binary]' (a dependency of peltc)") from None


def retry_callback(retries: int = MAX_RETRY):
    """Optuna's `RetryHeartbeatStaleTrialCallback`: a crashed trial's parameters queued again as a new trial."""
    import warnings

    from optuna.exceptions import ExperimentalWarning
    from optuna.storages import RetryHeartbeatStaleTrialCallback
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ExperimentalWarning)
        return RetryHeartbeatStaleTrialCallback(max_retry=retries)


def _safe(url: str) -> str:
    """The URL with its password hidden (it is echoed in errors)."""
    if "://" in url and "@" in url.split("://", 1)[1]:
        head, rest = url.split("://", 1)
        cred, host = rest.rsplit("@", 1)
        if ":" in cred:
            return f"{head}://{cred.split(':', 1)[0]}:***@{host}"
    return url


def load_study(storage, name: str, url: str):
    """An existing study by name (U184 when the storage holds none of that name, listing those it holds)."""
    import optuna
    try:
        return optuna.load_study(study_name=name, storage=storage)
    except KeyError:
        names = [s.study_name for s in optuna.get_all_study_summaries(storage, include_best_trial=False)]
        from peltc.errors import did_you_mean
        raise UsageError(f"no study '{name}' in '{_safe(url)}'", code="U184",
                         help=did_you_mean(name, names, "studies") if names else "the storage holds no study yet: "
                              "`peltc search SPACE --study NAME …` creates it") from None
