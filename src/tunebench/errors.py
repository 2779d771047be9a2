"""The one exception type that means "the user's input is wrong".

The CLI turns it into a single line on stderr and exit code 2; anything else is a bug in
tunebench and keeps its traceback (exit 1).
"""


class UserError(Exception):
    """A mistake in the user's input: data, recipe, flags, paths."""


def where(path, line=None, field=None) -> str:
    """Format 'file:line: field' prefixes the same way everywhere."""
    out = str(path)
    if line is not None:
        out += f":{line}"
    if field is not None:
        out += f": field '{field}'"
    return out
