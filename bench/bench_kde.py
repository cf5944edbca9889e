"""Speed of the baselines on the real species data: ``python bench/bench_kde.py``.

Scores every test query of the leak-free split against every training point for every class
(the issue's case: about 2,800 queries x 24k training points x 4,402 classes) with the
spherical KDE and kNN baselines, and prints the median wall time of ``--repeats`` runs, the
torch thread count and the load average (this machine is shared: read figures with it).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.timing import median_seconds  # noqa: E402
from csp.baselines import KNNVote, SphericalKDE, scorer_ranks  # noqa: E402
from train.config import DataConfig  # noqa: E402
from train.data import load_species  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--bandwidth-km", type=float, default=100.0)
    parser.add_argument("--k", type=int, default=30)
    parser.add_argument("--block", type=int, default=256)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    splits = load_species(DataConfig())
    records, classes = splits.records, len(splits.class_names)
    train_lonlat, train_labels = records.lonlat[splits.train], records.labels[splits.train]
    query, labels = (
        torch.from_numpy(records.lonlat[splits.test]),
        torch.from_numpy(records.labels[splits.test]),
    )
    print(
        f"{len(query):,} queries x {len(train_labels):,} training points x {classes:,} classes; "
        f"torch threads {args.threads}; load average before {os.getloadavg()[0]:.2f} (shared machine)"
    )
    scorers = {
        f"KDE ({args.bandwidth_km:g} km)": SphericalKDE(
            train_lonlat, train_labels, classes, args.bandwidth_km
        ),
        f"kNN (k = {args.k})": KNNVote(train_lonlat, train_labels, classes, args.k),
    }
    for name, scorer in scorers.items():
        seconds = median_seconds(lambda s=scorer: scorer_ranks(s, query, labels, args.block), args.repeats, 1)
        print(
            f"{name}: median {seconds:.2f} s over {args.repeats} runs ({len(query) / seconds:,.0f} queries/s)"
        )
    print(f"load average after {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
