"""Checks the sdist and wheel that ``python -m build`` wrote (used by .ci/run).

Usage: ``python .ci/check_dist.py DIST_DIR`` from the repository root. Exit status 0 when
both archives hold what they should, else 1 with one line per problem on stderr.

What it checks, and why:
- exactly one sdist and one wheel, named after the distribution (``crypto-market-collector``)
  and ``collector.__version__`` (the one place the version is written);
- every file of the ``collector/`` source tree (modules, ``py.typed``, the embedded
  ``default_settings.toml``) is in both archives: a subpackage that package discovery
  missed, or package data left out, fails here rather than in a user's install;
- the sdist carries what a build from it needs (``pyproject.toml``, ``README.md``, the
  readme the metadata names) and ``PKG-INFO``;
- the wheel's metadata: its name, version, the ``collector`` console script, and no
  test-only requirement among its runtime requirements.
"""

from __future__ import annotations

import ast
import re
import sys
import tarfile
import tomllib
import zipfile
from email.parser import HeaderParser
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "collector"
# Installed by the test extra only; the service must not need them at run time.
TEST_ONLY = frozenset(
    {
        "trio-websocket",
        "pytest",
        "pytest-trio",
        "moto",
        "trustme",
        "pyyaml",
        "mypy",
        "ruff",
        "build",
    }
)


def requirement_name(requirement: str) -> str:
    """The normalized project name a Requires-Dist line starts with (PEP 503)."""
    match = re.match(r"[A-Za-z0-9._-]+", requirement)
    return re.sub(r"[-_.]+", "-", match.group(0)).lower() if match else requirement


def source_version() -> str:
    """``collector.__version__`` read from the source, without importing the package."""
    tree = ast.parse((PACKAGE / "__init__.py").read_text("utf-8"))
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(
            isinstance(target, ast.Name) and target.id == "__version__" for target in node.targets
        ):
            value = ast.literal_eval(node.value)
            assert isinstance(value, str)
            return value
    raise SystemExit("collector/__init__.py sets no __version__")


def package_files() -> set[str]:
    """The source tree's files under collector/, as archive paths (``collector/...``)."""
    return {
        path.relative_to(ROOT).as_posix()
        for path in PACKAGE.rglob("*")
        if path.is_file() and "__pycache__" not in path.parts and path.suffix != ".pyc"
    }


def check(dist: Path) -> list[str]:
    problems: list[str] = []
    project = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["project"]
    name = project["name"]
    stem = f"{name.replace('-', '_')}-{source_version()}"
    sdists = sorted(dist.glob("*.tar.gz"))
    wheels = sorted(dist.glob("*.whl"))
    if [p.name for p in sdists] != [f"{stem}.tar.gz"]:
        problems.append(f"sdists {[p.name for p in sdists]}, expected [{stem}.tar.gz]")
    if [p.name for p in wheels] != [f"{stem}-py3-none-any.whl"]:
        problems.append(f"wheels {[p.name for p in wheels]}, expected [{stem}-py3-none-any.whl]")
    if problems:
        return problems
    expected = package_files()

    with tarfile.open(sdists[0]) as sdist:
        prefix = f"{stem}/"
        members = {m.name.removeprefix(prefix) for m in sdist.getmembers() if m.isfile()}
        for needed in sorted(
            expected | {"PKG-INFO", "pyproject.toml", "README.md", project["readme"]}
        ):
            if needed not in members:
                problems.append(f"sdist lacks {needed}")
        pkg_info = sdist.extractfile(prefix + "PKG-INFO")
        if pkg_info is not None:
            sdist_meta = HeaderParser().parsestr(pkg_info.read().decode("utf-8"))
            if sdist_meta["Name"] != name:
                problems.append(f"sdist PKG-INFO Name {sdist_meta['Name']!r}, expected {name!r}")

    with zipfile.ZipFile(wheels[0]) as wheel:
        members = set(wheel.namelist())
        for needed in sorted(expected):
            if needed not in members:
                problems.append(f"wheel lacks {needed}")
        info = f"{stem}.dist-info"
        meta = HeaderParser().parsestr(wheel.read(f"{info}/METADATA").decode("utf-8"))
        if (meta["Name"], meta["Version"]) != (name, source_version()):
            problems.append(f"wheel METADATA {meta['Name']} {meta['Version']}")
        for requirement in meta.get_all("Requires-Dist") or []:
            if "extra ==" in requirement:
                continue
            if requirement_name(requirement) in TEST_ONLY:
                problems.append(f"wheel requires the test-only {requirement!r} at run time")
        entry_points = wheel.read(f"{info}/entry_points.txt").decode("utf-8")
        if "collector = collector.cli:main" not in entry_points.splitlines():
            problems.append("wheel has no console script collector = collector.cli:main")
    return problems


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: python .ci/check_dist.py DIST_DIR", file=sys.stderr)
        return 2
    problems = check(Path(argv[1]))
    for problem in problems:
        print(f"check_dist: {problem}", file=sys.stderr)
    if not problems:
        print(f"check_dist: sdist and wheel hold the {len(package_files())} package files")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
