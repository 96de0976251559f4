"""MkDocs hook: the configuration reference, generated from the code, and the changelog page.

The tables of ``docs/configuration.md`` (and ``docs/compatibility.md``) between
``<!-- generated: NAME -->`` and ``<!-- end: NAME -->`` are made from the code:

- ``options``: every field of ``config.Options`` (the keyword arguments of ``instrument()``), its
  type from ``Options.resolve``'s signature, its default, its ``OTEL_PYTHON_DRAMATIQ_*`` variable
  (found by setting the variable and resolving: an option that reads it changes or refuses the
  value) and its description (the ``#:`` comment above the field);
- ``health``: every field of ``health.config.HealthConfig`` and of its Django subclass
  ``django.conf.HealthSettings`` (the ``DRAMATIQ_HEALTH`` keys), read with ``ast`` so that building
  the docs needs no Django;
- ``probe`` (``docs/health-probe.md``): the shared keys as the ``dramatiq-health`` command and the
  WSGI/ASGI apps take them: ``DRAMATIQ_HEALTH_*`` variables and command-line options;
- ``lowest`` (compatibility page): the pins of ``.ci/lowest-constraints.txt``.

The committed page must equal what this generates: ``mkdocs build --strict`` fails otherwise, naming
the command that rewrites it (``python docs/hooks/reference.py --write``), so the page cannot drift
from the code and still reads whole on GitHub. A field without a ``#:`` description fails the same way.

``docs/changelog.md`` gets ``CHANGELOG.md`` (its H1 left out) where it says ``<!-- include: CHANGELOG.md
-->``.
"""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import os
import re
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent.parent
PAGE = ROOT / "docs" / "configuration.md"
CHANGELOG = ROOT / "CHANGELOG.md"
WRITE_COMMAND = "python docs/hooks/reference.py --write"
_BLOCK = re.compile(r"(<!-- generated: (\w+) -->\n)(.*?)(<!-- end: \2 -->)", re.DOTALL)
_INCLUDE = re.compile(r"<!-- include: ([\w.]+) -->")


class ReferenceError(Exception):
    """The docs disagree with the code, or the code lacks a description."""


def _package() -> Path:
    """The package's directory: the checkout's, or the installed one when the checkout has none (the
    sdist's tests run against the installed wheel)."""
    sys.path.append(str(ROOT))
    try:
        spec = importlib.util.find_spec("opentelemetry_instrumentation_dramatiq_cfg")
    finally:
        sys.path.remove(str(ROOT))
    assert spec is not None and spec.origin is not None
    return Path(spec.origin).parent


def field_docs(source: Path, class_name: str) -> dict[str, tuple[str, ast.AnnAssign]]:
    """Each annotated field of ``class_name`` with its ``#:`` comment lines, joined."""
    text = source.read_text()
    lines = text.splitlines()
    tree = ast.parse(text)
    (cls,) = [node for node in tree.body if isinstance(node, ast.ClassDef) and node.name == class_name]
    found = {}
    for node in cls.body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        comment: list[str] = []
        row = node.lineno - 2  # the line above, 0-based
        while row >= 0 and lines[row].strip().startswith("#:"):
            comment.insert(0, lines[row].strip()[2:].strip())
            row -= 1
        if not comment:
            raise ReferenceError(
                f"{source.name}: {class_name}.{node.target.id} has no '#:' description "
                "on the line(s) above it; every option is documented there"
            )
        found[node.target.id] = (" ".join(comment), node)
    return found


def _cell(text: str) -> str:
    return text.replace("|", "\\|")


def _code(text: str) -> str:
    return f"`{text}`"


def _split_union(annotation: str) -> list[str]:
    """The members of a top-level ``a | b`` union (one member if none)."""
    parts, depth, start = [], 0, 0
    for index, char in enumerate(annotation):
        depth += {"[": 1, "]": -1}.get(char, 0)
        if char == "|" and depth == 0:
            parts.append(annotation[start:index].strip())
            start = index + 1
    parts.append(annotation[start:].strip())
    return parts


def _no_pipes(annotation: str) -> str:
    """``X[a | b]`` as ``X[Union[a, b]]``: a pipe cannot stand inside a table cell's code."""
    if "[" not in annotation:
        return annotation
    name, _, inner = annotation.partition("[")
    members = [_no_pipes(member) for member in _split_union(inner[:-1])]
    return f"{name}[{members[0] if len(members) == 1 else 'Union[' + ', '.join(members) + ']'}]"


def _type(annotation: str) -> str:
    """``a | b`` as `` `a` or `b` `` for a table cell."""
    return " or ".join(_code(_no_pipes(part)) for part in _split_union(annotation))


def _default(value: Any) -> str:
    if value is None or value == () or value == frozenset():
        return "none"
    if isinstance(value, bool):
        return _code(str(value).lower())
    if isinstance(value, float) and value.is_integer():
        return _code(str(int(value)))
    return _code(str(value))


@contextmanager
def _environment(**variables: str) -> Iterator[None]:
    """Only these ``OTEL_PYTHON_DRAMATIQ_*`` variables set, for the duration."""
    saved = dict(os.environ)
    try:
        for name in [name for name in os.environ if name.startswith("OTEL_PYTHON_DRAMATIQ_")]:
            del os.environ[name]
        os.environ.update(variables)
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _reads_variable(options: Any, variable: str) -> bool:
    """Whether ``Options.resolve()`` reads ``variable``: set to junk, it changes or refuses the value."""
    with _environment():
        baseline = options.resolve()
    with _environment(**{variable: "\x01probe"}):
        try:
            return bool(options.resolve() != baseline)
        except ValueError:
            return True


def options_table() -> str:
    """A summary table linking to one section per option (keyword, variable, type, default, text)."""
    package = _package()
    from opentelemetry_instrumentation_dramatiq_cfg import config

    docs = field_docs(package / "config.py", "Options")
    signature = {
        arg.arg: ast.unparse(arg.annotation)
        for node in ast.walk(ast.parse((package / "config.py").read_text()))
        if isinstance(node, ast.FunctionDef) and node.name == "resolve"
        for arg in node.args.kwonlyargs
        if arg.annotation is not None
    }
    rows = ["| Keyword argument | Environment variable | Default |", "|---|---|---|"]
    sections = []
    for field in dataclasses.fields(config.Options):
        if field.name not in signature:
            raise ReferenceError(f"Options.{field.name} is not a keyword argument of Options.resolve()")
        variable = config.ENV_PREFIX + field.name.upper()
        kind = _type(signature[field.name].removesuffix(" | None"))
        env = _code(variable) if _reads_variable(config.Options, variable) else "\N{EN DASH}"
        default = _default(field.default)
        description, _ = docs[field.name]
        rows.append(f"| [{_code(field.name)}](#{field.name}) | {env} | {default} |")
        no_env = "none (keyword argument only)"
        sections.append(
            f"### `{field.name}`\n\n"
            f"{description}\n\n"
            f"- Environment variable: {env if env.startswith('`') else no_env}\n"
            f"- Type: {kind}\n"
            f"- Default: {default}\n"
        )
    return "\n".join(rows) + "\n\n" + "\n".join(sections)


def _ast_default(value: ast.expr | None) -> Any:
    if isinstance(value, ast.Call) and getattr(value.func, "id", None) == "field":
        for keyword in value.keywords:
            if keyword.arg == "default":
                return ast.literal_eval(keyword.value)
            if keyword.arg == "default_factory":
                return {"dict": {}, "list": [], "tuple": (), "set": set()}[ast.unparse(keyword.value)]
    return ast.literal_eval(value) if value is not None else None


def _health_fields() -> dict[str, tuple[str, ast.AnnAssign]]:
    """The ``DRAMATIQ_HEALTH`` keys: the ones every health front shares (``health.config.HealthConfig``),
    then the Django app's own (``django.conf.HealthSettings``, its subclass)."""
    package = _package()
    return {
        **field_docs(package / "health" / "config.py", "HealthConfig"),
        **field_docs(package / "django" / "conf.py", "HealthSettings"),
    }


def _shown_default(node: ast.AnnAssign) -> str:
    default = _ast_default(node.value)
    return _code(f'"{default}"' if isinstance(default, str) else repr(default))


def health_table() -> str:
    rows = ["| `DRAMATIQ_HEALTH` key | Type | Default | Description |", "|---|---|---|---|"]
    for name, (description, node) in _health_fields().items():
        rows.append(
            f"| {_code(name)} | {_type(ast.unparse(node.annotation))} | {_shown_default(node)} "
            f"| {_cell(description)} |"
        )
    return "\n".join(rows) + "\n"


def _literal(source: Path, name: str) -> Any:
    """The value of the module-level ``NAME: Final = <literal>`` (or ``NAME = ...``) of ``source``."""
    for node in ast.parse(source.read_text()).body:
        target = node.target if isinstance(node, ast.AnnAssign) else None
        if isinstance(node, ast.Assign) and len(node.targets) == 1:
            target = node.targets[0]
        if isinstance(target, ast.Name) and target.id == name and node.value is not None:  # type: ignore[union-attr]
            return node.value  # type: ignore[union-attr]
    raise ReferenceError(f"{source.name} has no {name}")


def probe_table() -> str:
    """The settings of the ``dramatiq-health`` command and the WSGI/ASGI apps: each shared key's
    ``DRAMATIQ_HEALTH_*`` variable and, where the command takes it, its option (``health/cli.py``'s
    ``OPTIONS``)."""
    package = _package()
    prefix = ast.literal_eval(_literal(package / "health" / "config.py", "ENV_PREFIX"))
    options_node = _literal(package / "health" / "cli.py", "OPTIONS")
    assert isinstance(options_node, ast.Dict)
    options = {ast.literal_eval(key) for key in options_node.keys if key is not None}
    rows = ["| Environment variable | Option | Default | Description |", "|---|---|---|---|"]
    for name, (description, node) in field_docs(package / "health" / "config.py", "HealthConfig").items():
        option = _code("--" + name.lower().replace("_", "-")) if name in options else "\N{EN DASH}"
        rows.append(f"| {_code(prefix + name)} | {option} | {_shown_default(node)} | {_cell(description)} |")
    return "\n".join(rows) + "\n"


def lowest_table() -> str:
    """The pins of ``.ci/lowest-constraints.txt``: what the oldest-releases run installs."""
    rows = ["| Package | Oldest release tested |", "|---|---|"]
    for line in (ROOT / ".ci" / "lowest-constraints.txt").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            name, _, version = line.partition("==")
            rows.append(f"| `{name.strip()}` | {version.strip()} |")
    return "\n".join(rows) + "\n"


def _imports(module: Path, package: Path) -> tuple[set[str], bool]:
    """The modules of this package that ``module`` imports, and whether it imports OpenTelemetry."""
    own, telemetry = set(), False
    base = list(module.relative_to(package).parent.parts)
    for node in ast.walk(ast.parse(module.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level:
            parent = base[: len(base) - (node.level - 1)] if node.level > 1 else base
            if node.module:
                own.add(".".join([*parent, node.module]))
            else:
                own.update(".".join([*parent, alias.name]) for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            name = node.module
            if name.startswith(package.name):
                own.add(name.removeprefix(package.name).lstrip(".") or "__init__")
            telemetry |= name.split(".")[0] == "opentelemetry"
        elif isinstance(node, ast.Import):
            telemetry |= any(alias.name.split(".")[0] == "opentelemetry" for alias in node.names)
    return own, telemetry


def modules_table() -> str:
    """Every module of the package and what of the package it imports (sizes change too often)."""
    package = _package()
    rows = ["| Module | Imports of this package | OpenTelemetry |", "|---|---|---|"]
    for module in sorted(package.rglob("*.py")):
        relative = module.relative_to(package)
        if "migrations" in relative.parts or (
            module.name == "__init__.py" and not module.read_text().strip()
        ):
            continue
        own, telemetry = _imports(module, package)
        names = ", ".join(f"`{name}`" for name in sorted(own)) or "\N{EN DASH}"
        rows.append(f"| `{relative.as_posix()}` | {names} | {'yes' if telemetry else 'no'} |")
    return "\n".join(rows) + "\n"


GENERATORS: dict[str, Callable[[], str]] = {"options": options_table, "health": health_table}
#: Each page with generated blocks, and the generators of its blocks.
PAGES: dict[Path, dict[str, Callable[[], str]]] = {
    PAGE: GENERATORS,
    ROOT / "docs" / "compatibility.md": {"lowest": lowest_table},
    ROOT / "docs" / "architecture.md": {"modules": modules_table},
    ROOT / "docs" / "health-probe.md": {"probe": probe_table},
}


def generated(page: str, generators: dict[str, Callable[[], str]]) -> str:
    """``page`` with every generated block made anew from the code."""

    def replace(match: re.Match[str]) -> str:
        name = match.group(2)
        if name not in generators:
            raise ReferenceError(f"unknown generated block {name!r}; known: {sorted(generators)}")
        return match.group(1) + generators[name]() + match.group(4)

    return _BLOCK.sub(replace, page)


def check(path: Path, page: str) -> None:
    """Raise unless every generated block of ``page`` is what the code generates now."""
    generators = PAGES[path]
    names = [match.group(2) for match in _BLOCK.finditer(page)]
    where = path.relative_to(ROOT)
    if sorted(names) != sorted(generators):
        raise ReferenceError(f"{where} must hold the generated blocks {sorted(generators)}, has {names}")
    if generated(page, generators) != page:
        raise ReferenceError(
            f"{where} differs from what the code generates: run `{WRITE_COMMAND}` and commit it"
        )


def include(markdown: str) -> str:
    """Each ``<!-- include: FILE -->`` replaced by that root file, its H1 left out."""

    def replace(match: re.Match[str]) -> str:
        text = (ROOT / match.group(1)).read_text()
        return re.sub(r"\A# .*\n", "", text)

    return _INCLUDE.sub(replace, markdown)


def on_page_markdown(markdown: str, page: Any, **_: Any) -> str:
    """MkDocs event: check the configuration page, fill the changelog page."""
    from mkdocs.exceptions import PluginError

    try:
        path = ROOT / "docs" / page.file.src_uri
        if path in PAGES:
            check(path, markdown)
        return include(markdown)
    except ReferenceError as exc:
        raise PluginError(str(exc)) from exc


def main(argv: list[str]) -> int:
    if argv == ["--write"]:
        for path, generators in PAGES.items():
            path.write_text(generated(path.read_text(), generators))
        return 0
    if argv == ["--check"]:
        try:
            for path in PAGES:
                check(path, path.read_text())
        except ReferenceError as exc:
            print(exc, file=sys.stderr)
            return 1
        return 0
    print(f"usage: {Path(__file__).name} --write | --check", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
