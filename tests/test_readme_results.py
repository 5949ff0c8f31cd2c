"""The READMEs' result tables are the committed results' own (benchmarks/readme.py)."""

from __future__ import annotations

import shutil

import pytest

from benchmarks import readme
from benchmarks.core import RESULTS


def test_every_readme_block_matches_the_committed_results():
    assert readme.stale() == [], "run: python -m benchmarks.readme"
    blocks = sum(len(readme.BLOCK.findall(p.read_text())) for p in readme.READMES)
    assert blocks >= 5  # the headline tables are generated, not typed


def test_a_changed_result_makes_its_block_stale(tmp_path):
    results = tmp_path / "results"
    shutil.copytree(RESULTS, results)
    text = "intro\n<!-- results: generation_mnist.md#1 -->\nold\n<!-- /results -->\nafter\n"
    fresh = readme.render(text, results)
    assert "old" not in fresh and fresh.startswith("intro\n") and fresh.endswith("<!-- /results -->\nafter\n")
    path = results / "generation_mnist.md"
    path.write_text(path.read_text().replace("| vae |", "| VAE renamed |", 1))
    assert readme.render(fresh, results) != fresh


def test_a_bad_block_names_the_fix(tmp_path):
    with pytest.raises(FileNotFoundError, match="fix the block's file name"):
        readme.render("<!-- results: nothing.md#1 -->\n<!-- /results -->", tmp_path)
