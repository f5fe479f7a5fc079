"""The sweep's table of trials, best first, and ``Best checkpoint: PATH``."""

from __future__ import annotations

import sys
from pathlib import Path

from facerec.training.sweep.spec import short_value as _short
from facerec.training.sweep.study import SweepResult

# -------------------------------------------------------------------------------------- display
_STATE_STYLE = {"COMPLETE": "green", "PRUNED": "yellow", "FAIL": "red", "RUNNING": "cyan",
                "WAITING": "white"}


def _relative(path: str | None, base: Path) -> str:
    if not path:
        return ""
    try:
        return str(Path(path).resolve().relative_to(base.resolve()))
    except (ValueError, OSError):
        return str(path)


def print_sweep_table(result: SweepResult, console=None) -> None:
    """The final table (trials sorted by the metric, best first) and ``Best checkpoint: PATH``."""
    from rich.console import Console
    from rich.table import Table

    # a log file gets the whole table rather than an 80-column one
    console = console or Console(width=None if sys.stdout.isatty() else 160)
    spec = result.spec
    sweep_dir = result.root / result.name
    hosts = {t.host for t in result.trials if t.host}
    table = Table(title=f"Sweep {result.name}: {spec.describe()}, sorted by {result.metric} "
                        f"({'higher' if result.direction == 'maximize' else 'lower'} is better)",
                  title_justify="left")
    table.add_column("Trial", justify="right", no_wrap=True)
    for key in spec.grid:
        table.add_column(spec.options.get(key, "--" + key).lstrip("-"), no_wrap=True)
    table.add_column(result.metric, justify="right", no_wrap=True)
    table.add_column("State", no_wrap=True)
    table.add_column("Time", justify="right", no_wrap=True)
    table.add_column(f"Checkpoint (in {sweep_dir}) / error", overflow="fold")
    for t in result.trials:
        where = _relative(t.checkpoint, sweep_dir)
        if where and len(hosts) > 1 and t.host:
            where = f"{t.host}:{where}"
        if t.state == "FAIL" and t.error:
            where = f"[red]{_markup_escape(t.error)}[/]"
        elif not where and t.exp:
            where = f"{t.exp}/"
        table.add_row(str(t.number), *(_short(t.params.get(k, "")) for k in spec.grid),
                      "" if t.value is None else f"{t.value:.4f}",
                      f"[{_STATE_STYLE.get(t.state, 'white')}]{t.state}[/]",
                      "" if t.seconds is None else _duration(t.seconds), where)
    console.print(table)
    counts: dict[str, int] = {}
    for t in result.trials:
        counts[t.state] = counts.get(t.state, 0) + 1
    done = ", ".join(f"{n} {s.lower()}" for s, n in counts.items())
    console.print(f"{result.complete}/{spec.size} experiments done ({done or 'no trials'}); "
                  f"{result.ran} trial{'s' * (result.ran != 1)} run now in "
                  f"{_duration(result.seconds)}. Study: {result.storage}", highlight=False)
    console.print(f"TensorBoard: tensorboard --logdir {sweep_dir}", highlight=False, soft_wrap=True)
    best = result.best
    if best is None:
        console.print("Best checkpoint: none (no trial completed)", highlight=False)
    else:
        console.print(f"Best checkpoint: {best.checkpoint}", highlight=False, soft_wrap=True)


def _markup_escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


def _duration(seconds: float) -> str:
    seconds = float(seconds)
    if seconds < 60:
        return f"{seconds:.1f} s"
    m, s = divmod(int(round(seconds)), 60)
    return f"{m}:{s:02d}" if m < 60 else f"{m // 60}:{m % 60:02d}:{s:02d}"
