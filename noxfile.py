"""Developer and CI sessions: ``nox`` runs tests, lint and typecheck; ``nox -s docs``
builds the documentation site.

Sessions have no ``python=``: they use the interpreter that runs nox (3.11 or newer), so
nothing here depends on which Pythons a machine happens to have.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import nox

# dependency_groups() arrived in 2025.02.09.
nox.needs_version = ">=2025.2.9"
# virtualenv is not always installed; the stdlib venv always is.
nox.options.default_venv_backend = "venv"
nox.options.sessions = ["tests", "lint", "typecheck"]

ROOT = Path(__file__).parent
PYPROJECT = nox.project.load_toml(ROOT / "pyproject.toml")
LINT_PATHS = ("src", "tests", "bench", "noxfile.py")


def group(name: str) -> tuple[str, ...]:
    return nox.project.dependency_groups(PYPROJECT, name)


def test_plugins() -> list[str]:
    """Plugin packages under tests/plugins/, installed the way a third party's would be."""
    return [str(p.parent) for p in sorted(ROOT.glob("tests/plugins/*/pyproject.toml"))]


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite; arguments after ``--`` go to pytest."""
    session.install("-e", ".[all]", *group("test"))
    if plugins := test_plugins():
        # A second step: pip does not match a plugin's `tokenbroker` requirement to the
        # `-e .[all]` of the same command, but it does see an installed one.
        session.install(*plugins)
    interop = ROOT / "tests" / "interop"
    if shutil.which("npm") and not (interop / "node_modules").is_dir():
        # Wix's own SDK for tests/interop, pinned by its lock file; without npm those
        # tests skip with a reason (and fail under CI=true).
        session.run(
            "npm",
            "ci",
            "--prefix",
            str(interop),
            "--no-audit",
            "--no-fund",
            "--loglevel=error",
            external=True,
        )
    session.run("pytest", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """ruff check (rules in pyproject's [tool.ruff])."""
    session.install(*group("lint"))
    session.run("ruff", "check", *LINT_PATHS)
    session.run("ruff", "format", "--check", *LINT_PATHS)


@nox.session
def typecheck(session: nox.Session) -> None:
    """mypy --strict over the package (settings in pyproject's [tool.mypy])."""
    session.install(".[all]", *group("typecheck"))
    session.run("mypy", "--strict", "src/tokenbroker")


@nox.session
def docs(session: nox.Session) -> None:
    """The documentation site: ``mkdocs build --strict`` into ``site/``, failing on any
    warning; arguments after ``--`` go to ``mkdocs build`` (e.g. ``--site-dir DIR``)."""
    session.install(".", *group("docs"))  # mkdocs-click imports the CLI to document it
    # mkdocs-material prints a banner about MkDocs 2 on every build; it is no warning.
    env = {"NO_MKDOCS_2_WARNING": "1"}
    session.run("mkdocs", "build", "--strict", *session.posargs, env=env)


@nox.session
def demo(session: nox.Session) -> None:
    """The end-to-end demo against the bundled Wix emulator."""
    session.install(".")
    session.run("tokenbroker", "demo", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks; e.g. ``nox -s bench -- --quick``."""
    session.install(".[all]", *group("bench"))
    session.run("python", "bench/run.py", *session.posargs)
