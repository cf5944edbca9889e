"""The location prior a user reads: p(species | an observation at x), normalised over species.

A fine-tuned :class:`~csp.models.LocationEncoder` gives per-species presence logits ``l_s(x)``
(the presence-only loss makes ``sigmoid(l)`` a *range score*, not a probability: many species
score near 1 at once). :class:`LocationPrior` combines them with two simple density terms fitted
on the same training observations, and turns the sum into probabilities::

    z_s(x) = a * log sigmoid(l_s(x))                     network (weight a)
           + k * [log n_s + log KDE_s(x)]               per-species spherical KDE (csp.baselines)
           + b * log habitat_s(x)                       land-cover habitat ratio (csp.baselines)
    p(s | x) = softmax_s(z(x) / T)

``a``, ``k``, ``b`` and the KDE bandwidth are chosen on the validation split by MRR, the
temperature ``T`` on the validation split by NLL (:mod:`csp.calibration`). With ``k = b = 0``
this is the network alone, softmax-normalised.

Storage, next to the checkpoint files in the prior's directory:

* ``prior.json``: the :class:`PriorSettings` (and what they were chosen on);
* ``prior_points.safetensors``: the training observations the density terms read,
  ``lonlat`` float64 ``(T, 2)`` degrees and ``labels`` int64 ``(T,)`` (only when ``k`` or
  ``b`` is non-zero).

A checkpoint without ``prior.json`` (one just fine-tuned, say) is served as the network alone
with ``T = 1``: normalised, but not calibrated.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from torch import Tensor

from csp.baselines import HabitatRatio, SphericalKDE
from csp.models import LocationEncoder

SETTINGS_FILE = "prior.json"
POINTS_FILE = "prior_points.safetensors"


@dataclass
class PriorSettings:
    """Weights of the terms of :class:`LocationPrior` and its temperature (see module docstring).

    Attributes:
        network_weight: ``a``.
        kde_weight: ``k`` (0: no KDE term).
        kde_bandwidth_km: KDE kernel standard deviation along the surface.
        kde_background: uniform share mixed into every species' density.
        habitat_weight: ``b`` (0: no habitat term).
        habitat_scale_deg: block size of the land-cover shares (0.05: the cell's class).
        habitat_smoothing: pseudo-observations of the average habitat mix per species.
        temperature: ``T``.
        fitted_on: provenance, e.g. ``{"split": "val", "observations": 2605, ...}``.
    """

    network_weight: float = 1.0
    kde_weight: float = 0.0
    kde_bandwidth_km: float = 100.0
    kde_background: float = 1e-3
    habitat_weight: float = 0.0
    habitat_scale_deg: float = 2.0
    habitat_smoothing: float = 2.0
    temperature: float = 1.0
    fitted_on: dict[str, Any] = field(default_factory=dict)

    @property
    def uses_points(self) -> bool:
        return self.kde_weight != 0 or self.habitat_weight != 0

    def describe(self) -> str:
        """One line for reports, e.g. ``"1 x network + 1 x KDE (200 km) + 2 x habitat (2 deg), T = 3.1"``."""
        parts = [f"{self.network_weight:g} x network"] if self.network_weight else []
        if self.kde_weight:
            parts.append(f"{self.kde_weight:g} x KDE ({self.kde_bandwidth_km:g} km)")
        if self.habitat_weight:
            parts.append(f"{self.habitat_weight:g} x habitat ({self.habitat_scale_deg:g} deg)")
        return " + ".join(parts) + f", T = {self.temperature:.3g}"

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> PriorSettings:
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ValueError(f"{SETTINGS_FILE}: unknown fields {sorted(unknown)}")
        return cls(**values)


class LocationPrior:
    """Network presence logits + optional density terms -> normalised p(species | x).

    Args:
        encoder: location encoder with a class head of C classes.
        settings: term weights and temperature.
        points: ``(lonlat (T, 2) degrees, labels (T,))`` training observations, required when
            ``settings.uses_points``.
    """

    def __init__(
        self,
        encoder: LocationEncoder,
        settings: PriorSettings | None = None,
        points: tuple[np.ndarray, np.ndarray] | None = None,
    ) -> None:
        if encoder.class_emb is None:
            raise ValueError("a location prior needs a location encoder with a class head")
        self.encoder = encoder
        self.settings = settings or PriorSettings()
        self.num_classes = encoder.num_classes
        self.points = points
        self.kde: SphericalKDE | None = None
        self.habitat: HabitatRatio | None = None
        if self.settings.uses_points:
            if points is None:
                raise ValueError("this prior's settings use training points, but none were given")
            self._build_terms(*points)

    def _build_terms(self, lonlat: np.ndarray, labels: np.ndarray) -> None:
        s, device = self.settings, self.device
        if s.kde_weight:
            self.kde = SphericalKDE(
                lonlat, labels, self.num_classes, s.kde_bandwidth_km, s.kde_background, device=device
            )
        if s.habitat_weight:
            self.habitat = HabitatRatio(
                lonlat, labels, self.num_classes, s.habitat_scale_deg, s.habitat_smoothing, device=device
            )

    def class_frequency(self) -> np.ndarray | None:
        """``(C,)`` p(species) in the training observations, add-one smoothed (all positive),
        or None when this prior carries no training points."""
        if self.points is None:
            return None
        counts = np.bincount(np.asarray(self.points[1], dtype=np.int64), minlength=self.num_classes) + 1.0
        return counts / counts.sum()

    @property
    def device(self) -> torch.device:
        return self.encoder.class_emb.weight.device

    @torch.inference_mode()
    def network_logits(self, lonlat: Tensor) -> Tensor:
        """Presence logits ``l(x)``: ``(N, 2)`` degrees -> ``(N, C)``."""
        self.encoder.eval()
        return self.encoder.class_logits(lonlat.to(self.device, torch.float32))

    def range_scores(self, lonlat: Tensor) -> Tensor:
        """Per-species presence scores ``sigmoid(l(x))`` in [0, 1]: ``(N, 2)`` -> ``(N, C)``;
        not normalised over species (a range map reads one column)."""
        return torch.sigmoid(self.network_logits(lonlat))

    @torch.inference_mode()
    def log_scores(self, lonlat: Tensor, network_logits: Tensor | None = None) -> Tensor:
        """``z(x)`` before the temperature: ``(N, 2)`` degrees -> ``(N, C)`` float64
        (``network_logits``: this encoder's ``(N, C)`` logits at ``lonlat``, if already made)."""
        s = self.settings
        x = lonlat.to(self.device)
        logits = self.network_logits(x) if network_logits is None else network_logits
        z = s.network_weight * F.logsigmoid(logits.double())
        if self.kde is not None:
            z = z + s.kde_weight * self.kde(x.double())
        if self.habitat is not None:
            z = z + s.habitat_weight * self.habitat(x.double())
        return z

    def probabilities(self, lonlat: Tensor, network_logits: Tensor | None = None) -> Tensor:
        """p(species | x): ``(N, 2)`` degrees -> ``(N, C)`` float64, rows summing to 1
        (``network_logits`` as in :meth:`log_scores`)."""
        return torch.softmax(self.log_scores(lonlat, network_logits) / self.settings.temperature, dim=1)

    # --- storage ---------------------------------------------------------------------------

    def save(self, directory: str | Path) -> None:
        """Write ``prior.json`` (and the training points if used) into a checkpoint directory."""
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        if self.settings.uses_points and self.points is not None:
            lonlat, labels = self.points
            save_file(
                {
                    "lonlat": torch.as_tensor(np.asarray(lonlat, dtype=np.float64)),
                    "labels": torch.as_tensor(np.asarray(labels, dtype=np.int64)),
                },
                str(directory / POINTS_FILE),
            )
        (directory / SETTINGS_FILE).write_text(json.dumps(asdict(self.settings), indent=2) + "\n")

    @classmethod
    def load(cls, directory: str | Path, encoder: LocationEncoder) -> LocationPrior:
        """The prior stored next to ``encoder``'s checkpoint in ``directory`` (the network alone
        with ``T = 1`` if there is no ``prior.json``)."""
        directory = Path(directory)
        path = directory / SETTINGS_FILE
        if not path.is_file():
            return cls(encoder)
        try:
            settings = PriorSettings.from_dict(json.loads(path.read_text()))
        except (ValueError, TypeError) as err:
            raise ValueError(f"{path}: not a valid prior settings file ({err})") from None
        points = None
        if settings.uses_points:
            tensors = load_file(str(directory / POINTS_FILE))
            lonlat, labels = tensors["lonlat"].numpy(), tensors["labels"].numpy()
            if labels.size and (labels.min() < 0 or labels.max() >= encoder.num_classes):
                raise ValueError(
                    f"{directory / POINTS_FILE}: labels outside the prior's {encoder.num_classes} classes"
                )
            points = (lonlat, labels)
        return cls(encoder, settings, points)


@dataclass(frozen=True)
class SelectionGrid:
    """Candidates tried on validation by :func:`select_settings`."""

    network_weights: tuple[float, ...] = (0.0, 0.25, 0.5, 1.0, 2.0)
    kde_bandwidths_km: tuple[float, ...] = (50.0, 100.0, 200.0, 400.0)
    habitat_weights: tuple[float, ...] = (0.0, 0.5, 1.0, 2.0)
    habitat_scale_deg: float = 0.5


def _blocked(fn: Any, lonlat: Tensor, block: int = 256) -> Tensor:
    return torch.cat([fn(lonlat[i : i + block]) for i in range(0, len(lonlat), block)])


def select_settings(
    encoder: LocationEncoder | None,
    train: tuple[np.ndarray, np.ndarray],
    val: tuple[np.ndarray, np.ndarray],
    grid: SelectionGrid = SelectionGrid(),
) -> tuple[PriorSettings, dict[str, float]]:
    """Choose the term weights on validation by MRR, then the temperature by NLL.

    Args:
        encoder: the fine-tuned network, or None for the density terms alone (network weight 0).
        train: ``(lonlat (T, 2), labels (T,))`` the training observations (density terms).
        val: ``(lonlat (V, 2), labels (V,))`` the validation observations.
        grid: the candidates. The KDE weight is fixed at 1 (the scale of z is the temperature's
            business); network weight 0 and habitat weight 0 is the KDE alone.

    Returns:
        the settings and ``{"mrr": ..., "nll": ...}`` on validation.
    """
    from csp.calibration import fit_temperature, nll
    from csp.metrics import rank_summary, true_class_ranks

    device = encoder.class_emb.weight.device if encoder is not None else torch.device("cpu")
    x = torch.as_tensor(np.asarray(val[0]), dtype=torch.float64, device=device)
    y = torch.as_tensor(np.asarray(val[1]), dtype=torch.int64, device=device)
    classes = encoder.num_classes if encoder is not None else int(max(np.max(train[1]), np.max(val[1])) + 1)
    network_weights = grid.network_weights if encoder is not None else (0.0,)
    net = (
        F.logsigmoid(_blocked(LocationPrior(encoder).network_logits, x).double())
        if encoder is not None
        else torch.zeros(len(y), classes, dtype=torch.float64, device=device)
    )
    hab = _blocked(HabitatRatio(*train, classes, grid.habitat_scale_deg, device=device), x)
    best: tuple[float, PriorSettings, Tensor] | None = None
    for bandwidth in grid.kde_bandwidths_km:
        kde = _blocked(SphericalKDE(*train, classes, bandwidth, device=device), x)
        for a in network_weights:
            for b in grid.habitat_weights:
                z = a * net + kde + b * hab
                mrr = rank_summary(true_class_ranks(z, y))["mrr"]
                if best is None or mrr > best[0]:
                    settings = PriorSettings(
                        network_weight=a,
                        kde_weight=1.0,
                        kde_bandwidth_km=bandwidth,
                        habitat_weight=b,
                        habitat_scale_deg=grid.habitat_scale_deg,
                    )
                    best = (mrr, settings, z)
    mrr, settings, z = best
    settings.temperature = fit_temperature(z, y)
    settings.fitted_on = {"split": "val", "observations": int(len(y)), "val_mrr": mrr}
    return settings, {"mrr": mrr, "nll": nll(z, y, settings.temperature)}
