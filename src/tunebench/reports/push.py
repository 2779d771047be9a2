"""`tunebench push RUN --repo ORG/NAME`: a training run to the Hugging Face Hub, through huggingface_hub.

What goes: the merged model when the run saved one (else the fully fine-tuned model, else the
LoRA adapter, its adapter_config.json naming the base model's Hub id), the model card as
README.md, and the recipe run's report.html when there is one. `--dry-run` lists the files with
their sizes and touches no network; without it, HF_HUB_OFFLINE refuses at once.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

from ..errors import UserError
from ..io.layout import CARD_FILE, RECIPE_FILE, RUN_MODEL_FILE, RecipeRun, training_dir
from ..io.locations import hub_offline
from ..io.runs import read_json
from ..models import hub_origin


@dataclass
class Upload:
    path_in_repo: str
    source: Path | bytes      # a file, or content made here (the card when the run has none, a rewritten config)
    origin: str               # what a person reads in the listing

    @property
    def size(self) -> int:
        return len(self.source) if isinstance(self.source, bytes) else self.source.stat().st_size


def check_repo(repo: str) -> None:
    if not re.fullmatch(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*", repo):
        raise UserError(f"--repo '{repo}': expected ORG/NAME (a Hub model repository id)")
    from huggingface_hub.utils import validate_repo_id

    try:
        validate_repo_id(repo)
    except ValueError as e:
        raise UserError(f"--repo '{repo}': {str(e).splitlines()[0]}") from None


def plan(run: Path | str) -> list[Upload]:
    """The files a push of RUN (a training run, or a recipe run's directory) uploads, in order."""
    run = Path(run)
    train = training_dir(run)
    if train is None or not (train / RUN_MODEL_FILE).is_file():
        raise UserError(f"{run}: not a finished training run (no {RUN_MODEL_FILE}; give `tunebench train --out` "
                        f"or a recipe run's directory)")
    if RecipeRun(run).train.is_dir():
        root = run
    else:  # a recipe run's train/ given directly: the recipe run's report goes too
        root = train.parent if train.name == "train" and (train.parent / RECIPE_FILE).is_file() else None
    saved = read_json(train / RUN_MODEL_FILE)
    uploads = [_card(train, root)]
    if saved.get("merged") and (train / saved["merged"]).is_dir():
        uploads += _folder(train / saved["merged"])
    elif saved.get("model"):
        uploads += _folder(train / saved["model"])
    else:
        uploads += _adapter(train / saved["adapter"], saved["base_model"])
    if root is not None and RecipeRun(root).report.is_file():
        uploads.append(Upload("report.html", RecipeRun(root).report, str(RecipeRun(root).report)))
    return uploads


def _card(train: Path, root: Path | None) -> Upload:
    if (train / CARD_FILE).is_file():
        return Upload("README.md", train / CARD_FILE, str(train / CARD_FILE))
    # a run trained before tunebench wrote cards: its card is made now, and not saved
    from .card import render

    return Upload("README.md", render(train, root).encode("utf-8"), f"model card made from {train}")


def _folder(d: Path) -> list[Upload]:
    if not d.is_dir():
        raise UserError(f"{d}: the saved model is missing")
    # a README.md there (peft writes one) would stand in for the card
    return [Upload(str(p.relative_to(d)), p, str(p)) for p in sorted(d.rglob("*"))
            if p.is_file() and p.name != CARD_FILE and not p.name.startswith(".")]


def _adapter(d: Path, base: str) -> list[Upload]:
    """The adapter's files; its config names the base by the Hub id others can load it from."""
    files = _folder(d)
    hub = hub_origin(base)[0]
    for i, u in enumerate(files):
        if u.path_in_repo == "adapter_config.json" and hub and hub != base:
            cfg = json.loads(u.source.read_text(encoding="utf-8"))
            cfg["base_model_name_or_path"] = hub
            files[i] = Upload(u.path_in_repo, (json.dumps(cfg, indent=2) + "\n").encode("utf-8"),
                              f"{u.source}, base_model_name_or_path set to {hub}")
    return files


def human(n: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    return f"{n:.1f} GB"


def listing(repo: str, uploads: list[Upload]) -> list[str]:
    width = max(len(u.path_in_repo) for u in uploads)
    lines = [f"{repo} (model repository): {len(uploads)} files, {human(sum(u.size for u in uploads))}"]
    lines += [f"  {u.path_in_repo:<{width}}  {human(u.size):>9}  {u.origin}" for u in uploads]
    return lines


def push(run: Path | str, repo: str, dry_run: bool = False, private: bool = False) -> list[str]:
    """The lines to print; uploads unless `dry_run`."""
    check_repo(repo)
    if not dry_run and hub_offline():
        raise UserError("push: HF_HUB_OFFLINE is set and uploading needs the Hub (unset it, or add --dry-run "
                        "to list what would be uploaded)")
    uploads = plan(run)
    if dry_run:
        return ["dry run, nothing uploaded; would upload to", *listing(repo, uploads)]
    from huggingface_hub import CommitOperationAdd, HfApi
    from huggingface_hub.errors import HfHubHTTPError

    api = HfApi()
    try:
        api.create_repo(repo, repo_type="model", private=private, exist_ok=True)
        info = api.create_commit(repo, [CommitOperationAdd(path_in_repo=u.path_in_repo, path_or_fileobj=u.source
                                                           if isinstance(u.source, bytes) else str(u.source))
                                        for u in uploads],
                                 commit_message=f"tunebench push {Path(run).name}", repo_type="model")
    except (HfHubHTTPError, OSError) as e:
        raise UserError(f"push: {repo}: {str(e).splitlines()[0]}") from None
    return [*listing(repo, uploads), f"pushed: {info.commit_url}"]
