"""Hyperparameter sweeps (the Grid AI sweep, open): a grid of training runs in an Optuna study.

``facerec sweep`` takes every ``facerec train`` flag. A value may be a *distribution*, in the
syntax of the Grid AI tutorial; the sweep is the cross product of all of them::

    facerec sweep --max_epochs 10 --learning_rate "uniform(0,0.0001,2)" \\
        --backbone "['resnet18','resnet200d']"                # 2 x 2 = 4 experiments

=====================  =====================================================================
``uniform(a,b,n)``     n values drawn uniformly at random from [a, b], sorted. The draw is
                       deterministic: seeded by ``--seed`` (0 when it is unset or swept) and the
                       flag name, so every worker and every rerun gets the same values. Values
                       are rounded to 4 significant digits (more when that would merge two).
``loguniform(a,b,n)``  the same, uniform in log space (0 < a < b): learning rates, weight decay.
``range(a,b,step)``    ``a, a+step, ...`` below ``b``, like Python's ``range`` (``range(b)`` and
                       ``range(a,b)`` too); floats allowed.
``['a','b']``          these values (a Python-style list; numbers need no quotes; plain words
                       without quotes are read as strings, for shells that ate the quotes).
anything else          a plain value, the same in every experiment.
=====================  =====================================================================

On a flag that takes whole numbers (``--batch_size "uniform(16,64,3)"``) samples are rounded.
Every value is converted and checked exactly as ``facerec train`` would, and bad syntax is a
one-line :class:`~facerec.errors.FacerecError` naming the flag, before anything runs.

How it runs:

* The grid goes to an Optuna study with a :class:`~optuna.samplers.GridSampler`, stored in
  ``runs/<name>/optuna.db`` (SQLite) or in ``--storage URL`` (PostgreSQL, MySQL: any SQLAlchemy
  URL), so that several processes (``--parallel K``) and several machines share it: each
  worker takes a grid point that nobody has finished or started.
* The study keeps the sweep's definition (grid and fixed flags). A worker started with
  ``--study NAME`` and no sweep flags adopts it; one whose flags differ is refused.
* The name (and the study) is ``--name``, else ``sweep-<hash of the sweep's definition>``: the
  same command resumes the same sweep, on this machine or on another sharing ``--storage``.
* A trial that raises is recorded as ``FAIL`` (its error is kept) and the sweep goes on. A new
  invocation retries the grid points that only have failed (or interrupted) trials. A worker
  killed outright leaves its trial ``RUNNING``; the next invocation retries it: at once when the
  worker ran on the same host (its process is gone), else once a heartbeat missing for
  :data:`GRACE_PERIOD` seconds marked it failed.
* Hopeless trials are pruned (:class:`optuna.pruners.MedianPruner`) by a small Lightning callback
  that reports the validation metric after every epoch; a pruned trial stops early.
* Artifacts: ``runs/<name>/<name>-exp<K>/version_<V>/...`` where K is the index of the grid point
  in the cross product (flags in the order of ``facerec train --help``, values in the order
  given) and V is 0, or
  the next free number when a grid point is retried.
* At the end, a table of the trials sorted by the metric and ``Best checkpoint: PATH``.

The training function is looked up once, as ``facerec.training.train`` (``train_fn`` replaces it, in
tests for instance; it must be importable by name for ``--parallel``, which uses spawned
processes).
"""


from facerec.training.sweep.spec import (
                                         DISTRIBUTIONS,
                                         FlagSpec,
                                         SweepSpec,
                                         add_sweep_arguments,
                                         add_train_flags,
                                         expand_flag,
                                         parse_sweep_value,
                                         spec_from_args,
)
from facerec.training.sweep.study import SweepResult, TrialRow, run_sweep
from facerec.training.sweep.table import print_sweep_table

__all__ = [
    "DISTRIBUTIONS",
    "FlagSpec",
    "SweepSpec",
    "SweepResult",
    "TrialRow",
    "add_sweep_arguments",
    "add_train_flags",
    "parse_sweep_value",
    "expand_flag",
    "spec_from_args",
    "run_sweep",
    "print_sweep_table",
]
