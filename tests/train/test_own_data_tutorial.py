"""docs/own-data.md runs as written: its shell blocks, on tiny files of the layout it describes."""

import csv
import re
from pathlib import Path

import numpy as np
import rasterio

from tests.train.test_own_data import REGION_CENTRES, write_sites_csv
from train.cli import main

ROOT = Path(__file__).resolve().parents[2]
TUTORIAL = ROOT / "docs" / "own-data.md"


def shell_commands(markdown: str) -> list[str]:
    """The commands of the ```bash blocks, continuation lines joined."""
    blocks = re.findall(r"```bash\n(.*?)```", markdown, flags=re.S)
    return [
        command.strip()
        for block in blocks
        for command in block.replace("\\\n", " ").splitlines()
        if command.strip()
    ]


def _write_records(path: Path, per_species: int = 50) -> None:
    rng = np.random.default_rng(0)
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["spid", "x", "y", "date"])
        for name, (lon, lat) in REGION_CENTRES.items():
            for k, (dx, dy) in enumerate(rng.normal(0, 0.6, (per_species, 2))):
                writer.writerow([name, round(lon + dx, 4), round(lat + dy, 4), f"2020-01-{k % 28 + 1:02d}"])


def test_tutorial_commands_run_from_a_raw_csv_to_a_geotiff(tmp_path, monkeypatch):
    commands = shell_commands(TUTORIAL.read_text())
    assert [c.split()[3] for c in commands] == ["finetune", "evaluate", "predict", "predict"]
    _write_records(tmp_path / "my_records.csv")
    write_sites_csv(tmp_path / "my_sites_pa.csv", n=60)
    (tmp_path / "my_sites.csv").write_text("site,x,y\nA,-120.0,37.0\nB,-117.0,33.5\n")
    monkeypatch.chdir(tmp_path)
    for command in commands:  # in this process: the same entry point as `python -m train`
        assert command.startswith("python -m train ")
        assert main(command.split()[3:]) == 0, command
    assert (tmp_path / "scores.csv").read_text().splitlines()[0] == "site,x,y,sp1,sp2,sp3,sp4"
    with rasterio.open(tmp_path / "sp1.tif") as tif:
        assert tif.count == 2 and tif.crs.to_epsg() == 4326 and tif.descriptions == ("sp1", "sp2")
