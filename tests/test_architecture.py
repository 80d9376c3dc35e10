"""The import rules of ARCHITECTURE.md ("The nevers"), checked by import-linter.

The contracts live in pyproject.toml ([tool.importlinter]). The first test holds
the tree to them; the others plant one forbidden import in a copy of the tree and
show that the check fails and names the import, so the check itself can fail.
"""

from __future__ import annotations

import importlib
import os
import pkgutil
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("linkhub_protocol", "hub", "web", "linkhub", "firmware_sim")
LINT_IMPORTS = "from importlinter.cli import lint_imports_command; lint_imports_command()"


def lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    """Run import-linter on `tree` as the only place the packages come from."""
    env = {**os.environ, "PYTHONPATH": str(tree)}
    return subprocess.run(
        [sys.executable, "-c", LINT_IMPORTS, "--no-cache"],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_tree_keeps_every_import_contract() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.fixture
def tree_copy(tmp_path: Path) -> Path:
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    return tmp_path


@pytest.mark.parametrize(
    ("module", "bad_import", "contract", "named"),
    [
        (
            "linkhub_protocol/_planted.py",
            "import hub.daemon",
            "The wire protocol imports nothing of ours",
            "linkhub_protocol._planted -> hub.daemon",
        ),
        (
            "firmware_sim/_planted.py",
            "from hub.services import links",
            "firmware_sim knows only the wire protocol",
            "firmware_sim._planted -> hub.services.links",
        ),
        (
            "hub/core/_planted.py",
            "import sqlalchemy",
            "The hub's core does no I/O",
            "hub.core._planted -> sqlalchemy",
        ),
        (
            "hub/services/_planted.py",
            "import web.auth",
            "The hub imports neither the pages nor the command line",
            "hub.services._planted -> web.auth",
        ),
    ],
)
def test_a_forbidden_import_fails_the_check_and_is_named(
    tree_copy: Path, module: str, bad_import: str, contract: str, named: str
) -> None:
    assert lint_imports(tree_copy).returncode == 0  # the copy is as good as the tree
    (tree_copy / module).write_text(f'"""Planted by the test."""\n\n{bad_import}\n')
    result = lint_imports(tree_copy)
    assert result.returncode != 0
    assert f"{contract} BROKEN" in result.stdout
    assert named in result.stdout


def readme_layout() -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index("\n## Layout")
    end = text.index("\n## ", start + 1)
    return text[start:end]


def test_the_readme_layout_names_every_module_of_the_hub_and_the_protocol() -> None:
    """A newcomer finds each part from the README; a new module must be listed."""
    layout = readme_layout()
    listed = set(re.findall(r"`([^`]+)`", layout))
    modules = [
        path.relative_to(ROOT).as_posix()
        for package in ("hub", "linkhub_protocol")
        for path in sorted((ROOT / package).rglob("*.py"))
        if path.name != "__init__.py" and "migrations" not in path.parts
    ]
    missing = [module for module in modules if module not in listed]
    assert not missing, f"README.md's Layout does not list: {', '.join(missing)}"
    for folder in ("web/", "linkhub/", "firmware_sim/", "tests/", "bench/", "deploy/", "docs/"):
        assert folder in listed, f"README.md's Layout does not list {folder}"


def test_every_error_the_hub_web_and_cli_raise_is_a_linkhub_error() -> None:
    """One tree (hub/errors.py): an exception class defined anywhere in hub/,
    web/ or linkhub/ derives from LinkHubError, so the edges can catch ours
    and only ours. (The protocol package and firmware_sim import nothing of
    the hub's: their errors are ProtocolError and firmware_sim's own.)"""
    from hub.errors import LinkHubError

    strays = []
    for package in ("hub", "web", "linkhub"):
        root = importlib.import_module(package)
        for info in pkgutil.walk_packages(root.__path__, f"{package}."):
            if ".migrations" in info.name or info.name.endswith(".__main__"):
                continue
            module = importlib.import_module(info.name)
            for name, value in vars(module).items():
                if (
                    isinstance(value, type)
                    and issubclass(value, BaseException)
                    and value.__module__ == module.__name__
                    and not issubclass(value, LinkHubError)
                ):
                    strays.append(f"{module.__name__}.{name}")
    assert strays == [], f"not under LinkHubError: {', '.join(strays)}"
