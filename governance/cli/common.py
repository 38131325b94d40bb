"""Shared CLI plumbing: one clear line and a non-zero exit instead of a traceback."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import typer
from rich.console import Console

from governance.db import DatabaseUnavailable
from governance.embedded import ServicesNotRunning
from governance.settings import SettingsError

console = Console()
err_console = Console(stderr=True)

F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str, code: int = 2) -> NoReturn:
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def clear_errors(fn: F) -> F:
    """Turn the errors users can fix (configuration, unreachable services) into one line."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except (SettingsError, DatabaseUnavailable, ServicesNotRunning) as exc:
            fail(str(exc))
        except FileNotFoundError as exc:
            fail(f"file not found: {exc.filename}")
        except PermissionError as exc:
            fail(f"permission denied: {exc.filename}")

    return wrapper  # type: ignore[return-value]


TORCH_THREADS_HELP = (
    "torch threads per process (0: one per core). Processes that share a machine should "
    "split its cores: oversubscribed torch threads spin against each other and decode 10x slower"
)


def limit_torch_threads(threads: int) -> None:
    """Cap this process's (and its forked children's) torch/OpenMP threads; 0 leaves the default.

    Set before torch is imported (OMP_NUM_THREADS is read then) and again after, for a
    torch that is already loaded.
    """
    if threads <= 0:
        return
    for var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[var] = str(threads)
    torch = sys.modules.get("torch")
    if torch is not None:
        torch.set_num_threads(threads)
