"""Writing results: Markdown tables and headers, templates, the JSON beside them."""

from __future__ import annotations

import json
import math
import string
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console

# A table column: its header, and how a row renders in it.
Column = tuple[str, Callable[[Any], str]]


def f(value: float | None, digits: int = 2, signed: bool = False) -> str:
    """A number for a table; an em dash when there is none."""
    if value is None or math.isnan(value):
        return "—"
    return f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"


def x(value: float | None, digits: int = 2) -> str:
    """A ratio: ``1.23x``."""
    return "—" if value is None or math.isnan(value) else f"{value:.{digits}f}x"


def joined(values: Iterable[float], digits: int = 2) -> str:
    """Per-round values: ``1.02 / 0.98``."""
    return " / ".join(f(v, digits) for v in values)


def table(columns: Sequence[Column], rows: Iterable[Any]) -> str:
    """A Markdown table, one line per row."""
    lines = ["| " + " | ".join(name for name, _ in columns) + " |"]
    lines.append("|" + "|".join("---" for _ in columns) + "|")
    lines += ["| " + " | ".join(cell(row) for _, cell in columns) + " |" for row in rows]
    return "\n".join(lines)


def show(console: Console, title: str, columns: Sequence[Column], rows: Iterable[Any]) -> None:
    """A report's key table on the console, as it is in the Markdown."""
    console.print(f"\n{title}\n{table(columns, rows)}", markup=False, highlight=False)


def machine_lines(machine: dict[str, Any]) -> str:
    """The header every report starts with: date, commit, machine, versions, load."""
    packages = ", ".join(f"{k} {v}" for k, v in machine["packages"].items())
    return "\n".join(
        [
            f"- Date: {machine['date_utc']}; commit `{machine['git_commit']}`",
            f"- Machine: nproc {machine['nproc']}, {machine['cpu_model']}, {machine['platform']}",
            f"- Python {machine['python']}; {packages}",
            f"- Load average at start / end: {machine['load_average_at_start']} / "
            f"{machine.get('load_average_at_end', '?')}",
        ]
    )


def failures(summary: dict[str, Any], title: str = "Failed requests") -> str:
    """A report's section listing the failures, if any (with a blank line after it)."""
    samples = summary["error_samples"]
    return f"## {title}\n\n" + "".join(f"- `{s}`\n" for s in samples) + "\n" if samples else ""


def render(template: Path, **values: Any) -> str:
    """A report from its Markdown template (``$name`` placeholders, ``string.Template``)."""
    return string.Template(template.read_text()).substitute(values)


def config_of(args: Any, **extra: Any) -> dict[str, Any]:
    """The command-line options (paths as text) and ``extra``, as a report's config."""
    return {**{k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()}, **extra}


def write(out_dir: Path, name: str, markdown: str, payload: dict[str, Any]) -> list[Path]:
    """``name.md`` and ``name.json`` (every raw number) in ``out_dir``."""
    out_dir.mkdir(parents=True, exist_ok=True)
    md_path, json_path = out_dir / f"{name}.md", out_dir / f"{name}.json"
    md_path.write_text(markdown)
    json_path.write_text(json.dumps(payload, separators=(",", ":")) + "\n")
    return [md_path, json_path]


def publish(
    console: Console,
    out: Path,
    name: str,
    markdown: str,
    payload: dict[str, Any],
    plot: Callable[[Path], Path],
    summary: dict[str, Any],
) -> int:
    """``name``.{md,json,png} in ``out``; then :func:`finish` on the summary's errors."""
    paths = [*write(out, name, markdown, payload), plot(out / f"{name}.png")]
    return finish(console, paths, summary["errors"], summary["error_samples"])


def subtitle(machine: dict[str, Any]) -> str:
    """A real-engine plot's subtitle."""
    return f"nproc {machine['nproc']}, {machine['date_utc']}; one run, compare ratios"


def finish(console: Console, paths: Sequence[Path], errors: int, samples: object) -> int:
    """Say what was written; 1 (and the failures) if any request failed, else 0."""
    console.print(f"wrote {', '.join(str(p) for p in paths)}")
    if errors:
        console.print(f"[red]{errors} failed requests or checks[/red]: {samples}")
        return 1
    return 0


def real_engine_header(machine: dict[str, Any], config: dict[str, Any]) -> dict[str, str]:
    """The ``cache`` and ``engine`` reports' ``$noise`` note and ``$machine`` lines."""
    engine = config["engine"]
    noise = (
        f"> **One run on a shared, noisy {machine['nproc']}-core machine.** The engine, the "
        "gateway, Redis and\n> the client share the same cores, and whatever else ran on the "
        "box (*background\n> cores*). Absolute numbers move a lot between runs; compare "
        "ratios *within this run*."
    )
    line = (
        f"- Engine: `{' '.join(engine['argv'])}`, model `{engine['model']}`, ready in "
        f"{engine['startup_s']:.0f} s; Redis {config.get('redis_version', '?')}"
    )
    lines = machine_lines(machine).splitlines()
    return {"noise": noise, "machine": "\n".join([*lines[:3], line, *lines[3:]])}


def listed(*headers: str) -> list[Column]:
    """Columns for rows that are already lists of cells."""
    return [(header, cell(k)) for k, header in enumerate(headers)]


def cell(key: int | str) -> Callable[[Any], str]:
    """A row's item ``key`` as it is."""
    return lambda row: str(row[key])


def number(name: str, digits: int = 2) -> Callable[[Any], str]:
    """A row's figure ``name`` (a key of a dict row, else an attribute), formatted."""
    return lambda row: f(row[name] if isinstance(row, dict) else getattr(row, name), digits)
