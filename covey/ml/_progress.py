"""One rich progress bar style for training and evaluation loops, silent when turned off."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn


@contextlib.contextmanager
def progress_bar(enabled: bool, description: str, total: int) -> Iterator[Callable[[str], None]]:
    """Yields `advance(status)`, to call once per step; draws nothing when `enabled` is false."""
    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeRemainingColumn(),
        disable=not enabled,
    ) as bar:
        task = bar.add_task(description, total=total, status="")

        def advance(status: str = "") -> None:
            bar.update(task, advance=1, status=status)

        yield advance
