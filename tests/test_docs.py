"""The README's and the docs' code blocks are run, parsed or compiled, so a snippet cannot rot.

A block is run only when marked, by an HTML comment on the line just before its fence (invisible on
GitHub, on the package index and on the site):

- ``<!-- docs-test: run -->``: run from the repository root (``bash`` blocks with this venv's
  executables first on the PATH, ``python`` blocks with this interpreter); it must exit 0.
- ``<!-- docs-test: run-in-copy -->``: the same in a fresh copy of the repository (the set-up
  command, which makes its own venv and installs from the package index).
- ``<!-- docs-test: output of COMMAND -->``: the block is what ``python COMMAND`` prints, durations
  and ids aside (its first paragraph line by line, the next ones as sets: metric points come in no
  fixed order).
- ``<!-- docs-test: fragment -->``: a ``python`` block that is a sketch, not valid code on its own.

Every other ``python`` block must compile, every ``yaml`` and ``json`` block must parse. The
configuration reference and the compatibility page's generated tables must equal what the code
generates (``docs/hooks/reference.py``; ``mkdocs build --strict`` checks it too).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
MARKER = re.compile(r"^\s*<!-- docs-test: (.+?) -->\s*$")
FENCE = re.compile(r"^(\s*)```(\S*)\s*$")
KINDS = re.compile(r"run|run-in-copy|fragment|output of \S+")


@dataclass(frozen=True)
class Block:
    path: Path
    line: int  # of the opening fence, 1-based
    language: str
    code: str
    marker: str | None

    def __str__(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def blocks(path: Path) -> list[Block]:
    lines = path.read_text().splitlines()
    found, index = [], 0
    while index < len(lines):
        opening = FENCE.match(lines[index])
        if not opening:
            index += 1
            continue
        indent, language = opening.groups()
        end = index + 1
        while lines[end].strip() != "```":
            end += 1
        code = "\n".join(line.removeprefix(indent) for line in lines[index + 1 : end]) + "\n"
        marked = MARKER.match(lines[index - 1]) if index else None
        found.append(Block(path, index + 1, language, code, marked.group(1) if marked else None))
        index = end + 1
    return found


ALL = [block for path in DOCUMENTS for block in blocks(path)]


def marked(kind: str) -> list[Block]:
    """Blocks with this marker, each distinct code once (the README repeats pages' commands)."""
    chosen: dict[str, Block] = {}
    for block in ALL:
        if block.marker == kind or (block.marker or "").startswith(kind + " "):
            chosen.setdefault(block.code + (block.marker or ""), block)
    return list(chosen.values())


def env() -> dict[str, str]:
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}


def run(block: Block, cwd: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    if block.language == "bash":
        command = ["bash", "-euo", "pipefail", "-c", block.code]
    elif block.language == "python":
        command = [sys.executable, "-c", block.code]
    else:
        raise AssertionError(f"{block}: cannot run a {block.language!r} block")
    for tool in re.findall(r"^\s*(promtool|mkdocs)\b", block.code, re.MULTILINE):
        if shutil.which(tool, path=env()["PATH"]) is None:
            if os.environ.get("CI") == "true":
                pytest.fail(f"{block} needs {tool}")
            pytest.skip(f"{block} needs {tool}")
    result = subprocess.run(command, cwd=cwd, env=env(), capture_output=True, text=True, timeout=timeout)
    assert result.returncode == 0, f"{block} exited {result.returncode}:\n{result.stdout}\n{result.stderr}"
    return result


def test_every_marker_stands_right_before_a_code_block_and_is_known():
    for path in DOCUMENTS:
        lines = path.read_text().splitlines()
        for number, line in enumerate(lines):
            found = MARKER.match(line)
            if found:
                where = f"{path.relative_to(ROOT)}:{number + 1}"
                assert KINDS.fullmatch(found.group(1)), f"{where}: unknown marker {found.group(1)!r}"
                assert FENCE.match(lines[number + 1]), f"{where}: a marker must be followed by a fence"
    assert marked("run") and marked("run-in-copy") and marked("output of")


@pytest.mark.parametrize(
    "block", [b for b in ALL if b.language == "python" and b.marker != "fragment"], ids=str
)
def test_python_blocks_compile(block: Block):
    compile(block.code, str(block), "exec")


@pytest.mark.parametrize("block", [b for b in ALL if b.language in ("yaml", "json")], ids=str)
def test_yaml_and_json_blocks_parse(block: Block):
    if block.language == "json":
        json.loads(block.code)
    else:
        assert yaml.safe_load(block.code) is not None


@pytest.mark.parametrize("block", marked("run"), ids=str)
def test_runnable_blocks_run(block: Block):
    run(block, ROOT, timeout=120)


def normalized(text: str) -> list[list[str]]:
    """Paragraphs of lines, durations and trace ids replaced by placeholders."""
    text = re.sub(r"\b[0-9a-f]{32}\b", "<trace-id>", text)
    text = re.sub(r"  \d+\.\d ms", "  <ms>", text)
    return [paragraph.splitlines() for paragraph in text.strip().split("\n\n")]


def assert_same_output(block: Block, printed: str) -> None:
    shown, actual = normalized(block.code), normalized(printed)
    assert len(shown) <= len(actual), f"{block} shows more than the command prints:\n{printed}"
    assert shown[0] == actual[0], f"{block} differs from what the command prints:\n{printed}"
    for shown_lines, actual_lines in zip(shown[1:], actual[1:], strict=False):
        assert shown_lines[0] == actual_lines[0]
        assert sorted(shown_lines[1:]) == sorted(actual_lines[1:]), f"{block}:\n{printed}"


@pytest.mark.parametrize("block", marked("output of"), ids=str)
def test_shown_output_is_what_the_command_prints(block: Block):
    script = block.marker.removeprefix("output of ")  # type: ignore[union-attr]
    result = subprocess.run(
        [sys.executable, script], cwd=ROOT, env=env(), capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert_same_output(block, result.stdout)


def test_the_test_command_of_the_readme_is_the_ci_script():
    (setup,) = [b for b in blocks(ROOT / "README.md") if b.code == "bash .ci/run\n"]
    assert setup.language == "bash"
    check = subprocess.run(["bash", "-n", str(ROOT / ".ci" / "run")], capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    script = (ROOT / ".ci" / "run").read_text()
    assert "mkdocs build --strict" in script and ".venv/bin/pytest" in script


@pytest.mark.slow
@pytest.mark.parametrize("block", marked("run-in-copy"), ids=str)
def test_set_up_commands_run_in_a_fresh_copy(block: Block, tmp_path: Path):
    copy = tmp_path / "repository"
    ignore = shutil.ignore_patterns(".venv*", ".git", "site", "dist", "build", "__pycache__", "*.egg-info")
    shutil.copytree(ROOT, copy, ignore=ignore)
    result = run(block, copy, timeout=900)
    outputs = [b for b in ALL if b.path == block.path and b.marker == "output of examples/quickstart.py"]
    if "examples/quickstart.py" in block.code and outputs:
        printed = result.stdout[result.stdout.index("\ntrace ") + 1 :]  # after pip's own output
        assert_same_output(outputs[0], printed)


def test_generated_tables_equal_what_the_code_generates():
    sys.path.insert(0, str(ROOT / "docs" / "hooks"))
    try:
        import reference
    finally:
        sys.path.remove(str(ROOT / "docs" / "hooks"))
    for path in reference.PAGES:
        reference.check(path, path.read_text())


# The files of the modules the docs hook imports (run alone, so that nothing the suite imported counts).
_HOOK_IMPORTS = """
import sys
before = set(sys.modules)  # the interpreter's start-up (a venv's setuptools' .pth file, ...)
sys.path.insert(0, "docs/hooks")
import reference
for generators in reference.PAGES.values():
    for generate in generators.values():
        generate()
new = [module for name, module in list(sys.modules.items()) if name not in before]
files = {str(module.__file__) for module in new if getattr(module, "__file__", None)}
print("\\n".join(sorted(files)))
"""


def _requires(name: str) -> list[tuple[str, str | None]]:
    """The requirements of an installed distribution, each with the extra that brings it (``None``:
    in its marker, or none); this project's read off pyproject.toml (the installed metadata of an
    editable install is as old as the install)."""
    from importlib import metadata

    if name != "opentelemetry-instrumentation-dramatiq-cfg" or sys.version_info < (3, 11):
        return [(line, None) for line in metadata.requires(name) or []]
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    return [(line, None) for line in project["dependencies"]] + [
        (line, extra) for extra, lines in project["optional-dependencies"].items() for line in lines
    ]


def _closure(name: str, extras: frozenset[str]) -> set[str]:
    """The distributions ``pip install name[extras]`` installs, by normalized name (the dependencies'
    read off this venv's installed metadata)."""
    from importlib import metadata

    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    seen: set[tuple[str, frozenset[str]]] = set()
    found: set[str] = set()
    pending = [(canonicalize_name(name), extras)]
    while pending:
        current, wanted = pending.pop()
        if (current, wanted) in seen:
            continue
        seen.add((current, wanted))
        found.add(current)
        try:
            requires = _requires(current)
        except metadata.PackageNotFoundError:  # not installed here (mkdocs in the wheel's venv)
            continue
        for line, extra in requires:
            requirement = Requirement(line)
            if extra is not None and extra not in wanted:
                continue
            environments = [{"extra": option} for option in wanted or {""}]
            if requirement.marker is None or any(requirement.marker.evaluate(e) for e in environments):
                pending.append((canonicalize_name(requirement.name), frozenset(requirement.extras)))
    return found


def test_the_docs_extra_installs_everything_the_docs_hook_imports():
    """``pip install -e '.[docs]' && mkdocs serve`` (the README) in a fresh venv: the hook that
    generates the configuration reference imports the package, hence Dramatiq, so the docs extra
    must bring it (.ci/run builds the site from such a venv too)."""
    from importlib import metadata

    from packaging.utils import canonicalize_name

    result = subprocess.run(
        [sys.executable, "-c", _HOOK_IMPORTS], cwd=ROOT, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    owner = {
        os.path.normpath(distribution.locate_file(file)): canonicalize_name(distribution.metadata["Name"])
        for distribution in metadata.distributions()
        for file in distribution.files or []
        if file.suffix == ".py"
    }
    files = [os.path.normpath(file) for file in result.stdout.split()]
    needed = {owner[file] for file in files if file in owner}
    assert {"dramatiq", "opentelemetry-api"} <= needed  # the probe sees what it must
    assert needed - _closure("opentelemetry-instrumentation-dramatiq-cfg", frozenset({"docs"})) == set()
