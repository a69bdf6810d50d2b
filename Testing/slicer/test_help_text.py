"""The module's help and acknowledgement: plain words, the research-use notice, the four papers (each
tied to the backend methods that implement it), the training data the model cards record, and the README."""

from __future__ import annotations

import ast
import html
import re
from pathlib import Path

import pytest
pytest.importorskip("slicer", reason="slicer-core is not installed")
from mrisr_slicer_testing import REPO  # noqa: E402

from MRISuperResolutionLib import about  # noqa: E402

PAPERS_DIR = Path("/work/shared/papers")  # the papers' text, where this checkout has it


def words(text: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", html.unescape(text).lower()).strip()


def test_help_says_what_it_does_the_notice_and_links_the_readme():
    help, acknowledgement = about.helpText(), about.acknowledgementText()
    for text in (help, acknowledgement):
        assert "research use only" in text.lower() and "not for diagnosis" in text.lower()
    assert f'href="{about.README_URL}"' in help
    assert "Enhance" in help and "difference" in help and "Fast, Balanced or Best" in help


def test_the_readme_link_is_the_extensions_homepage():
    cmake = (REPO / "CMakeLists.txt").read_text(encoding="utf-8")
    assert re.search(r'set\(EXTENSION_HOMEPAGE "([^"]+)"\)', cmake).group(1) == about.README_URL


def test_the_acknowledgement_cites_the_four_papers_each_implemented_by_a_backend_method(catalog):
    acknowledgement = words(about.acknowledgementText())
    assert len(about.PAPERS) == 4
    for paper in about.PAPERS:
        assert words(paper.title) in acknowledgement and words(paper.authors.split(",")[0]) in acknowledgement
        assert set(paper.methods) <= set(catalog.names), f"{paper.short} names methods the backend does not have"
    learned = [m.name for m in catalog.methods if m.kind == "diffusion"]
    assert learned and all(about.paperFor(name) for name in learned), "a learned method without its paper"
    assert not any(about.paperFor(m.name) for m in catalog.methods if m.kind == "interpolation")


@pytest.mark.skipif(not PAPERS_DIR.is_dir(), reason="the papers' text is not in this checkout")
def test_the_titles_are_the_papers_own():
    texts = [words(path.read_text(encoding="utf-8", errors="replace")[:3000]) for path in PAPERS_DIR.glob("*.txt")]
    for paper in about.PAPERS:
        assert any(words(paper.title) in text for text in texts), paper.title


def test_the_training_data_named_is_what_every_model_card_records(catalog):
    from importlib import resources

    cards = [m.config["card"] for m in catalog.methods if m.config.get("card")]
    assert len(cards) >= 5
    for card in cards:
        data = json_card(resources, card)["data"]
        assert "MNI152" in data and "synthetic" in data.lower(), (card, data)
    assert "MNI152" in about.TRAINING_DATA and "synthetic" in about.TRAINING_DATA
    assert words(about.TRAINING_DATA) in words(about.acknowledgementText())


def json_card(resources, name: str) -> dict:
    import json

    return json.loads(resources.files("mrisr.weights").joinpath(f"{name}.json").read_text(encoding="utf-8"))


def test_the_module_uses_this_text():
    tree = ast.parse((REPO / "MRISuperResolution" / "MRISuperResolution.py").read_text(encoding="utf-8"))
    assigned = {ast.unparse(node.targets[0]): ast.unparse(node.value) for node in ast.walk(tree)
                if isinstance(node, ast.Assign) and len(node.targets) == 1}
    assert assigned["self.parent.helpText"] == "about.helpText()"
    assert assigned["self.parent.acknowledgementText"] == "about.acknowledgementText()"
