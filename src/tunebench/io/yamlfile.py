"""The YAML files a user writes (recipes, task files): read strictly, with the line of every key.

PyYAML keeps the last of two equal keys without a word, so `lr:` written twice silently means the
second; here a duplicate key is refused, naming both lines. The composed node tree is kept so that
every later error about a key can name its line (`Where`).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import yaml

from ..errors import UserError


def load(path: Path | str, what: str = "file") -> tuple[Any, Optional[yaml.Node]]:
    """(data, node tree) of a YAML file; every way it can be unreadable is one line naming it.
    A UTF-8 byte-order mark is allowed (Windows editors write one)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise UserError(f"{path}: {what} not found") from None
    except UnicodeDecodeError as e:
        line = e.object[: e.start].count(b"\n") + 1
        raise UserError(f"{path}:{line}: not UTF-8 text (byte {e.object[e.start]:#x})") from None
    except OSError as e:
        raise UserError(f"{path}: cannot read {what} ({e.strerror})") from None
    loader = yaml.SafeLoader(text)
    try:
        node = loader.get_single_node()
        if node is not None:
            _no_duplicate_keys(node, path)
        return (loader.construct_document(node) if node is not None else None), node
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        problem = getattr(e, "problem", None) or str(e).splitlines()[0]
        raise UserError(f"{path}{f':{mark.line + 1}' if mark else ''}: not valid YAML ({problem})") from None
    finally:
        loader.dispose()


def _no_duplicate_keys(node: yaml.Node, path: Path) -> None:
    if isinstance(node, yaml.MappingNode):
        first: dict = {}
        for k, v in node.value:
            if isinstance(k, yaml.ScalarNode) and k.tag != "tag:yaml.org,2002:merge":
                if k.value in first:
                    raise UserError(f"{path}:{k.start_mark.line + 1}: duplicate key '{k.value}' (first at line "
                                    f"{first[k.value]}; YAML would silently keep only the last)")
                first[k.value] = k.start_mark.line + 1
            _no_duplicate_keys(v, path)
    elif isinstance(node, yaml.SequenceNode):
        for item in node.value:
            _no_duplicate_keys(item, path)


def key_name(loc) -> str:
    """`templates[1].prompt` for ("templates", 1, "prompt")."""
    return "".join(f"[{k}]" if isinstance(k, int) else (f".{k}" if i else str(k)) for i, k in enumerate(loc))


class Where:
    """`file:line: key` for a location (keys and list indices) in a loaded file."""

    def __init__(self, path: Path | str, node: Optional[yaml.Node]):
        self.path, self.node = path, node

    def line(self, loc) -> Optional[int]:
        """The line of the deepest part of `loc` the file holds (None: not in the file, e.g. a default)."""
        line, node = None, self.node
        for key in loc:
            if isinstance(node, yaml.MappingNode):
                match = next(((k, v) for k, v in node.value if k.value == key), None)
                if match is None:
                    break
                line, node = match[0].start_mark.line + 1, match[1]
            elif isinstance(node, yaml.SequenceNode) and isinstance(key, int) and key < len(node.value):
                node = node.value[key]
                line = node.start_mark.line + 1
            else:
                break
        return line

    def __call__(self, *loc) -> str:
        line = self.line(loc)
        key = key_name(loc)
        return f"{self.path}{f':{line}' if line else ''}" + (f": {key}" if key else "")
