"""The README's measured numbers are the results files' own: its headline table is results/headline.md's."""

import re

from conftest import ROOT

START, END = "<!-- headline table: results/headline.md -->", "<!-- end of headline table -->"


def table_rows(text):
    return [line for line in text.splitlines() if line.startswith("|")]


def test_readme_headline_table_is_results_headline():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert readme.count(START) == 1 and readme.count(END) == 1
    block = readme[readme.index(START) + len(START):readme.index(END)]
    headline = (ROOT / "results" / "headline.md").read_text(encoding="utf-8")
    assert table_rows(block) == table_rows(headline), \
        "README's headline table differs from results/headline.md: copy the table again"
    assert len(table_rows(block)) > 2


def test_readme_images_and_headline_files_exist():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    images = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", readme)
    assert images
    section = readme[readme.index("## Headline results"):readme.index("## Running models")]
    for path in images + re.findall(r"`(results/[A-Za-z0-9_.-]+\.(?:md|png|json))`", section):
        assert (ROOT / path).is_file(), f"README names {path}, which does not exist"
