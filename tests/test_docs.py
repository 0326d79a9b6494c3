"""The docs stay true to the repository: every relative link of the README and the pages under docs/ names a
file that exists (and an anchor one of its headings makes), and the configuration page names every setting
the service reads."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import REPO

PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def anchors(page: Path) -> set[str]:
    """GitHub's anchor of each heading: lower case, punctuation dropped, spaces as hyphens."""
    headings = re.findall(r"(?m)^#+ (.+)$", page.read_text(encoding="utf-8"))
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_every_relative_link_reaches_a_file_and_heading(page: Path) -> None:
    text = re.sub(r"(?s)```.*?```", "", page.read_text(encoding="utf-8"))
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        assert file.exists(), f"{page.name}: {target}"
        if anchor and file.suffix == ".md":
            assert anchor in anchors(file), f"{page.name}: {target}"


def settings_read() -> set[str]:
    """Every environment variable the layer reads, by the ways it reads them."""
    names: set[str] = set()
    for source in (REPO / "shared" / "whatsapp_ingest").rglob("*.py"):
        text = source.read_text(encoding="utf-8")
        names |= set(re.findall(r'(?:_optional|_flag|os\.environ\.get|os\.getenv)\(\s*"([A-Z][A-Z0-9_]+)"', text))
        names |= set(re.findall(r'os\.environ\["([A-Z][A-Z0-9_]+)"\]', text))
        names |= set(re.findall(r':\s*"([A-Z][A-Z0-9_]+)",?\s*$', text, flags=re.MULTILINE))  # a {key: VARIABLE} map
        for names_in_a_loop in re.findall(r"for \w+ in \(([^)]*)\)", text):
            names |= set(re.findall(r'"([A-Z][A-Z0-9_]+)"', names_in_a_loop))
    return names


def test_the_configuration_page_names_every_setting_the_service_reads() -> None:
    read = settings_read()
    assert {"SUPABASE_SECRET_KEY", "SUPABASE_SERVICE_ROLE_KEY", "DATABASE_URL", "DATABASE_SSLMODE"} <= read
    documented = (REPO / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert sorted(name for name in read if f"`{name}`" not in documented) == []
