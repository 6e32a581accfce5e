"""One error path for the whole tool: every anticipated failure is a HubError.

The CLI prints `hub: error: <message>` on one line and exits with `exit_code`;
tracebacks appear only with --debug.
"""
from __future__ import annotations

from pathlib import Path

EXIT_INCOMPATIBLE = 1  # the model will not run on the target, or fails verification
EXIT_USAGE = 2  # bad flags, unreadable or unsupported input


def first_line(exc: BaseException, limit: int = 300) -> str:
    """An exception's first non-empty message line, for one-line errors (its type name if it has none)."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return (lines[0] if lines else type(exc).__name__)[:limit]


class HubError(Exception):
    """A failure the user can cause and fix; carries its exit code."""

    exit_code = EXIT_USAGE

    def __init__(self, message: str, path: str | Path | None = None, hint: str | None = None,
                 child_traceback: str | None = None):
        self.message = message
        self.path = str(path) if path is not None else None
        self.hint = hint
        self.child_traceback = child_traceback  # a child process's own traceback (the converter's), for --debug
        super().__init__(self.one_line())

    def one_line(self) -> str:
        text = f"{self.path}: {self.message}" if self.path else self.message
        if self.hint:
            text += f" ({self.hint})"
        return " ".join(text.split())


class InputError(HubError):
    """The input file, folder or flags cannot be used (exit 2)."""


class IncompatibleError(HubError):
    """The model cannot run on the target or failed verification (exit 1)."""

    exit_code = EXIT_INCOMPATIBLE
