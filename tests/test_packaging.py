"""The distribution's metadata, and ops/requirements.lock against pyproject.toml.

The image installs ops/requirements.lock (every runtime package pinned, with hashes) instead
of resolving pyproject.toml's ranges, so the two can drift apart: a dependency added, raised
or dropped in pyproject.toml and not in the lock. These tests fail on such a drift; the fix
is ``ops/update-lock``. The lock is resolved for the image's interpreter (CPython 3.11 on
Linux), so its markers are evaluated for that, not for the interpreter running the tests.
What the lock holds transitively is checked where it is installed: ``pip check`` in .ci/run
and in ops/Dockerfile.

The build itself (sdist, wheel, the installed command) is checked by .ci/run with
.ci/check_dist.py; here only what can be read from the source tree.
"""

from __future__ import annotations

import ast
import importlib.metadata
import re
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name
from packaging.version import Version

import collector
from tests.test_ops import dockerfile_instructions

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "ops" / "requirements.lock"
PACKAGE_DIR = Path(collector.__file__).resolve().parent
DIST_NAME = "crypto-market-collector"
LOCK_PYTHON = "3.11"  # the image's interpreter (ops/Dockerfile PYTHON_IMAGE)


def pyproject() -> dict[str, Any]:
    return tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))


# Extras the image installs too (ops/update-lock): the live outlets' client libraries.
IMAGE_EXTRAS = ("kafka", "redis")


def runtime_requirements() -> list[Requirement]:
    """The dependencies the lock must pin: the runtime ones and the image's extras'."""
    project = pyproject()["project"]
    lines = list(project["dependencies"])
    for extra in IMAGE_EXTRAS:
        lines += project["optional-dependencies"][extra]
    return [Requirement(line) for line in lines]


def lock_environment(extra: str = "") -> dict[str, str]:
    """Marker values of the image: CPython 3.11 on Linux (and ``extra``, if given)."""
    env = {key: str(value) for key, value in default_environment().items()}
    env.update(
        python_version=LOCK_PYTHON,
        python_full_version=f"{LOCK_PYTHON}.0",
        sys_platform="linux",
        platform_system="Linux",
        os_name="posix",
        implementation_name="cpython",
        platform_python_implementation="CPython",
    )
    if extra:
        env["extra"] = extra
    return env


def applies(requirement: Requirement, extra: str = "") -> bool:
    if requirement.marker is None:
        return True
    return requirement.marker.evaluate(lock_environment(extra))


@dataclass
class Pin:
    version: Version
    hashes: list[str] = field(default_factory=list)
    via: list[str] = field(default_factory=list)  # pip-compile's "# via" annotations


def read_lock(text: str) -> dict[str, Pin]:
    """Canonical name -> its pin, from pip-compile's output format."""
    pins: dict[str, Pin] = {}
    current: Pin | None = None
    in_via = False
    for line in text.splitlines():
        if match := re.match(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", line):
            current = pins[canonicalize_name(match[1])] = Pin(Version(match[2]))
            in_via = False
        elif current is None:
            continue
        elif match := re.match(r"^\s+--hash=(sha256:[0-9a-f]{64})", line):
            current.hashes.append(match[1])
        elif match := re.match(r"^\s+# via\s*(.*)$", line):
            in_via = True
            if match[1]:
                current.via.append(match[1].strip())
        elif in_via and (match := re.match(r"^\s+#\s+(\S.*)$", line)):
            current.via.append(match[1].strip())
        else:
            in_via = False
    return pins


def lock() -> dict[str, Pin]:
    return read_lock(LOCK.read_text("utf-8"))


def test_read_lock_understands_pip_compile_output() -> None:
    """The parser the checks below rely on, on a sample in pip-compile's format."""
    digest = "0" * 64
    text = (
        "#\n# header\n#\n"
        f"Attrs==26.1.0 \\\n    --hash=sha256:{digest} \\\n    --hash=sha256:{'1' * 64}\n"
        "    # via\n    #   crypto-market-collector (pyproject.toml)\n    #   trio\n"
        f"trio==0.35.0 \\\n    --hash=sha256:{digest}\n"
        "    # via crypto-market-collector (pyproject.toml)\n"
    )
    pins = read_lock(text)
    assert pins.keys() == {"attrs", "trio"}
    assert pins["attrs"].version == Version("26.1.0")
    assert pins["attrs"].hashes == [f"sha256:{digest}", f"sha256:{'1' * 64}"]
    assert pins["attrs"].via == [f"{DIST_NAME} (pyproject.toml)", "trio"]
    assert pins["trio"].via == [f"{DIST_NAME} (pyproject.toml)"]


def test_lock_pins_every_runtime_dependency_within_its_range() -> None:
    pins = lock()
    for requirement in runtime_requirements():
        if not applies(requirement):
            continue
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement} is not in {LOCK.name}: run ops/update-lock"
        assert requirement.specifier.contains(pins[name].version, prereleases=True), (
            f"{LOCK.name} pins {name}=={pins[name].version}, outside {requirement}: "
            "run ops/update-lock"
        )


def test_lock_pins_what_the_extras_of_runtime_dependencies_need() -> None:
    """``pyjwt[crypto]`` needs cryptography; pip check does not look at extras, so this does.

    The extra's requirements are read from the installed distribution's metadata (the
    test environment installs the runtime dependencies too)."""
    pins = lock()
    checked = 0
    for requirement in runtime_requirements():
        for extra in sorted(requirement.extras):
            for line in importlib.metadata.requires(requirement.name) or []:
                needed = Requirement(line)
                if needed.marker is None or not applies(needed, extra):
                    continue  # not part of this extra (or not on the image's platform)
                name = canonicalize_name(needed.name)
                assert name in pins, f"{requirement} needs {needed}: not in {LOCK.name}"
                checked += 1
    assert checked, "no extra was checked: pyproject has a dependency with an extra"


def test_lock_has_no_direct_dependency_that_pyproject_dropped() -> None:
    declared = {canonicalize_name(r.name) for r in runtime_requirements()}
    direct = {name for name, pin in lock().items() if f"{DIST_NAME} (pyproject.toml)" in pin.via}
    assert direct, f"{LOCK.name} names no package as a dependency of {DIST_NAME}"
    assert direct <= declared, f"not in pyproject.toml any more: {sorted(direct - declared)}"


def test_lock_is_for_the_image_python_and_hashes_every_pin() -> None:
    text = LOCK.read_text("utf-8")
    assert f"autogenerated by pip-compile with Python {LOCK_PYTHON}\n" in text
    (python_image,) = [
        rest.partition("=")[2]
        for word, rest in dockerfile_instructions()
        if word == "ARG"
        if rest.startswith("PYTHON_IMAGE=")
    ]
    assert python_image.startswith(f"python:{LOCK_PYTHON}-"), python_image
    pins = lock()
    assert len(pins) > len(runtime_requirements()), "transitive packages are pinned too"
    for name, pin in pins.items():
        assert pin.hashes, f"{name} has no --hash: pip install --require-hashes refuses it"
    # No machine's own index or wheel folder.
    assert "--index-url" not in text
    assert "--find-links" not in text


def test_image_installs_the_lock_hash_checked_and_nothing_else() -> None:
    runs = [rest for word, rest in dockerfile_instructions() if word == "RUN"]
    (lock_install,) = [run for run in runs if "requirements.lock" in run]
    assert "--require-hashes" in lock_install.split()
    assert "--no-deps" in lock_install.split()
    (package_install,) = [run for run in runs if "pip install --no-deps ." in run]
    assert "pip check" in package_install


def imported_modules(package_dir: Path) -> Iterator[tuple[Path, str]]:
    """(file, top-level module) for every absolute import in the package, lazy ones too."""
    for path in sorted(package_dir.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text("utf-8"), str(path))):
            if isinstance(node, ast.Import):
                for alias in node.names:
                    yield path, alias.name.partition(".")[0]
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                yield path, node.module.partition(".")[0]


# Extras a user installs for an optional part (the reader's DuckDB relations). The image does
# not: the package imports them lazily and says which extra is missing (checked below).
OPTIONAL_EXTRAS = ("reader",)


def optional_distributions() -> set[str]:
    extras = pyproject()["project"]["optional-dependencies"]
    return {canonicalize_name(Requirement(r).name) for e in OPTIONAL_EXTRAS for r in extras[e]}


def test_service_code_imports_only_packages_the_lock_installs() -> None:
    """A test-only package (trio-websocket, moto, pyyaml...) imported by the service would
    work under the tests and fail in the image: nothing outside tests/ may import one (but
    an optional extra's, lazily: see the next test)."""
    pins = lock()
    optional = optional_distributions()
    providers = importlib.metadata.packages_distributions()
    seen: set[str] = set()
    for path, module in imported_modules(PACKAGE_DIR):
        if module == "collector" or module in sys.stdlib_module_names:
            continue
        seen.add(module)
        dists = {canonicalize_name(d) for d in providers.get(module, [])}
        if dists and dists <= optional:
            continue
        assert dists & pins.keys(), (
            f"{path.relative_to(PACKAGE_DIR.parent)} imports {module} "
            f"(from {sorted(dists) or 'no installed distribution'}), which {LOCK.name} "
            "does not install"
        )
    assert {"trio", "pyarrow", "msgspec"} <= seen  # the walk found the imports


def test_optional_extras_are_imported_lazily() -> None:
    """A module that imported an optional extra's package at its top would fail to import
    in the image; only imports inside functions (or ``if TYPE_CHECKING:``) may name one."""
    optional = optional_distributions()
    assert optional, "no optional extra found in pyproject"
    providers = importlib.metadata.packages_distributions()
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        tree = ast.parse(path.read_text("utf-8"), str(path))
        for node in tree.body:  # module level only: functions and `if` blocks are not here
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
                names = [node.module]
            for name in names:
                top = name.partition(".")[0]
                dists = {canonicalize_name(d) for d in providers.get(top, [])}
                assert not dists & optional, (
                    f"{path.relative_to(PACKAGE_DIR.parent)} imports {name} at module level; "
                    f"it comes with an optional extra ({', '.join(OPTIONAL_EXTRAS)})"
                )


def test_trio_websocket_is_a_test_dependency_only() -> None:
    project = pyproject()["project"]
    runtime = {canonicalize_name(r.name) for r in runtime_requirements()}
    test = {
        canonicalize_name(Requirement(r).name) for r in project["optional-dependencies"]["test"]
    }
    assert "trio-websocket" not in runtime
    assert "trio-websocket" in test
    assert "trio-websocket" not in lock()


def test_distribution_name_and_one_version_source() -> None:
    """The distribution is crypto-market-collector (``collector`` on PyPI is another
    project); its version is read from ``collector.__version__`` and written nowhere else."""
    data = pyproject()
    project = data["project"]
    assert project["name"] == DIST_NAME
    assert "version" not in project
    assert "version" in project["dynamic"]
    assert data["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "collector.__version__"}
    assert project["scripts"] == {"collector": "collector.cli:main"}
    Version(collector.__version__)  # a valid version string (raises otherwise)
