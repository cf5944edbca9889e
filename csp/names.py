"""Find species by scientific or common name, offline.

Common names come from the WordNet lemmas that timm ships (``timm.data.ImageNetInfo``, files
under ``timm/data/_info/``), in two ways:

1. every ImageNet-21k synset (21,841 of them, ``ImageNetInfo("imagenet-22k")``) whose lemma
   list contains a species name of the prior gives that species its other lemmas
   ("lion, king of beasts, Panthera leo" -> *Panthera leo*: "lion", "king of beasts");
2. every ImageNet-1k class linked to a species (``imagenet_species_link.csv``) gives it the
   class's lemmas, also where the link is a synonym or a spelling fix the lemma does not show
   ("house finch, linnet, Carpodacus mexicanus" -> *Haemorhous mexicanus*).

Lemmas that are themselves scientific names (a prior class, or "Genus epithet" with a genus of
the prior) are not listed as common names. Species without an ImageNet synset are found by
their scientific name only.

Ranking: a name equal to the query first, then names with the query as whole words ("African
elephant" for "elephant"), then names starting with it, then names with a word starting with
it, then names containing it; within a tier species with a linked image class first, then
common names before Latin ones, a species' first common names before its later ones, then
alphabetical. "lion" finds *Panthera leo* (common name "lion") before
*Allionia incarnata*.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache

SCIENTIFIC_NAME = re.compile(r"^([A-Z][a-z]+) ([a-z][a-z-]+)(?: ([a-z][a-z-]+))?$")
"""The one pattern of a scientific name: "Genus epithet" (a Latin binomial, hyphenated epithets
such as "bonus-henricus" included) with an optional infraspecific epithet; groups: genus,
epithet, infraspecific epithet (None for a binomial). Only the shape is checked: "American
black bear" matches too, so callers that must tell Latin from English also check the genus."""


def is_scientific_name(text: str, binomial_only: bool = False) -> bool:
    """``text`` has the shape of :data:`SCIENTIFIC_NAME` (just "Genus epithet" if ``binomial_only``)."""
    match = SCIENTIFIC_NAME.match(text)
    return match is not None and not (binomial_only and match.group(3) is not None)


@dataclass(frozen=True)
class NameMatch:
    """One species found by a query.

    Attributes:
        class_name: the species (scientific name, as in the prior's class list).
        matched: the name that matched (a common name or the scientific name itself).
        common_names: every common name known for the species, in source order.
    """

    class_name: str
    matched: str
    common_names: tuple[str, ...]

    @property
    def label(self) -> str:
        """``"Panthera leo (lion)"``: the species and its first common name, for a picker."""
        if self.matched != self.class_name:
            return f"{self.class_name} ({self.matched})"
        if self.common_names:
            return f"{self.class_name} ({self.common_names[0]})"
        return self.class_name


@dataclass(frozen=True)
class NameSearch:
    """The answer to one query: matches best first, and a sentence for the user."""

    query: str
    matches: list[NameMatch]
    message: str


@lru_cache(maxsize=2)
def _imagenet_lemmas(subset: str) -> tuple[tuple[str, ...], ...]:
    """Lemma lists of every class of an ImageNet subset, in class order."""
    from timm.data import ImageNetInfo

    info = ImageNetInfo(subset)
    return tuple(
        tuple(part.strip() for part in info.index_to_description(i).split(",") if part.strip())
        for i in range(info.num_classes())
    )


class NameIndex:
    """Scientific and common names of the ``C`` classes of a prior.

    Args:
        class_names: the prior's class names (scientific names).
        common_names: ``{class name: common names}``; unknown class names are ignored.
        linked: class names with a linked image class (ranked first within a tier).
    """

    def __init__(
        self,
        class_names: Sequence[str],
        common_names: Mapping[str, Iterable[str]],
        linked: Iterable[str] = (),
    ) -> None:
        self.class_names = list(class_names)
        self.linked = set(linked)
        known = set(self.class_names)
        self.common_names: dict[str, tuple[str, ...]] = {}
        for name, aliases in common_names.items():
            if name in known:
                unique = tuple(dict.fromkeys(a.strip() for a in aliases if a.strip() and a.strip() != name))
                if unique:
                    self.common_names[name] = unique

    @classmethod
    def from_imagenet(
        cls, class_names: Sequence[str], species_link: Mapping[int, int] | None = None
    ) -> NameIndex:
        """Common names from timm's WordNet lemmas (see the module docstring).

        ``species_link``: ``{ImageNet-1k index: class index}`` of the linked classes.
        """
        names = list(class_names)
        known = set(names)
        genera = {name.split(" ")[0] for name in names}

        def is_latin(lemma: str) -> bool:
            match = SCIENTIFIC_NAME.match(lemma)
            return lemma in known or (match is not None and match.group(1) in genera) or lemma in genera

        found: dict[str, list[str]] = {}
        for lemmas in _imagenet_lemmas("imagenet-22k"):
            species = [lemma for lemma in lemmas if lemma in known]
            for name in species:
                found.setdefault(name, []).extend(lemma for lemma in lemmas if not is_latin(lemma))
        linked = {names[i] for i in (species_link or {}).values()}
        if species_link:
            one_k = _imagenet_lemmas("imagenet-1k")
            for image_index, class_index in sorted(species_link.items()):
                lemmas = one_k[image_index]
                found.setdefault(names[class_index], []).extend(
                    lemma for lemma in lemmas if not is_latin(lemma)
                )
        return cls(names, found, linked)

    @property
    def n_common_names(self) -> int:
        return sum(len(v) for v in self.common_names.values())

    def search(self, query: str, limit: int = 20) -> NameSearch:
        """Species whose scientific or common name contains ``query`` (case-insensitive)."""
        needle = " ".join(query.strip().lower().split())
        if not needle:
            return NameSearch(
                query, [], "Type part of a scientific or common name, e.g. 'lion' or 'Panthera'."
            )
        best: dict[str, tuple[tuple[int, bool, int, int, str], str]] = {}
        for name in self.class_names:
            candidates = [(0, k, a) for k, a in enumerate(self.common_names.get(name, ()))] + [(1, 0, name)]
            for is_latin, position, candidate in candidates:
                tier = _tier(candidate.lower(), needle)
                if tier is None:
                    continue
                key = (tier, name not in self.linked, is_latin, position, candidate.lower())
                if name not in best or key < best[name][0]:
                    best[name] = (key, candidate)
        ordered = sorted(best.items(), key=lambda item: (item[1][0], item[0]))[: max(0, limit)]
        matches = [
            NameMatch(name, matched, self.common_names.get(name, ())) for name, (_, matched) in ordered
        ]
        if not matches:
            message = (
                f"No species matches {query.strip()!r} (searched {len(self.class_names):,} scientific "
                f"names and {self.n_common_names:,} common names)."
            )
        else:
            more = " (first shown)" if len(best) > len(matches) else ""
            message = f"{len(best)} species match {query.strip()!r}{more}."
        return NameSearch(query, matches, message)


def _tier(candidate: str, needle: str) -> int | None:
    """0 equal, 1 whole words, 2 prefix, 3 a word starts with the query, 4 substring, None."""
    if candidate == needle:
        return 0
    if f" {needle} " in f" {candidate} ":
        return 1
    if candidate.startswith(needle):
        return 2
    if any(word.startswith(needle) for word in re.split(r"[\s'-]+", candidate)):
        return 3
    if needle in candidate:
        return 4
    return None
