"""The shipped split (assets/default/split.csv) keeps the protocol's 10 km guarantee."""

from __future__ import annotations

import numpy as np
import pandas as pd

from csp.splits import DEFAULT_BUFFER_KM, min_distance_to_train_km
from train.build_default import SPLIT_FILE
from train.config import DEFAULT_SPECIES_CSV

SHIPPED = f"assets/default/{SPLIT_FILE}"


def test_no_held_out_observation_within_10_km_of_a_same_species_training_observation():
    split = pd.read_csv(SHIPPED, dtype={"yfcc_id": str, "split": str})
    assert list(split.columns) == ["yfcc_id", "split"]
    assert set(split["split"]) == {"train", "val", "test"}
    assert split["yfcc_id"].is_unique and not split["yfcc_id"].str.startswith("pseudo").any()
    observations = pd.read_csv(DEFAULT_SPECIES_CSV, dtype={"yfcc_id": str})
    joined = split.merge(observations, on="yfcc_id", how="left", validate="one_to_one")
    assert joined["label"].notna().all()  # every listed id is a real observation
    lonlat = joined[["longitude", "latitude"]].to_numpy(dtype=np.float64)
    labels = pd.factorize(joined["label"])[0]
    train = np.flatnonzero(joined["split"].to_numpy() == "train")
    held_out = np.flatnonzero(joined["split"].to_numpy() != "train")
    assert len(held_out) > 4000
    distance = min_distance_to_train_km(lonlat, labels, train, held_out)
    assert distance.min() > DEFAULT_BUFFER_KM
