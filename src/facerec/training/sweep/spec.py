"""What a sweep is: the distribution syntax, the train flags as the sweep takes them, and the
grid (:class:`SweepSpec`)."""

from __future__ import annotations

import argparse
import ast
import hashlib
import json
import math
import random
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from facerec.errors import FacerecError
from facerec.safeio import first_line

DISTRIBUTIONS = ("uniform", "loguniform", "range")
SPEC_VERSION = 1
MAX_GRID = 100_000
MAX_VALUES = 10_000  # per flag

_CALL_RE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*\((.*)\)", re.S)
_BARE_RE = re.compile(r"[A-Za-z0-9_.:/+-]+")
_SCALAR = (str, int, float, bool, type(None))


# ------------------------------------------------------------------------------------ syntax
def _number_args(inner: str, flag: str, text: str) -> list[float | int]:
    if not inner.strip():
        return []
    try:
        node = ast.parse(f"({inner},)", mode="eval").body
    except SyntaxError:
        raise FacerecError(f"{flag}: cannot read the numbers in {text!r}") from None
    out: list[float | int] = []
    for elt in getattr(node, "elts", [node]):
        try:
            value = ast.literal_eval(elt)
        except (ValueError, SyntaxError, TypeError):
            value = None
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise FacerecError(f"{flag}: {ast.unparse(elt)!r} in {text!r} is not a number")
        out.append(value)
    return out


def _round_samples(values: list[float]) -> list[float]:
    for digits in (4, 6, 8, 10, 12, 17):
        rounded = [float(f"{v:.{digits}g}") for v in values]
        if len(set(rounded)) == len(set(values)):
            return rounded
    return values  # pragma: no cover


def _sample(kind: str, a: float, b: float, n: int, flag: str, seed: int) -> list[float]:
    rng = random.Random(f"facerec-sweep/{seed}/{flag}/{kind}/{a!r}/{b!r}/{n}")
    if kind == "uniform":
        draws = [rng.uniform(a, b) for _ in range(n)]
    else:
        draws = [math.exp(rng.uniform(math.log(a), math.log(b))) for _ in range(n)]
    return sorted(_round_samples(draws))


def _frange(args: list[float | int], flag: str, text: str) -> list[float | int]:
    if not 1 <= len(args) <= 3:
        raise FacerecError(f"{flag}: range takes 1 to 3 numbers (range(b), range(a,b) or "
                           f"range(a,b,step)), got {len(args)} in {text!r}")
    a, b, step = (0, args[0], 1) if len(args) == 1 else (args[0], args[1], args[2] if len(args) == 3 else 1)
    if step == 0:
        raise FacerecError(f"{flag}: the step of {text!r} is 0")
    if all(isinstance(x, int) for x in (a, b, step)):
        count = len(range(a, b, step))
        values: list[float | int] = list(range(a, b, step)) if count <= MAX_VALUES else []
    else:
        count = max(0, math.ceil((b - a) / step - 1e-9))
        values = [round(a + i * step, 12) for i in range(count)] if count <= MAX_VALUES else []
    if count == 0:
        raise FacerecError(f"{flag}: {text!r} is empty")
    if count > MAX_VALUES:
        raise FacerecError(f"{flag}: {text!r} has {count} values (at most {MAX_VALUES})")
    return values


def _parse_list(text: str, flag: str) -> list:
    s = text.strip()
    if not s.endswith("]"):
        raise FacerecError(f"{flag}: unclosed list {text!r}: write it like \"['resnet18','resnet200d']\"")
    try:
        value = ast.literal_eval(s)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        # quotes eaten by the shell ([resnet18,resnet200d]): plain words are strings
        items = [x.strip() for x in s[1:-1].split(",")]
        if not all(_BARE_RE.fullmatch(x) for x in items):
            raise FacerecError(f"{flag}: cannot read the list {text!r}: write it like "
                               "\"['resnet18','resnet200d']\" or \"[0.001, 0.01]\"") from None
        value = []
        for x in items:
            try:
                v = ast.literal_eval(x)
            except (ValueError, SyntaxError):
                v = x
            value.append(v if isinstance(v, (int, float)) and not isinstance(v, bool) else x)
    if not isinstance(value, list):
        raise FacerecError(f"{flag}: {text!r} is not a list")
    if not value:
        raise FacerecError(f"{flag}: the list {text!r} is empty")
    for v in value:
        if not isinstance(v, _SCALAR):
            raise FacerecError(f"{flag}: {v!r} in {text!r} is not a plain value (a string or a number)")
    if len(value) > MAX_VALUES:
        raise FacerecError(f"{flag}: {text!r} has {len(value)} values (at most {MAX_VALUES})")
    return value


def parse_sweep_value(text: str, flag: str = "value", *, seed: int = 0) -> list | None:
    """The values a flag's TEXT stands for, or ``None`` for a plain value (no distribution).

    ``uniform(a,b,n)``, ``loguniform(a,b,n)``, ``range(a,b,step)``, ``['a','b']``; see the module
    docstring. Raises :class:`FacerecError` (naming FLAG) on bad syntax. No ``eval``: lists are read
    with :func:`ast.literal_eval`, arguments must be number literals.
    """
    if not isinstance(text, str):
        return None
    s = text.strip()
    if s.startswith("["):
        return _parse_list(s, flag)
    m = _CALL_RE.fullmatch(s)
    if m is None:
        if re.match(r"(uniform|loguniform|range)\s*\(", s):
            raise FacerecError(f"{flag}: unclosed parenthesis in {text!r}")
        return None
    kind, inner = m.group(1), m.group(2)
    if kind not in DISTRIBUTIONS:
        raise FacerecError(f"{flag}: unknown distribution {kind}() in {text!r}: use uniform(a,b,n), "
                           "loguniform(a,b,n), range(a,b,step) or a list like \"['a','b']\"")
    args = _number_args(inner, flag, text)
    if kind == "range":
        return _frange(args, flag, text)
    if len(args) != 3:
        raise FacerecError(f"{flag}: {kind}(a,b,n) takes 3 numbers (low, high, number of values), "
                           f"got {len(args)} in {text!r}")
    a, b, n = args
    if not (isinstance(n, int) or float(n).is_integer()) or n < 1:
        raise FacerecError(f"{flag}: the number of values n in {text!r} must be a whole number >= 1")
    n = int(n)
    if n > MAX_VALUES:
        raise FacerecError(f"{flag}: {text!r} asks for {n} values (at most {MAX_VALUES})")
    if not a < b:
        raise FacerecError(f"{flag}: in {text!r} the low end must be below the high end")
    if kind == "loguniform" and a <= 0:
        raise FacerecError(f"{flag}: loguniform needs 0 < low < high, got {text!r}")
    return _sample(kind, float(a), float(b), n, flag, seed)


# ----------------------------------------------------------------------------- flags & values
@dataclass(frozen=True)
class FlagSpec:
    """One ``facerec train`` flag as the sweep takes it: how its values are converted and checked."""

    dest: str
    option: str  # "--learning_rate"
    type: Callable[[str], Any] | None = None
    choices: tuple | None = None
    default: Any = None
    unswept: str | None = None  # why a value flag takes one value in a sweep (--monitor)
    environment: bool = False  # describes the machine: per worker, never swept
    sweepable: bool = True  # False: a switch (--no_augment...) or --monitor: one value

    def convert(self, value: Any, *, sampled: bool = False) -> Any:
        """VALUE (text, or a number from a list or a distribution) as ``facerec train`` takes it."""
        if not self.sweepable:
            return value
        t = self.type
        try:
            if t is None or t is str:
                out = value if isinstance(value, str) else _fmt(value)
            elif t is int and isinstance(value, float):
                if sampled:
                    out = int(round(value))
                elif value.is_integer():
                    out = int(value)
                else:
                    raise ValueError(f"{value!r} is not a whole number")
            elif t in (int, float) and isinstance(value, (int, float)) and not isinstance(value, bool):
                out = t(value)
            else:
                out = t(value if isinstance(value, str) else _fmt(value))
        except (ValueError, TypeError, argparse.ArgumentTypeError) as exc:
            raise FacerecError(f"{self.option}: invalid value {value!r} ({first_line(exc)})") from None
        if self.choices is not None and out not in self.choices:
            raise FacerecError(f"{self.option}: invalid choice {out!r} (choose from "
                               f"{', '.join(map(str, self.choices))})")
        return out

    def stored(self, value: Any, *, sampled: bool = False) -> Any:
        """VALUE converted, as a plain JSON/Optuna-able value (the text when the type is richer)."""
        out = self.convert(value, sampled=sampled)
        if isinstance(out, _SCALAR):
            return out
        return value if isinstance(value, str) else _fmt(value)


def short_value(v: Any) -> str:
    """A value as the sweep's messages and table show it (floats to 4 significant digits)."""
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _fmt(v: Any) -> str:
    return repr(v) if isinstance(v, float) else str(v)


def expand_flag(spec: FlagSpec, text: Any, *, seed: int = 0) -> tuple[list, bool]:
    """(values, is_swept) of a flag: converted and checked, duplicates removed."""
    if text is None or not spec.sweepable:
        return [text], False
    values = parse_sweep_value(text, spec.option, seed=seed) if isinstance(text, str) else None
    if values is None:
        return [spec.stored(text)], False
    if spec.environment:
        raise FacerecError(f"{spec.option} describes the machine and cannot be swept: give one value")
    if spec.unswept:
        raise FacerecError(f"{spec.option} cannot be swept: it is {spec.unswept}")
    sampled = text.strip().split("(")[0].strip() in ("uniform", "loguniform")
    out: list = []
    for v in values:
        c = spec.stored(v, sampled=sampled)
        if c in out:
            if sampled:
                continue  # two samples rounded to the same whole number
            raise FacerecError(f"{spec.option}: {c!r} appears twice in {text!r}")
        out.append(c)
    return out, True


def train_flag_specs() -> dict[str, FlagSpec]:
    """Every ``facerec train`` flag as the sweep takes it, by TrainConfig field, in train's order
    (from the one schema, :mod:`facerec.training.config`); the run folder's flags (``--name``,
    ``--runs_dir``, ``--ckpt_path``) are the sweep's own: a trial starts from scratch in its
    folder."""
    from facerec.training import config

    return {f.name: FlagSpec(dest=f.name, option=config.option(f), type=config.value_type(f),
                             choices=f.metadata.get("choices"), default=config.default_of(f),
                             environment=bool(f.metadata.get("environment")),
                             sweepable=not config.is_switch(f),
                             unswept=f.metadata.get("unswept"))
            for f in config.cli_fields() if not f.metadata.get("run")}


def add_train_flags(parser: argparse.ArgumentParser, positional: bool = True
                    ) -> dict[str, FlagSpec]:
    """Give PARSER every flag of :func:`train_flag_specs`; a flag taking a value takes it as text
    (a distribution or a plain value, converted and checked by :func:`spec_from_args`). The data
    is also the positional DATA unless not ``positional`` (see ``add_train_arguments``)."""
    from facerec.training.config import add_train_arguments

    add_train_arguments(parser, as_text=True, skip=("name", "runs_dir", "ckpt_path"),
                        positional=positional)
    return train_flag_specs()


def add_sweep_arguments(parser: argparse.ArgumentParser, positional: bool = True
                        ) -> dict[str, FlagSpec]:
    """``facerec sweep``'s own flags, then every train flag (:func:`add_train_flags`)."""
    p = parser
    p.add_argument("--name", "--study", dest="name", default=None,
                   help="sweep (and study) name (default: sweep-<hash of its flags>: the same "
                   "command resumes the same sweep)")
    p.add_argument("--out", dest="runs_dir", default="runs", metavar="OUT",
                   help="where sweeps go: OUT/NAME/NAME-expK/ (default: runs)")
    p.add_argument("--runs_dir", dest="runs_dir", default=argparse.SUPPRESS,
                   help=argparse.SUPPRESS)  # its earlier name (docs/cli.md)
    p.add_argument("--storage", metavar="URL", default=None,
                   help="Optuna storage shared by workers, e.g. postgresql://USER:PASS@HOST/DB "
                   "(default: sqlite:///RUNS_DIR/NAME/optuna.db)")
    p.add_argument("--parallel", type=int, default=1, metavar="K",
                   help="train K experiments at once in K processes (one GPU each if several)")
    p.add_argument("--max_trials", type=int, default=None, metavar="N",
                   help="start at most N trials in this run (default: the whole grid)")
    p.add_argument("--no_prune", action="store_true",
                   help="never stop hopeless trials early (default: median pruning per epoch)")
    p.add_argument("--config", metavar="FILE",
                   help="train options from YAML (as `facerec train --config`: a run's "
                   "hparams.yaml too), the same in every experiment; flags given here win")
    return add_train_flags(parser, positional)


# ------------------------------------------------------------------------------------ the spec
@dataclass(frozen=True)
class SweepSpec:
    """What a sweep is: the grid (swept flags -> values, in train flag order), the flags fixed
    for every experiment, and the per-machine flags (not part of its identity). Keys are the
    ``facerec train`` flags' dests."""

    grid: dict[str, list]
    fixed: dict[str, Any]
    environment: dict[str, Any] = field(default_factory=dict)
    options: dict[str, str] = field(default_factory=dict)  # dest -> "--flag", for messages
    customized: bool = True  # False: every flag at its default (a worker joining by --study)

    @property
    def size(self) -> int:
        return math.prod(len(v) for v in self.grid.values())

    def identity(self) -> dict:
        return {"version": SPEC_VERSION, "grid": {k: list(v) for k, v in self.grid.items()},
                "fixed": dict(self.fixed)}

    def digest(self) -> str:
        blob = json.dumps(self.identity(), sort_keys=True, separators=(",", ":"), default=str)
        return hashlib.sha256(blob.encode()).hexdigest()

    def default_name(self) -> str:
        return f"sweep-{self.digest()[:8]}"

    def combos(self) -> list[dict[str, Any]]:
        """Every grid point, in cross-product order (index K = experiment ``exp<K>``)."""
        import itertools

        keys = list(self.grid)
        return [dict(zip(keys, values)) for values in itertools.product(*self.grid.values())]

    def index_of(self, params: Mapping[str, Any]) -> int | None:
        index = 0
        for key, values in self.grid.items():
            if key not in params or params[key] not in values:
                return None
            index = index * len(values) + values.index(params[key])
        return index

    def search_space(self) -> dict[str, list]:
        return {k: list(v) for k, v in self.grid.items()}

    def describe(self) -> str:
        swept = " x ".join(f"{len(v)} {self.options.get(k, '--' + k)}" for k, v in self.grid.items())
        return f"{self.size} experiment{'s' * (self.size != 1)}" + (f" ({swept})" if swept else "")

    @classmethod
    def from_identity(cls, data: Mapping, *, environment: Mapping | None = None,
                      options: Mapping | None = None) -> SweepSpec:
        return cls(grid={k: list(v) for k, v in data["grid"].items()}, fixed=dict(data["fixed"]),
                   environment=dict(environment or {}), options=dict(options or {}))


def _sampling_seed(values: Mapping[str, Any], flags: Mapping[str, FlagSpec]) -> int:
    spec = flags.get("seed")
    raw = values.get("seed", spec.default if spec else None)
    if spec is None or raw is None:
        return 0
    if isinstance(raw, str) and parse_sweep_value(raw, spec.option) is not None:
        return 0  # the seed itself is swept
    try:
        return int(spec.convert(raw))
    except (FacerecError, TypeError, ValueError):
        return 0


def spec_from_args(args: argparse.Namespace | Mapping[str, Any],
                   flags: Mapping[str, FlagSpec]) -> SweepSpec:
    """The sweep that parsed ARGS describe (FLAGS: from :func:`add_train_flags`; a flag missing
    from ARGS takes its value from ARGS' ``config`` file if any, else its default). Raises
    :class:`FacerecError` naming the flag on bad syntax or on a value that ``facerec train`` would
    refuse, before anything runs."""
    values = dict(vars(args) if isinstance(args, argparse.Namespace) else args)
    if values.get("config"):
        from facerec.training.config import read_config_file

        base = read_config_file(values["config"])
        for dest in flags:
            values.setdefault(dest, getattr(base, dest))
    seed = _sampling_seed(values, flags)
    grid: dict[str, list] = {}
    fixed: dict[str, Any] = {}
    env: dict[str, Any] = {}
    customized = False
    for dest, spec in flags.items():
        raw = values.get(dest, spec.default)
        options, swept = expand_flag(spec, raw, seed=seed)
        if swept:
            grid[dest] = options
            customized = True
        elif spec.environment:
            env[dest] = options[0]
        else:
            fixed[dest] = options[0]
            default = spec.default if (spec.default is None or not spec.sweepable) \
                else spec.stored(spec.default)
            customized = customized or options[0] != default
    size = math.prod(len(v) for v in grid.values())
    if size > MAX_GRID:
        raise FacerecError(f"the sweep has {size} experiments (at most {MAX_GRID}): sweep fewer values")
    return SweepSpec(grid=grid, fixed=fixed, environment=env,
                     options={d: s.option for d, s in flags.items()}, customized=customized)
