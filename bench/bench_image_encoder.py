"""Throughput of the default frozen image encoder (tf_efficientnet_lite0, real ImageNet weights)
on this machine. Not a test: prints images/second (median of repeats after warm-up) for the
encoder forward pass (pooled features, what feature extraction runs) and for preprocessing
(PIL image -> normalised tensor), at each input size.

    python bench/bench_image_encoder.py [--sizes 224 96] [--batch-size 32] [--repeats 5] [--threads N]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch
from PIL import Image
from skimage import data

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from timing import median_seconds  # noqa: E402

from csp.image_encoder import DEFAULT_ENCODER, create_image_encoder  # noqa: E402


def bench_size(name: str, size: int, batch_size: int, repeats: int) -> None:
    encoder = create_image_encoder(name, image_size=size)
    photos = [Image.fromarray(img) for img in (data.chelsea(), data.coffee(), data.rocket())]
    images = [photos[i % len(photos)] for i in range(batch_size)]
    pixels = encoder.preprocess(images)
    forward = median_seconds(lambda: encoder.features(pixels), repeats)
    preprocess = median_seconds(lambda: encoder.preprocess(images), repeats)
    print(
        f"{name} @ {size:>3} px, batch {batch_size}: "
        f"forward {batch_size / forward:7.1f} img/s ({1000 * forward / batch_size:6.2f} ms/img), "
        f"preprocess {batch_size / preprocess:7.1f} img/s (one process)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--encoder", default=DEFAULT_ENCODER)
    parser.add_argument("--sizes", type=int, nargs="+", default=[224, 96])
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    args = parser.parse_args()
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, CPU, float32; "
          f"median of {args.repeats} after 2 warm-up batches")
    for size in args.sizes:
        bench_size(args.encoder, size, args.batch_size, args.repeats)


if __name__ == "__main__":
    main()
