"""The one exception type that means "the user's input is wrong".

The CLI turns it into a single line on stderr and exit code 2; anything else is a bug in
tunebench and keeps its traceback (exit 1).
"""


class UserError(Exception):
    """A mistake in the user's input: data, recipe, flags, paths."""


class UserErrors(UserError):
    """Several mistakes found in one pass (a recipe checked whole): one line each."""

    def __init__(self, problems: list[str]):
        self.problems = list(problems)
        super().__init__("\n".join(self.problems))

