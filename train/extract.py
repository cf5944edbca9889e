"""Feature extraction: images (files, or chips of a global image) -> a feature store.

Under ``torchrun`` each rank encodes its own shards; rank 0 merges them after a barrier.
An interrupted extraction resumes where it stopped: finished shards are not redone.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from csp.chips import ChipLoader, EquirectangularImage
from csp.datasets import read_csv
from csp.features import ImageRecord, extract_features, load_image_file, merge_shards
from csp.image_encoder import create_image_encoder
from train.runtime import distributed_session, select_device


@dataclass
class ExtractOptions:
    csv: str
    out: str
    encoder: str = "tf_efficientnet_lite0"
    chips_from: str | None = None  # equirectangular image to cut chips from
    chip_size_deg: float = 2.0
    chip_px: int = 96
    batch_size: int = 64
    num_workers: int = 2
    device: str = "auto"
    progress: bool = True


def records_from_csv(path: str, need_paths: bool) -> list[ImageRecord]:
    """Image records (id, path, lon, lat, label) from a located CSV."""
    records = read_csv(path)
    if need_paths and any(p is None for p in records.paths):
        raise ValueError(f"{path}: an image path column is needed (or use --chips-from)")
    labels = records.labels
    names = records.class_names
    return [
        ImageRecord(
            id=records.ids[i],
            path=records.paths[i],
            lon=float(records.lonlat[i, 0]),
            lat=float(records.lonlat[i, 1]),
            label=names[labels[i]] if labels is not None and names and labels[i] >= 0 else None,
        )
        for i in range(len(records))
    ]


def run_extract(options: ExtractOptions) -> dict[str, Any]:
    """Encode the images of ``options.csv`` into ``options.out``; returns this rank's report."""
    device = select_device(options.device)
    records = records_from_csv(options.csv, need_paths=options.chips_from is None)
    if options.chips_from:
        image = EquirectangularImage.open(options.chips_from)
        loader = ChipLoader(image, options.chip_size_deg, options.chip_px)
        image_size = options.chip_px
    else:
        loader, image_size = load_image_file, None
    encoder = create_image_encoder(options.encoder, device=device, image_size=image_size)
    with distributed_session(device) as session:
        report = extract_features(
            records,
            encoder,
            options.out,
            image_loader=loader,
            batch_size=options.batch_size,
            num_workers=options.num_workers,
            rank=session.rank,
            world_size=session.world_size,
            progress=options.progress and session.is_main,
        )
        session.barrier()
        if session.is_main:
            merge_shards(options.out)
    return asdict(report)
