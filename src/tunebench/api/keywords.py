"""The API functions' keyword arguments, generated from the config sections the CLI's flags come from.

A stage function names its own parameters (`out`, `resume`, ...) and the sections it takes; the
sections' fields become keyword-only arguments with the field's name and default (`max_steps`
is `--max-steps`), so a field added to a section reaches the CLI and the API alike. The
generated signature and docstring are what help() and an IDE show.
"""
from __future__ import annotations

import functools
import inspect
from dataclasses import dataclass
from typing import Callable

from pydantic import ValidationError

from ..config import Section
from ..errors import UserError, suggest


@dataclass(frozen=True)
class From:
    """A config section given as keyword arguments: `prefix` as the CLI's (`mixture_tasks` is
    `--mixture-tasks`), `skip` the fields the command does not take (bench's chat_template comes
    from BenchConfig, not ModelConfig)."""

    model: type[Section]
    prefix: str = ""
    skip: tuple[str, ...] = ()

    def keywords(self) -> dict[str, str]:
        """keyword -> field name."""
        pre = self.prefix + "_" if self.prefix else ""
        return {pre + name: name for name in self.model.model_fields if name not in self.skip}


def takes(**sections: From) -> Callable:
    """Decorator: the function's parameters named in `sections` are replaced, in its public
    signature, by one keyword-only argument per field of that section; the call receives each of
    them as the section built from the keywords given (defaults for the rest)."""
    def wrap(fn: Callable) -> Callable:
        sig = inspect.signature(fn)
        own = [p for name, p in sig.parameters.items() if name not in sections]
        section_params = [_parameter(kw, spec.model, field)
                          for spec in sections.values() for kw, field in spec.keywords().items()]
        public_sig = sig.replace(parameters=own + section_params)
        clashes = {p.name for p in own} & {p.name for p in section_params}
        assert not clashes, f"{fn.__name__}: {clashes} named twice"

        @functools.wraps(fn, assigned=("__module__", "__name__", "__qualname__"), updated=())
        def public(*args, **kwargs):
            bound = _bind(fn.__name__, public_sig, args, kwargs)
            built = {name: _build(fn.__name__, spec, bound.arguments) for name, spec in sections.items()}
            bound.apply_defaults()
            call = inspect.BoundArguments(sig, {name: built[name] if name in built else bound.arguments[name]
                                                for name in sig.parameters})
            return fn(*call.args, **call.kwargs)

        public.__signature__ = public_sig
        public.__doc__ = (inspect.getdoc(fn) or "") + _keyword_docs(sections)
        public.sections = sections  # for the tests: which sections a function takes
        return public
    return wrap


def _parameter(keyword: str, model: type[Section], field: str) -> inspect.Parameter:
    f = model.model_fields[field]
    return inspect.Parameter(keyword, inspect.Parameter.KEYWORD_ONLY,
                             default=f.get_default(call_default_factory=True), annotation=f.annotation)


def _bind(name: str, sig: inspect.Signature, args: tuple, kwargs: dict) -> inspect.BoundArguments:
    """The call's arguments; an unknown keyword is a user's mistake named in one line."""
    named = [p.name for p in sig.parameters.values()
             if p.kind not in (inspect.Parameter.VAR_POSITIONAL, inspect.Parameter.VAR_KEYWORD,
                               inspect.Parameter.POSITIONAL_ONLY)]
    for k in kwargs:
        if k not in named:
            raise UserError(f"{name}(): unknown keyword '{k}'" + suggest(k, named, f" (see help(tunebench.{name}))"))
    try:
        return sig.bind(*args, **kwargs)
    except TypeError as e:
        raise UserError(f"{name}(): {e}") from None


def _build(name: str, spec: From, given: dict) -> Section:
    fields = spec.keywords()
    values = {field: given[kw] for kw, field in fields.items() if kw in given}
    try:
        return spec.model.model_validate(values)
    except ValidationError as e:
        err = e.errors()[0]
        keyword = (spec.prefix + "_" if spec.prefix else "") + str(err["loc"][0]) if err["loc"] else "?"
        # an item of a list or a key of a section inside it (mixture_tasks[1]['weight']), not pydantic's
        # own steps into a union's alternatives ("literal['all']")
        where = "".join(f"[{p!r}]" for p in err["loc"][1:] if isinstance(p, int) or "[" not in p)
        raise UserError(f"{name}(): {keyword}{where}={_short(err.get('input'))}: {err['msg']}") from None


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _keyword_docs(sections: dict[str, From]) -> str:
    """The generated part of a docstring: every section keyword, its default and what it does."""
    lines = []
    for spec in sections.values():
        title = spec.model.__doc__.splitlines()[0] if spec.model.__doc__ else ""
        lines += ["", f"{spec.model.__name__} keywords{': ' + title if title else ''}"]
        for kw, field in spec.keywords().items():
            f = spec.model.model_fields[field]
            default = f.get_default(call_default_factory=True)
            lines.append(f"    {kw}={default!r}" + (f": {f.description}" if f.description else ""))
    return "\n" + "\n".join(lines) if lines else ""
