"""A story may name the model profile it is written for (`profile: paper`); running it on another one is refused
(a 1024×576 drama on the toy models is a collage of toy blocks, after minutes of work) unless the caller forces it."""

from __future__ import annotations

from moviedreamer.errors import Problem
from moviedreamer.script.yaml_positions import load_located


def profile_problem(loaded, profile_name: str, forced: bool = False) -> Problem | None:
    """The error for a story that names another profile than `profile_name`, located at its `profile:` field (a
    warning when `forced`); None when the story names none or this one."""
    wanted = loaded.story.profile
    if wanted is None or wanted == profile_name:
        return None
    located = loaded.located or load_located(loaded.path, display=str(loaded.path))
    if forced:
        return located.problem(("profile",), f"a story written for profile '{wanted}', run on '{profile_name}' (--force)", "warning")
    return located.problem(
        ("profile",),
        f"expected a story for the profile this run uses ('{profile_name}'), found a story written for '{wanted}' "
        f"(run it with --profile {wanted}, or add --force to run it on '{profile_name}' anyway)",
    )
