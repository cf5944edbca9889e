"""``python -m train``: extract features, pre-train, fine-tune, evaluate, rebuild the default.

Every training command reads a preset from ``train/configs/`` and ``--set key.path=value``
overrides; the run directory (``--out``) receives the resolved config, a metrics log and the
checkpoints. Multi-GPU / multi-node: launch the same command with ``torchrun``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from train.lifecycle import RunCancelled

if TYPE_CHECKING:
    from train.config import FinetuneConfig

EPILOG = """\
examples:
  python -m train pretrain --preset csp-mc-bld --features runs/chips/features --out runs/pre
  python -m train finetune --preset finetune --init-from runs/pre/checkpoints/best \\
      --label-fraction 0.1 --out runs/ft10
  python -m train finetune --preset sup-only --set model.encoding=sphereC+ --out runs/sup
  python -m train evaluate --checkpoint runs/ft10/checkpoints/best
  python -m train finetune --data my_records.csv --lon-col x --lat-col y --label-col spid --out runs/mine
  python -m train predict --checkpoint runs/mine --points sites.csv --out scores.csv
  python -m train predict --checkpoint runs/mine --raster map.tif --bbox -125,32,-114,42 --resolution 0.05
  python -m train evaluate --checkpoint runs/mine --presence-absence sites_pa.csv
  torchrun --nproc_per_node 4 -m train pretrain --preset csp-mc-bld --features ... --out ...
  python -m train build-default           # rebuild assets/default (about 6 min on 2 idle CPU cores)
  python -m train experiment prior        # the shipped recipe vs the baselines over 5 training seeds
  python -m train experiment fewshot      # the few-shot results table
  python -m train experiment geoaware     # geo-aware classification: fix / break rates
  python -m train build-captive           # assets/default/captive_places.csv (zoo rule places)
  python -m train experiment where        # "where could this be?" benchmark of the CSP map
  python -m train convert-official model_fmow_gridcell_....pth.tar --out runs/official-fmow
"""


def _add_training_options(parser: argparse.ArgumentParser, default_preset: str) -> None:
    parser.add_argument(
        "--preset", default=default_preset, help="preset name in train/configs or a YAML path"
    )
    parser.add_argument(
        "--encoding",
        help="position encoding with its default settings (csp.encodings; same as --set model.encoding=NAME)",
    )
    parser.add_argument("--out", help="run directory (shortcut for runtime.out_dir)")
    parser.add_argument("--epochs", type=int, help="shortcut for optim.epochs")
    parser.add_argument("--device", help="auto | cpu | cuda | cuda:N | mps")
    parser.add_argument("--seed", type=int, help="shortcut for runtime.seed")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override any config field, e.g. --set loss.temperature=0.5 (repeatable)",
    )
    parser.add_argument("--resume", action="store_true", help="continue the run in --out")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def _shortcut_overrides(args: argparse.Namespace) -> list[str]:
    pairs = {
        "runtime.out_dir": args.out,
        "optim.epochs": args.epochs,
        "runtime.device": args.device,
        "runtime.seed": args.seed,
    }
    overrides = [f"{k}={v}" for k, v in pairs.items() if v is not None]
    if args.no_progress:
        overrides.append("runtime.progress=false")
    return overrides + list(args.overrides)


def _cmd_pretrain(args: argparse.Namespace) -> int:
    from train.config import PretrainConfig, load_config
    from train.pretrain import run_pretrain

    overrides = _shortcut_overrides(args)
    if args.features:
        overrides.insert(0, f"features={args.features}")
    if args.locations:
        overrides.insert(0, f"locations={args.locations}")
    config = load_config(PretrainConfig, args.preset, overrides, encoding=args.encoding)
    if not config.features:
        raise ValueError("pretrain needs --features DIR (a feature store from `extract`) or a feature .npy")
    result = run_pretrain(config, resume=args.resume)
    _summary("pretrain", result)
    return 0


FINETUNE_FLAGS = {  # --flag -> config key (each is a shortcut for --set KEY=VALUE)
    "init_from": "init_from",
    "label_fraction": "data.label_fraction",
    "data": "data.csv",
    "lon_col": "data.lon_col",
    "lat_col": "data.lat_col",
    "label_col": "data.label_col",
    "date_col": "data.date_col",
    "delimiter": "data.delimiter",
    "clean": "data.clean",
    "val": "data.val_csv",
    "test": "data.test_csv",
    "background": "background",
    "scale": "scale",
    "metric": "metric",
    "select": "select",
}


def finetune_config(args: argparse.Namespace) -> FinetuneConfig:
    """The fine-tuning configuration ``python -m train finetune ...`` runs with (the CLI edge:
    strings become a typed config here)."""
    from train.config import FinetuneConfig, load_config

    given = {key: getattr(args, dest) for dest, key in FINETUNE_FLAGS.items()}
    flags = [f"{key}={value}" for key, value in given.items() if value is not None]
    overrides = flags + _shortcut_overrides(args)  # an explicit --set wins over a flag
    if args.reencode:
        overrides.append("reencode=true")
    return load_config(FinetuneConfig, args.preset, overrides, encoding=args.encoding)


def _cmd_finetune(args: argparse.Namespace) -> int:
    from train.finetune import run_finetune

    result = run_finetune(finetune_config(args), resume=args.resume)
    _summary("finetune", result)
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    if args.presence_absence is not None:
        from train.sites import evaluate_presence_absence

        sites = None if args.presence_absence == "run" else args.presence_absence
        result = evaluate_presence_absence(args.checkpoint, sites)
        print(result.table())
        print(json.dumps({"means": result.means(), "kde_bandwidth_km": result.kde_bandwidth_km}))
        return 0
    from train.evaluate import evaluate_checkpoint, format_comparison

    results = evaluate_checkpoint(
        args.checkpoint,
        split=args.split,
        csv=args.csv,
        image_probs=args.image_probs,
        baselines=args.split != "train",
        image_class_prior=args.image_class_prior,
    )
    if args.json or "comparison" not in results:
        print(json.dumps(results, indent=2))
    else:
        print(format_comparison(results["comparison"]))
    return 0


def _cmd_predict(args: argparse.Namespace) -> int:
    from train.predict import PredictRequest, run_predict

    request = PredictRequest(
        checkpoint=args.checkpoint,
        points=args.points,
        out=args.out,
        embeddings=args.embeddings,
        raster=args.raster,
        bbox=args.bbox,
        resolution=args.resolution,
        classes=tuple(args.classes) if args.classes else None,
        lon_col=args.lon_col or "auto",
        lat_col=args.lat_col or "auto",
        delimiter=args.delimiter or "auto",
    )
    for line in run_predict(request):
        print(line)
    return 0


def _cmd_extract(args: argparse.Namespace) -> int:
    from train.extract import ExtractOptions, run_extract

    options = ExtractOptions(
        csv=args.csv,
        out=args.out,
        encoder=args.encoder,
        chips_from=args.chips_from,
        chip_size_deg=args.chip_size_deg,
        chip_px=args.chip_px,
        batch_size=args.batch_size,
        num_workers=args.workers,
        device=args.device,
    )
    report = run_extract(options)
    print(json.dumps(report, indent=2))
    return 0


def _cmd_build_default(args: argparse.Namespace) -> int:
    from train.build_default import BuildOptions, build_default

    report = build_default(
        BuildOptions(
            out=Path(args.out),
            work=Path(args.work),
            quick=args.quick,
            pretrained=Path(args.pretrained) if args.pretrained else None,
            finetune_epochs=args.finetune_epochs,
        )
    )
    print(report)
    return 0


def _cmd_build_captive(args: argparse.Namespace) -> int:
    from train.geoaware import build_captive

    print(build_captive(Path(args.out)))
    return 0


def _seeds(text: str) -> tuple[int, ...]:
    return tuple(int(s) for s in text.split(","))


def _cmd_experiment(args: argparse.Namespace) -> int:
    if args.name == "where":
        from train.where import WhereOptions, run_where

        print(
            run_where(
                WhereOptions(
                    chips=Path(args.chips),
                    checkpoints=tuple(Path(c) for c in args.checkpoint or ["assets/default/csp"]),
                    split=args.split,
                    out=Path(args.out or "runs/where"),
                    pool=Path(args.pool) if args.pool else None,
                )
            )
        )
        return 0
    if args.name == "geoaware":
        from train.geoaware import GeoAwareOptions, run_geoaware

        options = GeoAwareOptions(model_dir=Path(args.model_dir), out=Path(args.out or "runs/geoaware"))
        print(run_geoaware(options))
        return 0
    if args.name == "prior":
        from train.prior_seeds import PriorSeedsOptions, run_prior_seeds

        prior_options = PriorSeedsOptions(
            out=Path(args.out or "runs/prior-seeds"),
            features=Path(args.features),
            seeds=_seeds(args.seeds or "0,1,2,3,4"),
            split_seed=args.split_seed,
        )
        print(run_prior_seeds(prior_options))
        return 0
    from train.experiment import FewShotOptions, run_fewshot

    given = {
        "encodings": args.encodings and tuple(args.encodings.split(",")),
        "seeds": args.seeds and _seeds(args.seeds),
        "methods": args.methods and tuple(args.methods.split(",")),
        "fractions": args.fractions and tuple(float(f) for f in args.fractions.split(",")),
        "pretrain_epochs": args.pretrain_epochs,
        "patience": args.patience,
    }
    options = FewShotOptions(
        out=Path(args.out or "runs/fewshot"),
        features=Path(args.features),
        **{k: v for k, v in given.items() if v is not None},  # the rest: FewShotOptions' defaults
    )
    print(run_fewshot(options))
    return 0


def _summary(stage: str, result) -> None:
    if int(os.environ.get("RANK", 0)) == 0:
        figures = {k: round(v, 4) for k, v in result.best_metrics.items() if isinstance(v, float)}
        print(f"{stage} done: best {result.best_dir} ({json.dumps(figures)})")


def _cmd_convert_official(args: argparse.Namespace) -> int:
    from train.convert_official import run_convert

    return run_convert(args.checkpoint, args.out, args.stage, args.class_names)


def _add_extract(commands: argparse._SubParsersAction) -> None:
    extract = commands.add_parser("extract", help="encode images into a feature store")
    extract.add_argument("--csv", required=True, help="CSV with lat/lon (+ image path) columns")
    extract.add_argument("--out", required=True, help="feature store directory")
    extract.add_argument("--encoder", default="tf_efficientnet_lite0", help="timm model name")
    extract.add_argument(
        "--chips-from", help="cut chips from this equirectangular image instead of reading paths"
    )
    extract.add_argument("--chip-size-deg", type=float, default=2.0)
    extract.add_argument("--chip-px", type=int, default=96)
    extract.add_argument("--batch-size", type=int, default=64)
    extract.add_argument("--workers", type=int, default=2)
    extract.add_argument("--device", default="auto")
    extract.set_defaults(run=_cmd_extract)


def _add_pretrain(commands: argparse._SubParsersAction) -> None:
    pretrain = commands.add_parser("pretrain", help="CSP self-supervised pre-training")
    _add_training_options(pretrain, "csp-mc-bld")
    pretrain.add_argument("--features", help="feature store directory from `extract`, or a feature .npy")
    pretrain.add_argument(
        "--locations", help="with a feature .npy: its rows' locations (.npy, .csv or reference .json)"
    )
    pretrain.set_defaults(run=_cmd_pretrain)


def _add_finetune(commands: argparse._SubParsersAction) -> None:
    from train.config import CLEANING_LEVELS, METRICS, SELECT

    finetune = commands.add_parser(
        "finetune",
        help="supervised presence-only fine-tuning (the bundled species data, or your own file)",
        description="Train a species range model on presence-only records. Your own data: "
        "--data FILE (CSV, TSV or GBIF occurrence.txt; columns recognised by name or given "
        "with --lon-col/--lat-col/--label-col). See docs/own-data.md.",
    )
    _add_training_options(finetune, "finetune")
    finetune.add_argument("--init-from", help="pre-trained checkpoint directory")
    finetune.add_argument(
        "--reencode",
        action="store_true",
        help="with --init-from and another --encoding: train a new first layer on that encoding",
    )
    finetune.add_argument("--label-fraction", type=float, help="few-shot: 0.05, 0.1, 0.2, 1.0")
    finetune.add_argument("--data", "--csv", dest="data", help="occurrence file (CSV/TSV)")
    for role in ("lon", "lat", "label", "date"):
        finetune.add_argument(f"--{role}-col", help=f"name of the {role} column (default: by name)")
    finetune.add_argument("--delimiter", help="field separator (default: sniffed)")
    finetune.add_argument(
        "--clean",
        choices=[*CLEANING_LEVELS, "auto"],
        help="cleaning rules (default auto: inat for the bundled data, basic for yours)",
    )
    finetune.add_argument("--val", help="your own validation data (presences or 0/1 sites)")
    finetune.add_argument("--test", help="your own test data (presences or 0/1 sites)")
    finetune.add_argument("--metric", choices=[*METRICS, "auto"], help="early-stopping metric")
    finetune.add_argument("--select", choices=list(SELECT), help="keep the best or the last epoch")
    finetune.add_argument(
        "--background",
        help="background points: globe | extent | hull | a polygon file | a points CSV",
    )
    finetune.add_argument(
        "--scale", choices=["auto", "fixed"], help="finest wavelength from the data's extent"
    )
    finetune.set_defaults(run=_cmd_finetune)


def _add_evaluate(commands: argparse._SubParsersAction) -> None:
    evaluate = commands.add_parser("evaluate", help="top-1/3/5 and MRR of a checkpoint")
    evaluate.add_argument("--checkpoint", required=True, help="fine-tuned checkpoint directory")
    evaluate.add_argument("--split", default="test", choices=["train", "val", "test"])
    evaluate.add_argument("--csv", help="observations CSV (default: the one it was trained on)")
    evaluate.add_argument(
        "--image-probs", help=".npy of p(y|I), (points in the split, classes): adds geo-aware metrics"
    )
    evaluate.add_argument(
        "--image-class-prior",
        default="balanced",
        help="classes the image model was trained on: balanced (as ImageNet; default) or the "
        "prior's own class frequency (csp.fusion.IMAGE_CLASS_PRIORS)",
    )
    evaluate.add_argument(
        "--presence-absence",
        nargs="?",
        const="run",
        metavar="FILE",
        help="per-species AUC at presence-absence sites, with the KDE baseline "
        "(no FILE: the run's --test sites)",
    )
    evaluate.add_argument("--json", action="store_true", help="print every figure as JSON, not the table")
    evaluate.set_defaults(run=_cmd_evaluate)


def _add_predict(commands: argparse._SubParsersAction) -> None:
    predict = commands.add_parser(
        "predict",
        help="scores at your points, embeddings, GeoTIFF range maps",
        description="Per-species presence scores in [0, 1] of a trained model (a run, checkpoint "
        "or model directory) at the points of a CSV, their location embeddings, or a GeoTIFF map.",
    )
    predict.add_argument("--checkpoint", required=True, help="run, checkpoint or model directory")
    predict.add_argument("--points", help="CSV/TSV of points (its columns are kept in --out)")
    predict.add_argument("--lon-col", help="longitude column of --points (default: by name)")
    predict.add_argument("--lat-col", help="latitude column of --points (default: by name)")
    predict.add_argument("--delimiter", help="field separator of --points (default: sniffed)")
    predict.add_argument("--out", help="scores CSV: the points' rows plus one column per class")
    predict.add_argument("--classes", nargs="+", metavar="NAME", help="only these classes")
    predict.add_argument("--embeddings", metavar="NPY", help="location embeddings (points, E) .npy")
    predict.add_argument("--raster", metavar="TIF", help="GeoTIFF of scores, one band per class")
    predict.add_argument("--bbox", metavar="W,S,E,N", help="raster extent in degrees")
    predict.add_argument("--resolution", type=float, metavar="DEG", help="raster cell size in degrees")
    predict.set_defaults(run=_cmd_predict)


def _add_build_default(commands: argparse._SubParsersAction) -> None:
    build = commands.add_parser("build-default", help="rebuild the shipped default model")
    build.add_argument("--out", default="assets/default", help="model directory to write")
    build.add_argument("--work", default="runs/build-default", help="scratch directory")
    build.add_argument("--quick", action="store_true", help="small, fast build (for tests)")
    build.add_argument("--pretrained", help="reuse this CSP checkpoint (no chips, no pre-training)")
    build.add_argument("--finetune-epochs", type=int, help="fine-tuning epochs (default: the build plan's)")
    build.set_defaults(run=_cmd_build_default)


def _add_build_captive(commands: argparse._SubParsersAction) -> None:
    captive = commands.add_parser("build-captive", help="write the known captive places (zoo rule)")
    captive.add_argument("--out", default="assets/default", help="model directory to write into")
    captive.set_defaults(run=_cmd_build_captive)


def _add_experiment(commands: argparse._SubParsersAction) -> None:
    experiment = commands.add_parser("experiment", help="experiments (fewshot, where, geoaware, prior)")
    experiment.add_argument("name", choices=["fewshot", "where", "geoaware", "prior"])
    experiment.add_argument("--out", help="results directory (default runs/<name>)")
    experiment.add_argument("--model-dir", default="assets/default", help="geoaware: the model to test")
    experiment.add_argument(
        "--features",
        default="runs/build-default/features",
        help="pre-training feature store (made by build-default)",
    )
    fewshot = experiment.add_argument_group("fewshot (train/experiment.py; defaults: the shipped build's)")
    fewshot.add_argument("--encodings", help="position encodings (default: the shipped preset's)")
    fewshot.add_argument("--fractions", help="label fractions (default 0.05,0.1,0.2,1.0)")
    experiment.add_argument("--seeds", help="training seeds (default 0,1,2,3,4)")
    experiment.add_argument(
        "--split-seed", type=int, default=0, help="prior: the leak-free split's seed (default 0, shipped)"
    )
    fewshot.add_argument(
        "--methods", help="sup-only and pre-training presets (default: sup-only and the build's)"
    )
    fewshot.add_argument(
        "--pretrain-epochs", type=int, help="default: the build's (BuildPlan.pretrain_epochs)"
    )
    fewshot.add_argument(
        "--patience",
        type=int,
        help="fine-tuning: epochs without a better validation MRR before it stops (FewShotOptions.patience)",
    )
    where = experiment.add_argument_group("where (image -> location benchmark, train/where.py)")
    where.add_argument(
        "--checkpoint", action="append", help="pre-trained CSP model (repeatable; default assets/default/csp)"
    )
    where.add_argument("--chips", default="runs/chips", help="benchmark chip stores (made if missing)")
    where.add_argument("--split", default="test", choices=["test", "val"])
    where.add_argument("--pool", help="a pre-training feature store: adds its nearest-chip baseline")
    experiment.set_defaults(run=_cmd_experiment)


def _add_convert_official(commands: argparse._SubParsersAction) -> None:
    convert = commands.add_parser("convert-official", help="convert a CSP reference-code checkpoint")
    convert.add_argument("checkpoint", help="the reference code's .pth.tar file (read safely)")
    convert.add_argument("--out", required=True, help="model directory to write (prior/ and/or csp/)")
    convert.add_argument("--stage", default="auto", choices=["auto", "pretrain", "finetune"])
    convert.add_argument("--class-names", help="text file: one class name per class-head row")
    convert.set_defaults(run=_cmd_convert_official)


SUBCOMMANDS: list[Callable[[argparse._SubParsersAction], None]] = [
    _add_extract,
    _add_pretrain,
    _add_finetune,
    _add_evaluate,
    _add_predict,
    _add_build_default,
    _add_build_captive,
    _add_experiment,
    _add_convert_official,
]
"""One function per subcommand, each adding its parser (and ``run``) to the subparsers; a new
subcommand is one more function here."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m train",
        description=__doc__,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for add in SUBCOMMANDS:
        add(commands)
    return parser


NEGATIVE_VALUE_OPTIONS = ("--bbox",)
"""Options whose value may start with a minus sign (``--bbox -125,32,-114,42``), which argparse
would otherwise read as another option."""


def _join_negative_values(argv: Sequence[str]) -> list[str]:
    """``--bbox -125,...`` -> ``--bbox=-125,...`` for :data:`NEGATIVE_VALUE_OPTIONS`."""
    joined: list[str] = []
    for arg in argv:
        if joined and joined[-1] in NEGATIVE_VALUE_OPTIONS and arg.startswith("-") and arg[1:2].isdigit():
            joined[-1] = f"{joined[-1]}={arg}"
        else:
            joined.append(arg)
    return joined


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(_join_negative_values(sys.argv[1:] if argv is None else argv))
    run: Callable[[argparse.Namespace], int] = args.run
    try:
        return run(args)
    except (ValueError, FileNotFoundError, FileExistsError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except RunCancelled as err:
        print(f"cancelled: {err}", file=sys.stderr)
        return 143


if __name__ == "__main__":
    sys.exit(main())
