"""Chat datasets read as conversations: OpenAI `messages`, ShareGPT `conversations`, Alpaca.

A conversation is a list of {"role", "content"} turns, each role one of system, user and
assistant. Training learns every assistant turn (models.batching renders the conversation through
the model's chat template and puts the loss on assistant tokens only); evaluation asks for the
last assistant turn, given everything before it, and scores against it. Turns after the last
assistant turn are left out: nothing learns or scores them.

An example from a chat record is an ordinary prepared example (prompt = the last user turn,
completion = the last assistant turn, the reference = that turn unless the record carries its own
`references`) that also carries `messages`, the
conversation up to and including that last assistant turn. A record with one user turn and one
assistant turn therefore gives exactly the example a task template gives for the same prompt
and completion (tests/test_chat_data.py shows it on DialogSum and SAMSum).
"""
from __future__ import annotations

from ..errors import UserError
from ..io.files import Record

FORMATS = ("messages", "sharegpt", "alpaca")
ROLES = ("system", "user", "assistant")
# ShareGPT's speaker names; `developer` is OpenAI's newer name for the system turn
_SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant",
                   "chatgpt": "assistant", "system": "system"}
_MESSAGES_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}
# the field each format is told by, and where its turns' role and text are
_LAYOUT = {"messages": ("messages", "role", "content", _MESSAGES_ROLES),
           "sharegpt": ("conversations", "from", "value", _SHAREGPT_ROLES)}


def detect(rec: Record) -> str | None:
    """The chat format a record's fields announce, or None (a task's columns)."""
    f = rec.fields
    if "messages" in f:
        return "messages"
    if "conversations" in f:
        return "sharegpt"
    if "instruction" in f and "output" in f:
        return "alpaca"
    return None


def conversation(rec: Record, fmt: str) -> list[dict]:
    """The record's turns as {"role", "content"}, cut after the last assistant turn, and checked."""
    turns = _alpaca(rec) if fmt == "alpaca" else _turns(rec, *_LAYOUT[fmt])
    last = max((i for i, t in enumerate(turns) if t["role"] == "assistant"), default=None)
    if last is None:
        field = "instruction/output" if fmt == "alpaca" else _LAYOUT[fmt][0]
        raise UserError(f"{rec.source}: field '{field}' has no assistant turn (nothing to learn or score)")
    return turns[: last + 1]


def example(rec: Record, fmt: str, rid: str) -> dict:
    """A prepared example. A record's own `references` (a list of texts, as DialogSum's test split
    has three human summaries) are scored against; otherwise the last assistant turn is."""
    msgs = conversation(rec, fmt)
    answer = msgs[-1]["content"]
    asked = next((t["content"] for t in reversed(msgs[:-1]) if t["role"] == "user"), "")
    refs = rec.fields.get("references")
    if refs is not None and (not isinstance(refs, list) or not refs
                             or not all(isinstance(r, str) and r.strip() for r in refs)):
        raise UserError(f"{rec.source}: field 'references' must be a list of non-empty strings")
    return {"id": rid, "prompt": asked, "completion": answer, "references": refs or [answer], "template": fmt,
            "source": rec.source, "messages": msgs}


def _turns(rec: Record, field: str, role_key: str, text_key: str, roles: dict) -> list[dict]:
    raw = rec.fields.get(field)
    if not isinstance(raw, list):
        got = "nothing" if raw is None else type(raw).__name__
        raise UserError(f"{rec.source}: field '{field}' must be a list of turns, got {got}")
    out = []
    for i, t in enumerate(raw):
        where = f"{rec.source}: {field}[{i}]"
        if not isinstance(t, dict):
            raise UserError(f"{where}: a turn must be an object with '{role_key}' and '{text_key}'")
        role = t.get(role_key)
        if role not in roles:
            raise UserError(f"{where}.{role_key}: unknown role {role!r} (known: {', '.join(roles)})")
        out.append({"role": roles[role], "content": _text(t.get(text_key), f"{where}.{text_key}")})
        if out[-1]["role"] == "assistant" and not out[-1]["content"].strip():
            raise UserError(f"{where}.{text_key}: the assistant turn is empty")
    return out


def _text(value, where: str) -> str:
    """A turn's text: a string, or OpenAI's list of content parts when every part is text."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and all(isinstance(p, dict) and p.get("type") == "text"
                                       and isinstance(p.get("text"), str) for p in value):
        return "".join(p["text"] for p in value)
    got = "nothing" if value is None else type(value).__name__
    raise UserError(f"{where}: must be a string (or a list of text parts), got {got}")


def _alpaca(rec: Record) -> list[dict]:
    """Alpaca's instruction and optional input become one user turn (a blank line between them, as
    the input follows the instruction in Alpaca's own prompt); its output the assistant turn."""
    f = rec.fields
    parts = []
    for key in ("instruction", "input"):
        value = f.get(key)
        if value is not None and not isinstance(value, str):
            raise UserError(f"{rec.source}: field '{key}' must be a string, got {type(value).__name__}")
        if value and value.strip():
            parts.append(value.strip())
    if not parts:
        raise UserError(f"{rec.source}: field 'instruction' is empty")
    output = f.get("output")
    if not isinstance(output, str) or not output.strip():
        raise UserError(f"{rec.source}: field 'output': the assistant turn is empty")
    turns = [{"role": "system", "content": f["system"]}] if isinstance(f.get("system"), str) and f["system"].strip() else []
    return turns + [{"role": "user", "content": "\n\n".join(parts)}, {"role": "assistant", "content": output.strip()}]
