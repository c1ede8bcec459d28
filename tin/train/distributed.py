"""Collectives that also work in a single process (no process group)."""

from __future__ import annotations

import torch
import torch.distributed as dist


def distributed() -> bool:
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def all_reduce_sum(values: torch.Tensor) -> torch.Tensor:
    """Sum of ``values`` over all ranks (a copy; the input is untouched)."""
    total = values.clone()
    if distributed():
        dist.all_reduce(total)
    return total


def gather_objects(value: object) -> list[object]:
    """Every rank's picklable ``value``, in rank order, on every rank."""
    if not distributed():
        return [value]
    values: list[object] = [None] * dist.get_world_size()
    dist.all_gather_object(values, value)
    return values


def gather_rows(rows: torch.Tensor) -> torch.Tensor:
    """Concatenate every rank's (n_rank, ...) tensor along dim 0, n_rank may differ per rank.

    Every rank receives the whole result, in rank order.
    """
    if not distributed():
        return rows
    count = torch.tensor([rows.shape[0]], device=rows.device)
    counts = [torch.zeros_like(count) for _ in range(dist.get_world_size())]
    dist.all_gather(counts, count)
    sizes = [int(c) for c in counts]
    padded = rows.new_zeros((max(sizes), *rows.shape[1:]))
    padded[: rows.shape[0]] = rows
    gathered = [torch.empty_like(padded) for _ in sizes]
    dist.all_gather(gathered, padded)
    return torch.cat([part[:size] for part, size in zip(gathered, sizes, strict=True)])
