"""The code's own shape: no function too long to read top to bottom."""
import ast
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src" / "tunebench"


def test_no_function_is_longer_than_79_lines():
    long = []
    for path in sorted(SRC.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno + 1 >= 80:
                long.append(f"{path.relative_to(SRC)}:{node.lineno} {node.name} ({node.end_lineno - node.lineno + 1} lines)")
    assert not long, long
