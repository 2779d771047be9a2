"""The processes of a torchrun / accelerate launch, as evaluation sees them: which examples this
process does, everyone's results gathered, and one journal per process read as one.

Training has accelerate for this; evaluation needs only a process group, a split and a gather.
With one process (WORLD_SIZE unset or 1) nothing here starts a process group or waits for
another process, and every result and file is what it was before.

Every output directory, journals included, must be on a filesystem that all processes see
(one machine, or a shared filesystem across machines).
"""
from __future__ import annotations

import atexit
import os
import re
from datetime import timedelta
from pathlib import Path
from typing import Any, Callable, TypeVar

from ..errors import UserError
from .runs import Journal

T = TypeVar("T")


class Processes:
    """This process's place in the launch: rank, world size, local rank."""

    def __init__(self, rank: int = 0, world: int = 1, local_rank: int = 0, group=None):
        self.rank, self.world, self.local_rank, self.group = rank, world, local_rank, group

    @property
    def main(self) -> bool:
        return self.rank == 0

    def device(self, device):
        """The device this process works on: its own GPU (cuda:LOCAL_RANK) when several share a machine."""
        import torch

        if self.world > 1 and device.type == "cuda":
            return torch.device("cuda", self.local_rank)
        return device

    def share(self, items: list[T], cost: Callable[[T], float]) -> list[T]:
        """This process's share of `items`, in their order.

        Sorted by `cost` (a prompt's length), the items are dealt out in snake order (ranks 0..N-1,
        then N-1..0, ...): every process gets as many long items as short ones, so the shares take
        about the same time, and each share still spans all lengths, so each process's own
        length-sorted batches are as tight as one process's.
        """
        if self.world == 1:
            return list(items)
        order = sorted(range(len(items)), key=lambda k: -cost(items[k]))  # stable: ties keep input order
        mine = [k for p, k in enumerate(order) if self._dealt(p) == self.rank]
        return [items[k] for k in sorted(mine)]

    def _dealt(self, position: int) -> int:
        lap, seat = divmod(position, self.world)
        return seat if lap % 2 == 0 else self.world - 1 - seat

    def all_gather(self, obj: Any) -> list:
        """Every process's `obj`, in rank order, on every process."""
        if self.world == 1:
            return [obj]
        import torch.distributed as dist

        out: list = [None] * self.world
        dist.all_gather_object(out, obj, group=self.group)
        return out

    def gather(self, obj: Any) -> list | None:
        """Every process's `obj`, in rank order, on rank 0 (None elsewhere)."""
        if self.world == 1:
            return [obj]
        import torch.distributed as dist

        out: list | None = [None] * self.world if self.main else None
        dist.gather_object(obj, out, dst=0, group=self.group)
        return out

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's `obj`, on every process."""
        if self.world == 1:
            return obj
        import torch.distributed as dist

        box = [obj]
        dist.broadcast_object_list(box, src=0, group=self.group)
        return box[0]

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist

            dist.barrier(group=self.group)

    def first(self, work: Callable[[], T]) -> T:
        """`work` done on rank 0 alone; its result (or its UserError) on every process. A mistake
        found by rank 0 ends every process with the same one line, instead of leaving the others
        waiting for rank 0 forever."""
        if self.world == 1:
            return work()
        result: tuple[Any, str | None] = (None, None)
        if self.main:
            try:
                result = (work(), None)
            except UserError as e:
                result = (None, str(e))
        value, error = self.broadcast(result)
        if error is not None:
            raise UserError(error)
        return value


_current: Processes | None = None
# How long a process that finished its share waits for the others at a gather. Output lengths
# are not known when the work is shared out, so on a long job the shares can end far apart; a
# process that dies ends the launch anyway (torchrun stops the others), so only a bug waits this long.
WAIT = timedelta(hours=6)


def current() -> Processes:
    """This process's place in the launch, from the environment torchrun and accelerate set; with
    more than one process, the process group is started (once)."""
    global _current
    if _current is None:
        _current = _start()
    return _current


def _start() -> Processes:
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Processes()
    import torch
    import torch.distributed as dist

    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if not dist.is_initialized():
        cuda = torch.cuda.is_available()
        if cuda:
            torch.cuda.set_device(local_rank)  # NCCL's collectives run on the current device
        dist.init_process_group("nccl" if cuda else "gloo", timeout=WAIT)
        atexit.register(_stop)
    # results are Python objects in CPU memory: gathered over gloo even where the default group
    # is NCCL (training's, or ours on GPUs), without a device copy and with our timeout
    group = None if dist.get_backend() == "gloo" else dist.new_group(backend="gloo", timeout=WAIT)
    return Processes(dist.get_rank(), dist.get_world_size(), local_rank, group)


def _stop() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def rank_file(path: Path | str, rank: int) -> Path:
    """Rank R's copy of a per-process file: `name.jsonl` for rank 0 (what one process writes),
    `name.rankR.jsonl` for the others."""
    path = Path(path)
    return path if rank == 0 else path.with_name(f"{path.stem}.rank{rank}{path.suffix}")


def rank_files(path: Path | str) -> list[Path]:
    """The other ranks' copies of `path` that exist, from a launch of any size, in rank order."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    pattern = re.compile(re.escape(path.stem) + r"\.rank([1-9][0-9]*)" + re.escape(path.suffix))
    found = [(int(m.group(1)), p) for p in path.parent.iterdir() if (m := pattern.fullmatch(p.name))]
    return [p for _, p in sorted(found)]


class SharedJournal:
    """One `runs.Journal` per process, read as one.

    Each process appends its own results to its own file (`rank_file`). Opening reads every
    process's file that is there, from a launch of any size (one process included), so a run
    resumed with another number of processes still recomputes nothing that was journaled:
    results are keyed by example, not by who computed them. Rank 0 alone repairs torn ends and
    sets aside files from other settings, then hands what is done to the others; `done` is the
    same on every process. `discard` (rank 0) removes every process's file.
    """

    def __init__(self, path: Path | str, header: dict, procs: Processes | None = None):
        self.procs = procs or current()
        self.path = Path(path)
        self._opened: list[Journal] = []
        self.done, self._notes = self.procs.first(lambda: self._open_all(header))
        self.own = self._opened[0] if self.procs.main else Journal(rank_file(self.path, self.procs.rank), header)

    def _open_all(self, header: dict) -> tuple[dict[str, dict], list[str]]:
        self._opened = [Journal(p, header) for p in (self.path, *rank_files(self.path))]
        done: dict[str, dict] = {}
        for j in self._opened:
            done.update(j.done)
        return done, [n for j in self._opened if (n := j.note())]

    def append(self, rows: list[dict]) -> None:
        self.own.append(rows)
        self.done.update((r["key"], r) for r in rows)

    def note(self) -> str | None:
        """What opening found (rank 0; None elsewhere, and for a fresh start)."""
        return "; ".join(self._notes) if self._notes and self.procs.main else None

    def discard(self) -> None:
        """Every process's file gone (rank 0, once all results are gathered and written)."""
        if self.procs.main:
            for p in (self.path, *rank_files(self.path)):
                p.unlink(missing_ok=True)
