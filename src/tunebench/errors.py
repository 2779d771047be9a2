"""The one exception type that means "the user's input is wrong".

The CLI turns it into a single line on stderr and exit code 2; anything else is a bug in
tunebench and keeps its traceback (exit 1).
"""
from __future__ import annotations


class UserError(Exception):
    """A mistake in the user's input: data, recipe, flags, paths."""


class UserErrors(UserError):
    """Several mistakes found in one pass (a recipe checked whole): one line each."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))



def closest(name: str, choices) -> str | None:
    """The known name closest to an unknown one, if any is close."""
    import difflib

    hint = difflib.get_close_matches(str(name), [str(c) for c in choices], n=1)
    return hint[0] if hint else None


def suggest(name: str, choices, otherwise: str = "") -> str:
    """` (did you mean 'x'?)` when a known name is close to the unknown one, else `otherwise`
    (e.g. ` (known: a, b)`): the tail of every "unknown ..." message."""
    hint = closest(name, choices)
    return f" (did you mean '{hint}'?)" if hint else otherwise
