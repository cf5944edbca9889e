"""What a training objective reads for one batch: its rows of the data, and its negative locations.

Rows (:class:`BatchRows`) are either held on the training device (``stream=False``: moved there
once, floating columns as float32) or streamed (``stream=True``): the columns stay on the host,
typically a feature store's float16 rows (:meth:`csp.features.FeatureStore.tensors`: a memory
map, or a file read row by row), and each batch gathers only its own rows there, into pinned
memory when the device is a GPU, then copies them without blocking and casts them to float32 on
the device. Memory then stays
at a few batches whatever the data size, and under ``torchrun`` each process reads only the rows
of its own share of the batch. Both ways give the same float32 values, so the same weights.

Negative locations (:func:`negative_locations`) are drawn by the objective from a location
sampler (:class:`csp.samplers.LocationSampler`: uniform on the sphere, on land, in a region):
every process draws the whole global batch's negatives from the same seeded generator and keeps
the rows of its own share, so two processes train exactly as one.
"""

from __future__ import annotations

import torch
from torch import Tensor

from csp.features import RowFile
from csp.samplers import LocationSampler
from train.runtime import Distributed

Column = Tensor | RowFile
"""A per-item column: a tensor, or a float16 store file read row by row."""


class BatchRows:
    """Per-item columns gathered for a batch of indices onto ``device``.

    Args:
        columns: name -> ``(N, ...)`` tensor on the host (or already on ``device`` when not
            streaming), or a :class:`csp.features.RowFile`; all with the same N. Floating
            columns arrive as float32.
        device: the training device.
        stream: gather each batch on the host and copy it (see module docstring), instead of
            moving every column to the device once.
        rows: optional ``(n,)`` int64 host tensor: item ``i`` is row ``rows[i]`` of the columns
            (a split, without copying the columns); default: item ``i`` is row ``i``.
    """

    def __init__(
        self,
        columns: dict[str, Column],
        device: torch.device,
        stream: bool,
        rows: Tensor | None = None,
    ) -> None:
        sizes = {name: column.shape[0] for name, column in columns.items()}
        if len(set(sizes.values())) > 1:
            raise ValueError(f"columns differ in length: {sizes}")
        self.device = device
        self.stream = stream
        self.pin = stream and device.type == "cuda"
        if stream:
            self.columns = columns
            self.rows = rows.cpu() if rows is not None else None
        else:
            self.columns = {name: _on_device(_select(c, rows), device) for name, c in columns.items()}
            self.rows = None
        self.num_items = int(len(rows) if rows is not None else next(iter(sizes.values())))

    def __len__(self) -> int:
        return self.num_items

    def take(self, indices: Tensor) -> dict[str, Tensor]:
        """``(b,)`` int64 item indices on the host -> each column's ``(b, ...)`` rows on the
        device (floating columns float32)."""
        if not self.stream:
            if indices.device != self.device:
                indices = (indices.pin_memory() if self.device.type == "cuda" else indices).to(
                    self.device, non_blocking=True
                )
            return {name: column[indices] for name, column in self.columns.items()}
        rows = self.rows[indices] if self.rows is not None else indices
        return {name: self._gather(column, rows) for name, column in self.columns.items()}

    def _gather(self, column: Column, rows: Tensor) -> Tensor:
        out = torch.empty((len(rows), *column.shape[1:]), dtype=column.dtype, pin_memory=self.pin)
        if isinstance(column, RowFile):
            column.read_into(rows, out)
        else:
            torch.index_select(column, 0, rows, out=out)
        out = out.to(self.device, non_blocking=True)
        return out.float() if out.is_floating_point() else out


def _select(column: Column, rows: Tensor | None) -> Tensor:
    if isinstance(column, RowFile):
        return column[rows if rows is not None else torch.arange(len(column))]
    return column if rows is None else column[rows.to(column.device)]


def _on_device(column: Tensor, device: torch.device) -> Tensor:
    column = column.to(device)
    return column.float() if column.is_floating_point() else column


def negative_locations(
    sampler: LocationSampler,
    batch: int,
    per_item: int,
    generator: torch.Generator,
    session: Distributed,
    device: torch.device,
) -> Tensor:
    """``(batch, per_item, 2)`` negative locations (degrees) for this process's ``batch`` items.

    Draws ``batch * world_size * per_item`` points from ``sampler`` and keeps this process's
    contiguous share, as :class:`csp.samplers.BatchIndexSampler` splits the global batch.
    """
    points = sampler(batch * session.world_size * per_item, generator=generator, device=device)
    points = points.view(batch * session.world_size, per_item, 2)
    return points[session.rank * batch : (session.rank + 1) * batch]
