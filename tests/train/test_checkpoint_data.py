"""A checkpoint's recorded data configuration, read in another checkout."""

from csp.checkpoint import CheckpointMeta
from train.config import DEFAULT_COUNTRIES, DEFAULT_SPECIES_CSV, DataConfig
from train.evaluate import checkpoint_data_config, shipped_equivalent


def _meta(data: dict) -> CheckpointMeta:
    return CheckpointMeta(location_encoder={}, train={"config": {"data": data}})


def test_shipped_files_recorded_by_another_checkout_are_found_here():
    elsewhere = "/nonexistent/other-checkout/assets"
    data = checkpoint_data_config(
        _meta(
            {
                "csv": f"{elsewhere}/data/yfcc_inat2017_species.csv",
                "countries": f"{elsewhere}/basemap/naturalearth_110m_countries.geojson",
                "split": "spatial",
            }
        )
    )
    assert data.csv == DEFAULT_SPECIES_CSV and data.countries == DEFAULT_COUNTRIES
    assert data.bundled and data.cleaning == "inat" and data.split == "spatial"


def test_other_paths_are_kept_as_recorded(tmp_path):
    own = tmp_path / "mine.csv"
    own.write_text("lon,lat,species\n")
    assert shipped_equivalent(str(own)) == str(own)
    assert shipped_equivalent("/nonexistent/data/mine.csv") == "/nonexistent/data/mine.csv"
    # inside an assets folder, but not a file shipped here
    assert shipped_equivalent("/nonexistent/assets/data/mine.csv") == "/nonexistent/assets/data/mine.csv"
    assert checkpoint_data_config(_meta({})) == DataConfig()
