"""The predictor API: everything the app asks of a trained model, in one small class.

A model directory (the shipped default is ``assets/default``) holds:

* ``prior/``: a :class:`~csp.models.LocationEncoder` checkpoint with a class head (the location
  prior over species), see :mod:`csp.checkpoint`;
* ``csp/`` (optional): the pre-trained :class:`~csp.models.LocationImageEncoder` whose image
  projection and location encoder share the contrastive space (image -> "where could this be");
* ``imagenet_species_link.csv`` (optional): ImageNet classes linked to species of the prior.

* ``captive_places.csv`` (optional): known zoo / aquarium / park places (:mod:`csp.captive`).

Geo-aware classification (:meth:`Predictor.classify`) fuses the image probabilities with the
location prior by the rule of :mod:`csp.fusion` (a tempered, bounded likelihood ratio applied
within the group of linked image classes; a confident image class is never replaced by the
prior alone) and flags photos that look captive (:mod:`csp.captive`; modes wild / captive /
auto). Species are found by scientific or common name with :mod:`csp.names`.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from csp.captive import (
    CAPTIVE_FILE,
    CaptiveCheck,
    CaptiveSites,
    assess_captive,
    check_mode,
    range_ratio,
    read_captive_places,
)
from csp.checkpoint import META_FILE, CheckpointError, CheckpointMeta, describe_model, load_checkpoint
from csp.fusion import CONFIDENT, FusionParams, LinkArrays, calibrate, frequency_from_counts, fuse
from csp.geo import lonlat_grid, validate_lonlat
from csp.models import LocationEncoder, LocationImageEncoder
from csp.names import NameIndex, NameSearch
from csp.places import WherePlaces, location_log_probs, where_places
from csp.prior import LocationPrior

PRIOR_DIR = "prior"
CSP_DIR = "csp"
LINK_FILE = "imagenet_species_link.csv"


@dataclass(frozen=True)
class ClassScore:
    """One class and its score in [0, 1]."""

    index: int
    name: str
    score: float


@dataclass(frozen=True)
class Move:
    """One image class whose rank the location changed (ranks 1-based over all image classes).

    ``prior``: p(species | x) at the photo (normalised over the prior's species), what the
    fusion weighs the class by (:mod:`csp.fusion`); ``factor``: geo-aware / image probability
    of the class (the factor applied).
    """

    name: str
    rank_before: int
    rank_after: int
    prior: float
    factor: float


@dataclass(frozen=True)
class GeoClassification:
    """Image-only and geo-aware top-k for one photo.

    ``moved`` lists the linked classes whose rank changed among the union of both top-k lists.
    ``mode`` is the mode used (``"wild"``, ``"captive"``, or ``"image-only"`` without a location
    or a species link); ``captive`` the flag and its message (None without a location).
    """

    image_only: list[ClassScore]
    geo_aware: list[ClassScore]
    location: tuple[float, float] | None
    moved: list[Move]
    mode: str = "image-only"
    captive: CaptiveCheck | None = None

    @property
    def flag(self) -> str:
        """The captive flag message (``""`` when the photo is not flagged)."""
        return self.captive.message if self.captive is not None and self.captive.flagged else ""


def _load_prior(directory: Path, device: str | torch.device) -> tuple[LocationEncoder, CheckpointMeta]:
    model, meta = load_checkpoint(directory, map_location=device)
    if not isinstance(model, LocationEncoder) or model.class_emb is None:
        raise CheckpointError(f"{directory} is not a location prior (a location encoder with a class head)")
    return model, meta


def _top(scores: np.ndarray, names: list[str], k: int) -> list[ClassScore]:
    k = min(k, scores.shape[0])
    order = np.argpartition(-scores, k - 1)[:k]
    order = order[np.argsort(-scores[order], kind="stable")]
    return [ClassScore(int(i), names[i], float(scores[i])) for i in order]


def _ranks(scores: np.ndarray) -> np.ndarray:
    ranks = np.empty(scores.shape[0], dtype=np.int64)
    ranks[np.argsort(-scores, kind="stable")] = np.arange(1, scores.shape[0] + 1)
    return ranks


class Predictor:
    """Location prior, range maps, geo-aware classification and image -> location.

    Args:
        prior_model: location encoder with a class head of C classes.
        class_names: the C class names.
        csp_model: pre-trained location-image model (objective ``mc``/``nce``), optional.
        image_encoder: frozen :class:`csp.image_encoder.ImageEncoder`, optional.
        species_link: ``{image class index: prior class index}``.
        expert_range_species: classes whose prior rests partly on expert-range pseudo-presences.
        cosine_similarity: the CSP model was trained on cosine similarities (``normalize``).
        temperature: the CSP model's in-batch temperature (its logits are divided by it).
        class_frequency: ``(C,)`` p(species) in the prior's training data (from the checkpoint's
            ``train.class_counts`` when loaded from a directory; default uniform).
        captive_sites: known captive places (default none).
        fusion: parameters of the fusion rule (default :class:`csp.fusion.FusionParams`).
        device: where the models run.
        prior_meta, csp_meta: the checkpoint metadata the models were loaded with (kept so
            :meth:`save_pretrained` writes them back unchanged; built from the models if None).
        link_file: the species-link CSV the link was read from (copied by ``save_pretrained``).
        location_prior: how the network's logits become p(species | x) (:mod:`csp.prior`);
            default: the network alone, softmax-normalised with temperature 1.
    """

    def __init__(
        self,
        prior_model: LocationEncoder,
        class_names: list[str],
        *,
        csp_model: LocationImageEncoder | None = None,
        image_encoder: torch.nn.Module | None = None,
        species_link: dict[int, int] | None = None,
        expert_range_species: set[str] | None = None,
        cosine_similarity: bool = False,
        temperature: float = 1.0,
        class_frequency: np.ndarray | None = None,
        captive_sites: CaptiveSites | None = None,
        fusion: FusionParams | None = None,
        device: str | torch.device = "cpu",
        prior_meta: CheckpointMeta | None = None,
        csp_meta: CheckpointMeta | None = None,
        link_file: str | Path | None = None,
        location_prior: LocationPrior | None = None,
    ) -> None:
        if prior_model.class_emb is None or prior_model.num_classes != len(class_names):
            raise ValueError(
                f"prior model has {prior_model.num_classes} classes, "
                f"but {len(class_names)} class names were given"
            )
        self.device = torch.device(device)
        self.prior_model = prior_model.to(self.device).eval()
        self.location_prior = location_prior or LocationPrior(self.prior_model)
        self.class_names = list(class_names)
        self._index = {name: i for i, name in enumerate(self.class_names)}
        self.csp_model = csp_model.to(self.device).eval() if csp_model is not None else None
        self.image_encoder = image_encoder
        self.species_link = dict(species_link or {})
        self.expert_range_species = set(expert_range_species or ())
        self.cosine_similarity = cosine_similarity
        self.temperature = temperature
        self.prior_meta = prior_meta or describe_model(
            prior_model, class_names=self.class_names, expert_range_species=sorted(self.expert_range_species)
        )
        self.csp_meta = csp_meta
        if self.csp_meta is None and csp_model is not None:
            self.csp_meta = describe_model(
                csp_model, cosine_similarity=cosine_similarity, temperature=temperature
            )
        self.link_file = Path(link_file) if link_file is not None else None
        n = len(self.class_names)
        self.class_frequency = (
            np.full(n, 1.0 / n) if class_frequency is None else np.asarray(class_frequency, dtype=np.float64)
        )
        if self.class_frequency.shape != (n,) or not (self.class_frequency > 0).all():
            raise ValueError(f"class_frequency must be {n} positive numbers, one per class")
        self.captive_sites = captive_sites or CaptiveSites([])
        self.fusion = fusion or FusionParams()
        self._names: NameIndex | None = None
        self._grid_embeddings = lru_cache(maxsize=4)(self._grid_embeddings_uncached)

    # --- construction ---------------------------------------------------------------------

    @classmethod
    def from_directory(
        cls,
        directory: str | Path | None = None,
        device: str | torch.device = "cpu",
        load_image_encoder: bool = True,
    ) -> Predictor:
        """Load a model directory (see module docstring) or a bare prior checkpoint directory
        (``model.json`` + ``model.safetensors``); None: the shipped default
        (:func:`csp.hub.default_model_dir`, independent of the current directory)."""
        if directory is None:
            from csp.hub import default_model_dir

            directory = default_model_dir()
        directory = Path(directory)
        bare_checkpoint = (directory / META_FILE).is_file()
        prior_dir = directory if bare_checkpoint else directory / PRIOR_DIR
        prior_model, meta = _load_prior(prior_dir, device)
        location_prior = LocationPrior.load(prior_dir, prior_model)
        csp_model = None
        csp_meta = None
        image_encoder_name = meta.image_encoder
        if (directory / CSP_DIR).is_dir():
            loaded, loaded_meta = load_checkpoint(directory / CSP_DIR, map_location=device)
            if isinstance(loaded, LocationImageEncoder) and loaded.image_projection is not None:
                csp_model, csp_meta = loaded, loaded_meta
                image_encoder_name = loaded_meta.image_encoder or image_encoder_name
        image_encoder = None
        species_link: dict[int, int] = {}
        link_file = directory / LINK_FILE if (directory / LINK_FILE).is_file() else None
        if load_image_encoder and image_encoder_name:
            from csp.image_encoder import create_image_encoder

            image_encoder = create_image_encoder(image_encoder_name, device=device)
            if link_file is not None:
                from csp.species_link import load_species_link

                species_link = load_species_link(link_file, meta.class_names)
        captive = directory / CAPTIVE_FILE
        counts = meta.train.get("class_counts")
        return cls(
            prior_model,
            meta.class_names,
            csp_model=csp_model,
            image_encoder=image_encoder,
            species_link=species_link,
            expert_range_species=set(meta.expert_range_species),
            cosine_similarity=csp_meta.cosine_similarity if csp_meta is not None else False,
            temperature=csp_meta.temperature if csp_meta is not None else 1.0,
            captive_sites=CaptiveSites(read_captive_places(captive)) if captive.is_file() else None,
            class_frequency=frequency_from_counts(counts) if counts else location_prior.class_frequency(),
            device=device,
            prior_meta=meta,
            csp_meta=csp_meta,
            link_file=link_file,
            location_prior=location_prior,
        )

    def with_prior(self, checkpoint: str | Path, link_file: str | Path | None = None) -> Predictor:
        """A predictor serving the location prior in ``checkpoint`` (e.g. one just trained) that
        keeps this one's image encoder and CSP model; the species link is re-read from
        ``link_file`` against the new class names (only classes in the new prior re-weight)."""
        prior_model, meta = _load_prior(Path(checkpoint), self.device)
        location_prior = LocationPrior.load(Path(checkpoint), prior_model)
        link: dict[int, int] = {}
        if self.image_encoder is not None and link_file is not None and Path(link_file).is_file():
            from csp.species_link import load_species_link

            link = load_species_link(link_file, meta.class_names)
        return Predictor(
            prior_model,
            meta.class_names,
            csp_model=self.csp_model,
            image_encoder=self.image_encoder,
            species_link=link,
            expert_range_species=set(meta.expert_range_species),
            cosine_similarity=self.cosine_similarity,
            temperature=self.temperature,
            captive_sites=self.captive_sites,
            fusion=self.fusion,
            class_frequency=location_prior.class_frequency(),
            device=self.device,
            prior_meta=meta,
            csp_meta=self.csp_meta,
            link_file=link_file if link else None,
            location_prior=location_prior,
        )

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write this model as a model directory (see :func:`csp.hub.save_pretrained`)."""
        from csp.hub import save_pretrained

        return save_pretrained(self, directory)

    @property
    def _link(self) -> LinkArrays:
        """The species link as aligned arrays (read from ``species_link`` on each use)."""
        return LinkArrays.from_mapping(self.species_link)

    @property
    def has_image_encoder(self) -> bool:
        return self.image_encoder is not None

    @property
    def has_image_to_location(self) -> bool:
        return self.image_encoder is not None and self.csp_model is not None

    # --- location prior -------------------------------------------------------------------

    def _tensor(self, lonlat: np.ndarray) -> torch.Tensor:
        array = np.asarray(lonlat, dtype=np.float32).reshape(-1, 2)
        validate_lonlat(array, source="location")
        return torch.from_numpy(array).to(self.device)

    def prior(self, lonlat: np.ndarray) -> np.ndarray:
        """p(species | an observation at x): ``(N, 2)`` degrees -> ``(N, C)`` float64, rows
        summing to 1 (temperature fitted on validation, see :mod:`csp.prior`)."""
        return self.location_prior.probabilities(self._tensor(lonlat)).cpu().numpy()

    def range_scores(self, lonlat: np.ndarray) -> np.ndarray:
        """Per-species presence scores in [0, 1] (what range maps draw; not normalised over
        species, not a probability of being observed): ``(N, 2)`` degrees -> ``(N, C)``."""
        return self.location_prior.range_scores(self._tensor(lonlat)).float().cpu().numpy()

    @torch.inference_mode()
    def embed(self, lonlat: np.ndarray, which: str = "auto") -> np.ndarray:
        """Location embeddings for downstream use: ``(N, 2)`` (lon, lat) degrees -> ``(N, D)``.

        ``which``: ``"csp"`` the self-supervised CSP location encoder (D = its embedding size),
        ``"prior"`` the location prior's encoder (the features its class head reads), or
        ``"auto"``: ``"csp"`` when the model directory has one, else ``"prior"``.
        """
        if which == "auto":
            which = CSP_DIR if self.csp_model is not None else PRIOR_DIR
        if which == CSP_DIR and self.csp_model is None:
            raise RuntimeError("this model directory has no pre-trained CSP model (csp/)")
        if which not in (CSP_DIR, PRIOR_DIR):
            raise ValueError(f"which must be 'auto', 'csp' or 'prior', got {which!r}")
        model = self.prior_model if which == PRIOR_DIR else self.csp_model.location_encoder
        return model.embed(self._tensor(lonlat)).float().cpu().numpy()

    def top_classes(self, lon: float, lat: float, k: int = 10) -> list[ClassScore]:
        """The k most likely classes at one place."""
        return _top(self.prior(np.array([[lon, lat]]))[0], self.class_names, k)

    def find_species(self, query: str, limit: int = 20) -> NameSearch:
        """Species by scientific or common name, best first, with a message (:mod:`csp.names`)."""
        if self._names is None:
            self._names = NameIndex.from_imagenet(self.class_names, self.species_link)
        return self._names.search(query, limit)

    def search_classes(self, query: str, limit: int = 20) -> list[str]:
        """Class names matching ``query`` by scientific or common name, best first."""
        return [match.class_name for match in self.find_species(query, limit).matches]

    def class_index(self, name: str) -> int:
        """Index of a class name; KeyError with a hint if unknown."""
        if name not in self._index:
            raise KeyError(f"unknown class {name!r}; try search_classes({name[:4]!r})")
        return self._index[name]

    @torch.inference_mode()
    def _grid_embeddings_uncached(self, step_deg: float, which: str) -> torch.Tensor:
        grid = torch.from_numpy(lonlat_grid(step_deg)).to(self.device)
        model = self.prior_model if which == PRIOR_DIR else self.csp_model.location_encoder
        return model.embed(grid.view(-1, 2))

    @torch.inference_mode()
    def range_map(self, class_index: int, step_deg: float = 1.0) -> np.ndarray:
        """Prior of one class over the globe: ``(180/step, 360/step)``, rows north -> south."""
        if not 0 <= class_index < len(self.class_names):
            raise IndexError(f"class index {class_index} outside [0, {len(self.class_names)})")
        embeddings = self._grid_embeddings(float(step_deg), PRIOR_DIR)
        weight = self.prior_model.class_emb.weight[class_index]
        height = round(180 / step_deg)
        return torch.sigmoid(embeddings @ weight).view(height, 2 * height).cpu().numpy()

    # --- images ---------------------------------------------------------------------------

    def _require_image_encoder(self) -> torch.nn.Module:
        if self.image_encoder is None:
            raise RuntimeError("this predictor was loaded without an image encoder")
        return self.image_encoder

    def normalised_prior(self, lonlat: np.ndarray) -> np.ndarray:
        """``(N, 2)`` degrees -> ``(N, C)`` p(species | x), rows summing to 1: :meth:`prior`
        (kept as a name for the fusion callers)."""
        return self.prior(lonlat)

    def geo_reweight(
        self, image_probs: np.ndarray, lonlat: tuple[float, float], prior: np.ndarray | None = None
    ) -> np.ndarray:
        """Wild-mode fusion of ``(K,)`` image probabilities with the prior at ``lonlat``
        (:func:`csp.fusion.fuse`; ``prior``: the ``(C,)`` normalised prior there, if computed)."""
        if prior is None:
            prior = self.normalised_prior(np.array([lonlat]))[0]
        return fuse(image_probs, prior, self.class_frequency, self._link, self.fusion).probs[0]

    @torch.inference_mode()
    def classify(
        self, image: Image.Image, lonlat: tuple[float, float] | None, k: int = 5, mode: str = "auto"
    ) -> GeoClassification:
        """Image-only and geo-aware top-k for one photo; ``lonlat`` in degrees or None.

        ``mode``: ``"wild"`` (apply the prior), ``"captive"`` (do not) or ``"auto"`` (captive
        when the photo is flagged as possibly captive), see :mod:`csp.captive`.
        """
        check_mode(mode)
        encoder = self._require_image_encoder()
        _, probs = encoder.encode([image.convert("RGB")])
        raw = probs[0].float().cpu().numpy()
        names = encoder.class_names or [str(i) for i in range(raw.shape[0])]
        if lonlat is None or not self.species_link:
            if lonlat is not None:
                self._tensor(np.array([lonlat]))  # validates the location
            image_top = _top(calibrate(raw, self.fusion.image_temperature), names, k)
            where = None if lonlat is None else (float(lonlat[0]), float(lonlat[1]))
            return GeoClassification(image_top, image_top, where, [])
        prior = self.normalised_prior(np.array([lonlat]))[0]  # validates the location
        link = self._link
        fused = fuse(raw, prior, self.class_frequency, link, self.fusion)
        image_probs = fused.image_probs[0]
        top = int(np.argmax(image_probs))
        position = {int(i): j for j, i in enumerate(link.image_index)}
        top_species = link.species_index[position[top]] if top in position else None
        top_ratio = (
            None if top_species is None else float(range_ratio(prior, self.class_frequency)[top_species])
        )
        check = assess_captive(
            mode,
            self.captive_sites.at(lonlat),
            names[top].split(",")[0],
            float(image_probs[top]),
            top_ratio,
            CONFIDENT,
        )
        geo = fused.probs[0] if check.mode == "wild" else image_probs
        image_top, geo_top = _top(image_probs, names, k), _top(geo, names, k)
        before, after = _ranks(image_probs), _ranks(geo)
        moved = []
        for index in sorted({s.index for s in image_top} | {s.index for s in geo_top}):
            if before[index] != after[index] and index in position:
                j = position[index]
                factor = float(geo[index] / image_probs[index]) if image_probs[index] > 0 else 1.0
                moved.append(
                    Move(
                        names[index],
                        int(before[index]),
                        int(after[index]),
                        float(prior[link.species_index[j]]),
                        factor,
                    )
                )
        location = (float(lonlat[0]), float(lonlat[1]))
        return GeoClassification(image_top, geo_top, location, moved, check.mode, check)

    def _where_encoder(self) -> torch.nn.Module:
        """The image encoder at the CSP model's :attr:`CheckpointMeta.image_size` (the chips it
        was pre-trained on); features of another size land elsewhere in its space."""
        encoder = self._require_image_encoder()
        size = self.csp_meta.image_size if self.csp_meta is not None else None
        if size is None or tuple(encoder.input_size[1:]) == (size, size):
            return encoder
        if getattr(self, "_sized_encoder", None) is None:
            from csp.image_encoder import ImageEncoder

            self._sized_encoder = ImageEncoder(encoder.model, encoder.name, image_size=size)
        return self._sized_encoder

    @torch.inference_mode()
    def image_location_map(self, image: Image.Image, step_deg: float = 2.0) -> np.ndarray:
        """Where could this be: p(location | image) as probability mass per grid cell.

        :func:`csp.places.location_log_probs` over the cell centres of a ``step_deg`` grid,
        ``(H, W)`` rows north -> south, summing to 1; the image is encoded at the size the CSP
        model was pre-trained on. The area term (cos latitude) makes it a distribution over the
        sphere; divide by ``cos(lat)`` to get the density (match strength per unit area) for
        drawing on a map.
        """
        if self.csp_model is None:
            raise RuntimeError("this model directory has no pre-trained CSP model (csp/)")
        features, _ = self._where_encoder().encode([image.convert("RGB")])
        query = self.csp_model.encode_images(features.to(self.device).float())
        embeddings = self._grid_embeddings(float(step_deg), CSP_DIR)
        grid = lonlat_grid(step_deg)
        lat = torch.from_numpy(grid[..., 1].reshape(-1)).to(self.device)
        log_mass = location_log_probs(query, embeddings, lat, self.temperature, self.cosine_similarity)[0]
        return log_mass.exp().view(grid.shape[:2]).cpu().numpy()

    def where_places(self, image: Image.Image, k: int = 5, step_deg: float = 1.0) -> WherePlaces:
        """The ``k`` top distinct places of :meth:`image_location_map` with their share of the
        probability mass, and whether the map is flat (:func:`csp.places.where_places`)."""
        return where_places(self.image_location_map(image, step_deg), k)
