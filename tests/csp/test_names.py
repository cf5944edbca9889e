"""Species search by scientific and common name (csp.names)."""

import pytest

from csp.names import NameIndex
from tests.conftest import _imagenet_index

CLASSES = [
    "Allionia incarnata",
    "Panthera leo",
    "Puma concolor",
    "Phascolarctos cinereus",
    "Loxodonta africana",
    "Elephas maximus",
    "Haliaeetus leucocephalus",
    "Haemorhous mexicanus",
]


@pytest.fixture(scope="module")
def index() -> NameIndex:
    link = {_imagenet_index("house finch"): CLASSES.index("Haemorhous mexicanus")}
    return NameIndex.from_imagenet(CLASSES, link)


@pytest.mark.parametrize(
    ("query", "first"),
    [
        ("koala", "Phascolarctos cinereus"),
        ("Bald Eagle", "Haliaeetus leucocephalus"),
        ("lion", "Panthera leo"),
        ("house finch", "Haemorhous mexicanus"),  # from the link: ImageNet says Carpodacus
        ("panthera", "Panthera leo"),
    ],
)
def test_common_and_scientific_names(index, query, first):
    result = index.search(query)
    assert result.matches[0].class_name == first
    assert query.strip() in result.message


def test_lion_before_allionia_and_elephants_both_found(index):
    names = [m.class_name for m in index.search("lion").matches]
    assert names.index("Panthera leo") < names.index("Allionia incarnata")
    elephants = [m.class_name for m in index.search("elephant").matches]
    assert set(elephants[:2]) == {"Loxodonta africana", "Elephas maximus"}
    assert index.search("lion").matches[0].label == "Panthera leo (lion)"
    assert "Panthera leo" not in index.common_names["Panthera leo"]  # Latin lemmas are not common names


def test_no_match_and_empty_query(index):
    result = index.search("unicorn")
    assert result.matches == []
    assert result.message.startswith("No species matches 'unicorn'")
    assert index.search("   ").matches == []


def test_limit_and_explicit_names():
    index = NameIndex(
        ["Canis lupus", "Canis latrans"],
        {"Canis lupus": ["timber wolf", "gray wolf"], "Vulpes vulpes": ["red fox"]},
    )
    assert [m.class_name for m in index.search("wolf").matches] == ["Canis lupus"]
    assert [m.class_name for m in index.search("canis", limit=1).matches] == ["Canis latrans"]
    assert "first shown" in index.search("canis", limit=1).message


def test_one_scientific_name_pattern_for_every_caller():
    from csp.names import is_scientific_name

    for name in ("Panthera leo", "Chenopodium bonus-henricus", "Homo sapiens neanderthalensis"):
        assert is_scientific_name(name)
    assert not is_scientific_name("Homo sapiens neanderthalensis", binomial_only=True)
    for text in ("Pelophylax", "Harris Tweed", "panthera leo", "Panthera Leo", "Panthera leo 2"):
        assert not is_scientific_name(text)
