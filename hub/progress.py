"""Progress on a terminal, silence when piped: one spinner line per pipeline stage."""
from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from typing import Callable, Iterator

from rich.console import Console

console = Console(stderr=True)  # stdout is reserved for --json documents


class Progress:
    def __init__(self, enabled: bool | None = None):
        self.enabled = console.is_terminal if enabled is None else enabled
        self.timings: dict[str, float] = {}

    @contextmanager
    def stage(self, name: str, label: str) -> Iterator[None]:
        """Time a stage into `timings` and show `label` while it runs (terminal only)."""
        t0 = time.perf_counter()
        if self.enabled:
            with console.status(f"[bold]{label}[/]…"):
                yield
            console.print(f"[green]✓[/] {label} [dim]({time.perf_counter() - t0:.1f} s)[/]")
        else:
            yield
        self.timings[name] = round(time.perf_counter() - t0, 3)


def warn(text: str) -> None:
    """Warnings go to stderr whether or not it is a terminal."""
    print(f"hub: warning: {text}", file=sys.stderr)


@contextmanager
def bar(label: str, total: int, enabled: bool) -> Iterator[Callable[[str], None]]:
    """A progress bar of `total` steps on a terminal (nothing when piped); yields `step(text)`, which
    advances it by one and shows `text` (hub optimize: epoch, loss, validation accuracy)."""
    if not enabled:
        yield lambda text: None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, TextColumn
    from rich.progress import Progress as RichProgress

    with RichProgress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                      TextColumn("{task.fields[text]}"), console=console, transient=False) as rich_bar:
        task = rich_bar.add_task(label, total=total, text="")
        yield lambda text: rich_bar.update(task, advance=1, text=text)
