"""The locks (`make lock`: uv pip compile --generate-hashes) match their inputs: every
requirement of a .in file is pinned in its lock at the version it asks for, the lock
holds nothing its inputs no longer need, and every pin carries hashes. Editing a .in
file without `make lock` fails here."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from conftest import REPO
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

LOCKS = {
    "requirements-dev.in": "requirements-dev.txt",
    "shared/requirements.in": "shared/requirements.txt",
    "requirements-checkov.in": "requirements-checkov.txt",
}


def inputs(path: Path) -> list[Requirement]:
    """The requirements of a .in file, following -r includes."""
    found = []
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0].strip()
        if line.startswith("-r "):
            found += inputs(path.parent / line[3:].strip())
        elif line:
            found.append(Requirement(line))
    return found


def lock(path: Path) -> dict[str, tuple[str, int, set[str]]]:
    """name -> (version, number of hashes, what it is there for: `# via` package names or input files)."""
    pins: dict[str, tuple[str, int, set[str]]] = {}
    for block in re.split(r"\n(?=\S)", path.read_text(encoding="utf-8")):
        match = re.match(r"([A-Za-z0-9._-]+)(?:\[[^\]]*\])?==(\S+)", block)
        if match:
            via = set(re.findall(r"#\s+(?:via\s+)?(-[rc] \S+|[A-Za-z0-9._-]+)\s*$", block, flags=re.MULTILINE))
            pins[canonicalize_name(match[1])] = (match[2], block.count("--hash=sha256:"), via)
    return pins


@pytest.mark.parametrize("source", sorted(LOCKS))
def test_each_lock_pins_exactly_what_its_input_asks_for_with_hashes(source: str) -> None:
    requirements = inputs(REPO / source)
    pins = lock(REPO / LOCKS[source])
    for requirement in requirements:
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{LOCKS[source]} lacks {requirement}: run make lock"
        assert requirement.specifier.contains(pins[name][0]), (
            f"{LOCKS[source]}: {name}=={pins[name][0]}, {source} asks {requirement}: run make lock"
        )
    direct = {canonicalize_name(r.name) for r in requirements}
    for name, (version, hashes, via) in pins.items():
        assert hashes, f"{LOCKS[source]}: {name} has no hash"
        needed_by = {canonicalize_name(v) for v in via if not v.startswith("-")} & set(pins)
        assert name in direct or needed_by, (
            f"{LOCKS[source]} still holds {name}=={version}, which nothing needs: run make lock"
        )


def test_the_venv_runs_the_layers_exact_versions() -> None:
    layer, dev = lock(REPO / "shared/requirements.txt"), lock(REPO / "requirements-dev.txt")
    assert {n: v[0] for n, v in layer.items()} == {n: dev[n][0] for n in layer}


def test_the_layer_lock_has_the_arm64_wheels_lambda_needs() -> None:
    # sam build installs the layer for arm64 in hash mode: the aarch64 wheels' hashes must be there
    # (uv pip compile --universal records every file of each pinned version).
    pins = lock(REPO / "shared/requirements.txt")
    assert pins["pydantic-core"][1] > 10 and pins["psycopg-binary"][1] > 10
