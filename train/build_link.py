"""Propose the ImageNet-class -> species link table from timm's WordNet lemmas.

Exact links (a class lemma equals a species name of the data) are regenerated here; spelling
and synonym fixes are reviewed by hand and kept from the existing table (their rows carry a
note). Classes with a Latin binomial that link to nothing are printed with candidate
species (same genus, or a similar epithet) for a person to review.

Usage (from the repository root)::

    python3 -m train.build_link            # rewrite assets/default/imagenet_species_link.csv
    python3 -m train.build_link --check    # exit 1 if the committed table is out of date
    python3 train/build_link.py --help
"""

from __future__ import annotations

import argparse
import csv
import difflib
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

if __package__ in (None, ""):  # run as a script: python3 train/build_link.py
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from csp.names import is_scientific_name  # noqa: E402
from csp.species_link import LinkRow, read_species_link, write_species_link  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_SPECIES_CSV = ROOT / "assets" / "data" / "yfcc_inat2017_species.csv"
DEFAULT_OUT = ROOT / "assets" / "default" / "imagenet_species_link.csv"
""""Genus epithet" (WordNet miscapitalises some epithets: "Ursus Maritimus")."""
_ENDING_RE = re.compile(r"(us|um|a|is|e|es|i|ii|ae)$")


@dataclass(frozen=True)
class Candidate:
    """A possible link for an unlinked class, for a person to accept or reject."""

    imagenet_index: int
    imagenet_name: str
    lemma: str
    species: str
    score: float


def imagenet_lemmas() -> list[tuple[str, ...]]:
    """The WordNet lemmas of the 1000 ImageNet-1k classes, in class-index order (from timm)."""
    from timm.data import ImageNetInfo

    info = ImageNetInfo()
    return [
        tuple(lemma.strip() for lemma in info.index_to_description(i).split(", "))
        for i in range(info.num_classes())
    ]


def read_species_names(path: str | Path) -> set[str]:
    """Distinct ``label`` values of a species CSV (``yfcc_id,label,latitude,longitude``)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"species CSV not found: {path}")
    with path.open(newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        if "label" not in (reader.fieldnames or ()):
            raise ValueError(f"{path}: no 'label' column (got {reader.fieldnames})")
        return {row["label"].strip() for row in reader if row["label"]}


def exact_links(lemmas: Sequence[Sequence[str]], species: Iterable[str]) -> list[LinkRow]:
    """One ``exact`` row per class having a lemma equal to a species name (first such lemma)."""
    names = set(species)
    rows = []
    for index, class_lemmas in enumerate(lemmas):
        match = next((lemma for lemma in class_lemmas if lemma in names), None)
        if match is not None:
            rows.append(LinkRow(index, class_lemmas[0], match, "exact"))
    return rows


def binomial_lemmas(class_lemmas: Sequence[str]) -> list[str]:
    """Lemmas of one class that look like a Latin binomial.

    WordNet lists vernacular names first and scientific names after them. A lemma counts if
    it is not the first, has the form "Genus epithet" and its genus is not a word of the
    first lemma (case-sensitive): "Alligator mississipiensis" in "American alligator,
    Alligator mississipiensis" counts, "African gray" in "African grey, African gray,
    Psittacus erithacus" does not. A heuristic: a few vernacular names ("Maine lobster")
    still pass, and only cost a look at their candidates.
    """
    first_words = set(class_lemmas[0].split()) if class_lemmas else set()
    return [
        lemma
        for lemma in class_lemmas[1:]
        if is_scientific_name(lemma, binomial_only=True) and lemma.split()[0] not in first_words
    ]


def _epithet_stem(epithet: str) -> str:
    """An epithet without its Latin gender/number ending ("albus", "alba" -> "alb")."""
    return _ENDING_RE.sub("", epithet.lower())


def _ratio(a: str, b: str) -> float:
    return difflib.SequenceMatcher(None, a.lower(), b.lower()).ratio()


def _candidate_score(genus: str, epithet: str, species: str) -> float:
    """Epithet similarity (1 if equal, 0.95 if only the stem is) + 1 for the same genus,
    + 0.1 x genus similarity as a tie-breaker."""
    other_genus, other_epithet = species.split()
    if other_epithet.lower() == epithet.lower():
        similarity = 1.0
    elif _epithet_stem(other_epithet) == _epithet_stem(epithet):
        similarity = 0.95
    else:
        similarity = _ratio(epithet, other_epithet)
    same_genus = 1.0 if other_genus == genus else 0.0
    return similarity + same_genus + 0.1 * _ratio(genus, other_genus)


def fuzzy_candidates(
    lemmas: Sequence[Sequence[str]],
    species: Iterable[str],
    linked: Iterable[int],
    per_class: int = 6,
    min_epithet_similarity: float = 0.8,
) -> list[Candidate]:
    """Candidate species for unlinked classes that carry a binomial lemma.

    A species is a candidate for a binomial lemma if it has the same genus, the same epithet
    stem (Latin endings removed: "Egretta albus" -> "Ardea alba", "Rana catesbeiana" ->
    "Lithobates catesbeianus"), or an epithet at least ``min_epithet_similarity`` similar
    (difflib ratio, case-insensitive: "mississipiensis" -> "mississippiensis"). The best
    ``per_class`` by :func:`_candidate_score` are returned per class.
    """
    names_by_epithet: dict[str, list[str]] = {}
    names_by_stem: dict[str, list[str]] = {}
    names_by_genus: dict[str, list[str]] = {}
    for name in species:
        parts = name.split()
        if len(parts) != 2:
            continue
        names_by_epithet.setdefault(parts[1].lower(), []).append(name)
        names_by_stem.setdefault(_epithet_stem(parts[1]), []).append(name)
        names_by_genus.setdefault(parts[0], []).append(name)
    epithets = list(names_by_epithet)
    linked_set = set(linked)
    found: list[Candidate] = []
    for index, class_lemmas in enumerate(lemmas):
        binomials = binomial_lemmas(class_lemmas)
        if index in linked_set or not binomials:
            continue
        scored: dict[str, float] = {}
        for lemma in binomials:
            genus, epithet = lemma.split()
            similar = difflib.get_close_matches(
                epithet.lower(), epithets, n=50, cutoff=min_epithet_similarity
            )
            options = [name for other in similar for name in names_by_epithet[other]]
            options += names_by_stem.get(_epithet_stem(epithet), [])
            options += names_by_genus.get(genus, [])
            for name in options:
                score = _candidate_score(genus, epithet, name)
                scored[name] = max(scored.get(name, 0.0), score)
        best = sorted(scored.items(), key=lambda item: (-item[1], item[0]))[:per_class]
        found += [
            Candidate(index, class_lemmas[0], " / ".join(binomials), name, score) for name, score in best
        ]
    return found


def merge_reviewed(exact: Sequence[LinkRow], reviewed: Iterable[LinkRow], species: set[str]) -> list[LinkRow]:
    """Exact rows plus the reviewed non-exact rows, sorted by ImageNet index.

    A reviewed row is dropped (with a message) when its class now links exactly.

    Raises:
        ValueError: if a reviewed row names a species absent from the data.
    """
    rows = {row.imagenet_index: row for row in exact}
    for row in reviewed:
        if row.match == "exact":
            continue
        if row.species not in species:
            raise ValueError(
                f"reviewed link {row.imagenet_index} ({row.imagenet_name}) names "
                f"{row.species!r}, which is not in the species data"
            )
        if row.imagenet_index in rows:
            print(f"note: class {row.imagenet_index} now links exactly; dropping reviewed row")
            continue
        rows[row.imagenet_index] = row
    return [rows[index] for index in sorted(rows)]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--species-csv", type=Path, default=DEFAULT_SPECIES_CSV)
    parser.add_argument(
        "--out",
        type=Path,
        default=DEFAULT_OUT,
        help="link table to write; its spelling/synonym rows are kept as reviewed fixes",
    )
    parser.add_argument("--check", action="store_true", help="do not write; exit 1 if --out is out of date")
    args = parser.parse_args(argv)

    species = read_species_names(args.species_csv)
    lemmas = imagenet_lemmas()
    exact = exact_links(lemmas, species)
    reviewed = read_species_link(args.out) if args.out.is_file() else []
    rows = merge_reviewed(exact, reviewed, species)
    n_species = len({row.species for row in exact})
    print(
        f"exact: {len(exact)} classes ({n_species} species); reviewed fixes: "
        f"{len(rows) - len(exact)}; total: {len(rows)} classes"
    )

    candidates = fuzzy_candidates(lemmas, species, linked=[row.imagenet_index for row in rows])
    if candidates:
        print("\nunlinked classes with a binomial lemma; candidates to review:")
        for c in candidates:
            print(
                f"  {c.imagenet_index:4d} {c.imagenet_name:<28} {c.lemma:<40} -> {c.species}  ({c.score:.2f})"
            )

    if args.check:
        if rows != reviewed:
            print(f"\n{args.out} is out of date; rerun without --check", file=sys.stderr)
            return 1
        print(f"\n{args.out} is up to date")
        return 0
    write_species_link(rows, args.out)
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
