"""The paper's low-resource protocol, for every kind of task: from the data a task reads (`task.Task.load`)
to the three splits a run trains, selects and reports on; and the sizes every run shares.

    splits = sample(ds, k=100, seed=1)          # GLUE: train (K), dev (1,000 held out), test (GLUE's dev)
    splits = sample_own(ds, k=100, seed=1)      # your own data / generation: a fixed test fifth unless given

Reading the data is each task kind's (`task_glue`, `task_own` with `own_files`, `task_gen`); tokenising too
(`classify.tokenize`, `task_gen.tokenize_gen`).
"""

from __future__ import annotations

from typing import Literal, Union

from peltc.errors import DataError, UsageError

DEV_SIZE = 1000          # training examples held out for checkpoint selection (the paper's protocol)
MAX_LENGTH = 128
TEST_SHARE = 5           # without a test set: every 5th example of a fixed shuffle (⌊n/5⌋, ≥ 1) is the test set
TEST_SEED = 0            # that shuffle's seed: the same test set for every --seed, K and spec (as GLUE's)

K = Union[int, Literal["all"]]


def parse_k(value: str | int) -> K:
    """``100`` / ``"100"`` → 100, ``"all"`` → ``"all"``; anything else is a UsageError."""
    if isinstance(value, int) or (isinstance(value, str) and value.strip().isdigit()):
        k = int(value)
        if k >= 1:
            return k
    elif isinstance(value, str) and value.strip().lower() == "all":
        return "all"
    raise UsageError(f"bad K {value!r}: a positive number of training examples, or 'all'", code="U103")


def sample(ds, k: K, seed: int, dev_size: int = DEV_SIZE):
    """The paper's splits from a DatasetDict with ``train`` and ``dev``:

    - ``dev``: ``dev_size`` training examples held out for checkpoint selection;
    - ``train``: ``k`` further training examples, disjoint from ``dev`` (``"all"``: every other one);
    - ``test``: the original GLUE dev set.

    One permutation of the training set per seed: ``dev`` is its first ``dev_size`` entries and
    ``train`` the next ``k``, so a seed's dev set is the same for every K and its K=100 examples
    are among its K=500. Deterministic: the same seed gives the same examples on any machine.
    """
    import datasets
    import numpy as np

    train = ds["train"]
    n = len(train)
    k = parse_k(k)
    want = dev_size + (1 if k == "all" else k)
    if n < want:
        raise DataError(
            f"the training set has {n} examples; K={k} and a held-out dev set of {dev_size} need {want}",
            code="D106", help="choose a smaller K")
    perm = np.random.default_rng(seed).permutation(n)
    dev_idx = np.sort(perm[:dev_size])
    train_idx = np.sort(perm[dev_size:] if k == "all" else perm[dev_size:dev_size + k])
    return datasets.DatasetDict({
        "train": train.select(train_idx),
        "dev": train.select(dev_idx),
        "test": ds["dev"],
    })


def sample_own(ds, k: K, seed: int, dev_size: int = DEV_SIZE):
    """The splits of your own data, by the GLUE protocol (`sample`):

    - ``test``: the given test set; else a fixed ⌊n/5⌋ (≥ 1) of the training rows — the first ones of
      a shuffle with seed `TEST_SEED`, the same for every seed, K and spec (GLUE's test set is fixed
      too), so runs differ only in what they train and select on;
    - ``dev``: the given validation set; else ``dev_size`` of the remaining rows, held out per seed;
    - ``train``: ``k`` of the remaining rows per seed (``"all"``: every one), nested over K.
    """
    import datasets
    import numpy as np

    pool, test = ds["train"], ds["test"] if "test" in ds else None
    if test is None:
        test, pool = hold_out_test(pool)
    if "validation" not in ds:
        try:
            return sample(datasets.DatasetDict({"train": pool, "dev": test}), k, seed, dev_size)
        except DataError as e:
            raise DataError(e.diagnostic.message.replace("the training set has", "after the test set "
                                                         f"({len(test)}) is held out, the training data has"),
                            code="D106", help="choose a smaller --k or --dev-size, or give --validation FILE "
                                              "(and --test FILE)") from None
    k = parse_k(k)
    n = len(pool)
    if k != "all" and n < k:
        raise DataError(f"the training data has {n} examples{' after the test set is held out' if 'test' not in ds else ''}; "
                        f"K={k} needs {k}", code="D106", help="choose a smaller --k")
    perm = np.random.default_rng(seed).permutation(n)
    idx = np.sort(perm if k == "all" else perm[:k])
    return datasets.DatasetDict({"train": pool.select(idx), "dev": ds["validation"], "test": test})


def hold_out_test(train):
    """(test, rest): ⌊n/5⌋ (≥ 1) rows, the first of a shuffle with seed `TEST_SEED`; both in file order."""
    import numpy as np

    n = len(train)
    if n < 2:
        raise DataError(f"the training data has {n} example: holding out a test set needs at least 2",
                        code="D106", help="add examples, or give a test set with --test FILE")
    perm = np.random.default_rng(TEST_SEED).permutation(n)
    cut = max(1, n // TEST_SHARE)
    return train.select(np.sort(perm[:cut])), train.select(np.sort(perm[cut:]))
