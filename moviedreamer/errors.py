"""User-facing errors. Anything raised as a `UserError` ends the CLI with exit status 2 and a clear
message, never a traceback."""

from __future__ import annotations

from dataclasses import dataclass


def first_line(e: BaseException) -> str:
    """An error's first line, whole (a message is never cut inside a word), and how many more lines it had."""
    lines = [line for line in str(e).strip().splitlines() if line.strip()] or [type(e).__name__]
    more = len(lines) - 1
    return lines[0].strip() + (f" (and {more} more line{'s' if more > 1 else ''})" if more else "")


class UserError(Exception):
    """Bad input or a missing component: the message is meant for the person at the keyboard."""

    exit_code = 2


@dataclass(frozen=True)
class Problem:
    """One problem in a story file, located as precisely as the YAML allows."""

    file: str
    line: int  # 1-based
    col: int  # 1-based
    field: str  # e.g. "scenes[0].shots[2].duration" ("" for the whole file)
    message: str  # "expected ..., found ..."
    severity: str = "error"  # "error" or "warning"

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}:{self.col}"
        field = f" {self.field}:" if self.field else ""
        tag = "warning: " if self.severity == "warning" else ""
        return f"{where}:{field} {tag}{self.message}"


class ScriptError(UserError):
    """A story script failed validation; carries every problem found."""

    def __init__(self, problems: list[Problem]):
        self.problems = [p for p in problems if p.severity == "error"]
        self.warnings = [p for p in problems if p.severity != "error"]
        super().__init__("\n".join(str(p) for p in self.problems))


class MissingComponentError(UserError):
    """A model component named in checkpoints.yaml is not where the profile says."""


class CheckpointError(UserError):
    """A weights file is missing, truncated, corrupt or unsafe to load."""
