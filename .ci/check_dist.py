"""Check the built sdist and wheel in DIST_DIR against the files git tracks.

Usage: python .ci/check_dist.py DIST_DIR

Fails (exit 1, every problem listed) when:
- a git-tracked file of the package (caches excepted) is missing from the wheel, or the wheel has
  no LICENSE / License-File, no `opentelemetry_instrumentor` entry point or a version other than
  version.py's;
- the sdist lacks LICENSE, README.md, CHANGELOG.md, pyproject.toml, or any git-tracked file of the
  package or of tests/;
- CHANGELOG.md has no `## [Unreleased]` section or no section for the version being built.

Generic on purpose: a file added to the package (a subpackage, templates, static files, migrations)
is checked as soon as git tracks it, without editing this script.
"""

from __future__ import annotations

import re
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path

PACKAGE = "opentelemetry_instrumentation_dramatiq_cfg"
ROOT = Path(__file__).resolve().parent.parent
SDIST_REQUIRED = ("LICENSE", "README.md", "CHANGELOG.md", "pyproject.toml")
ENTRY_POINT = f"dramatiq = {PACKAGE}:DramatiqInstrumentor"


def tracked(*paths: str) -> list[str]:
    """Git-tracked files under ``paths``, caches excepted."""
    out = subprocess.run(
        ["git", "ls-files", "-z", "--", *paths], cwd=ROOT, check=True, capture_output=True, text=True
    ).stdout
    files = [f for f in out.split("\0") if f]
    return [f for f in files if "__pycache__/" not in f and not f.endswith((".pyc", ".pyo"))]


def project_version() -> str:
    text = (ROOT / PACKAGE / "version.py").read_text()
    match = re.search(r'^__version__ = "([^"]+)"$', text, re.MULTILINE)
    if not match:
        raise SystemExit(f"no __version__ in {PACKAGE}/version.py")
    return match.group(1)


def only(dist: Path, pattern: str) -> Path:
    found = sorted(dist.glob(pattern))
    if len(found) != 1:
        raise SystemExit(f"expected exactly one {pattern} in {dist}, found {[p.name for p in found]}")
    return found[0]


def check_wheel(wheel: Path, version: str) -> list[str]:
    problems = []
    with zipfile.ZipFile(wheel) as archive:
        names = set(archive.namelist())
        dist_info = f"{PACKAGE}-{version}.dist-info"
        if f"{dist_info}/METADATA" not in names:
            return [f"wheel: no {dist_info}/METADATA (version.py says {version})"]
        metadata = archive.read(f"{dist_info}/METADATA").decode()
        entry_points = (
            archive.read(f"{dist_info}/entry_points.txt").decode()
            if (f"{dist_info}/entry_points.txt" in names)
            else ""
        )
    package_files = tracked(PACKAGE)
    for path in package_files:
        if path not in names:
            problems.append(f"wheel: missing {path}")
    if f"{dist_info}/licenses/LICENSE" not in names:
        problems.append(f"wheel: missing {dist_info}/licenses/LICENSE")
    if "License-File: LICENSE" not in metadata.splitlines():
        problems.append("wheel: METADATA has no 'License-File: LICENSE'")
    if "License-Expression: Apache-2.0" not in metadata.splitlines():
        problems.append("wheel: METADATA has no 'License-Expression: Apache-2.0'")
    if ENTRY_POINT not in entry_points.splitlines():
        problems.append(f"wheel: entry_points.txt lacks '{ENTRY_POINT}'")
    extra = sorted(n for n in names if n.startswith(f"{PACKAGE}/") and n not in set(package_files))
    for name in extra:
        print(f"note: wheel ships {name}, which git does not track", file=sys.stderr)
    return problems


def check_sdist(sdist: Path, version: str) -> list[str]:
    prefix = f"{PACKAGE}-{version}/"
    with tarfile.open(sdist) as archive:
        names = {m.name.removeprefix(prefix) for m in archive.getmembers() if m.isfile()}
    wanted = [*SDIST_REQUIRED, *tracked(PACKAGE, "tests")]
    return [f"sdist: missing {path}" for path in wanted if path not in names]


def check_changelog(version: str) -> list[str]:
    headings = re.findall(r"^## \[([^\]]+)\]", (ROOT / "CHANGELOG.md").read_text(), re.MULTILINE)
    problems = []
    if not headings or headings[0] != "Unreleased":
        problems.append("CHANGELOG.md: the first section must be '## [Unreleased]'")
    if version not in headings:
        problems.append(f"CHANGELOG.md: no '## [{version}]' section for version.py's {version}")
    return problems


def main() -> int:
    if len(sys.argv) != 2:
        raise SystemExit(__doc__)
    dist = Path(sys.argv[1])
    version = project_version()
    wheel = only(dist, "*.whl")
    sdist = only(dist, "*.tar.gz")
    problems = check_wheel(wheel, version) + check_sdist(sdist, version) + check_changelog(version)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        return 1
    print(f"{wheel.name} and {sdist.name}: every tracked package file, LICENSE, README, CHANGELOG and tests")
    return 0


if __name__ == "__main__":
    sys.exit(main())
