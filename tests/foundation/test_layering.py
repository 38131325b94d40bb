"""The layering of docs/architecture.md, checked on the source with `ast`.

Every import counts, those inside functions and under TYPE_CHECKING included (rule 3
alone passes over the latter: an annotation names a class, it queries nothing). The rules:

1. Packages point one way: each top-level package imports only the ones its row of
   `ALLOWED` names; the composition roots (`governance/cli/`, and `governance/api/app.py`
   for the one line that mounts the UI) may import across.
2. The vocabulary at the bottom of `governance` (errors, principal, roles, metrics,
   schemas) imports no web framework and nothing of the project but itself; the HTTP
   layer (`governance.api`) is imported only by the routes (`views.py`, `governance/api/`),
   the web UI's request plumbing and the composition roots, never by a domain module.
3. A room never imports another room's ORM models: rooms talk through service functions.
   The rooms are the domain packages of `governance` and the top-level packages; the gate's
   and the monitor's tables are declared in `governance` (one metadata) and belong to the
   evaluators and the monitors as well (`CO_OWNERS`).

Imports inside functions are allowed only where they defer a heavy dependency (rule 4):
the imported module is heavy itself or reaches one through its top-level imports.
No two rooms depend on each other (rule 5): the routes (`views.py`) are the edge and may
call any room, but below them the rooms form layers (registry under deployments, say).
"""

from __future__ import annotations

import ast
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("aligner", "governance", "evaluators", "monitors", "serving", "dashboards")

# Rule 1: which top-level packages each one may import (docs/architecture.md, "Packages and their direction").
ALLOWED: dict[str, set[str]] = {
    "aligner": {"aligner"},
    "governance": {"aligner", "governance"},
    "evaluators": {"aligner", "governance", "evaluators"},
    "monitors": {"aligner", "governance", "evaluators", "monitors"},
    "serving": {"aligner", "governance", "serving"},
    "dashboards": {"aligner", "governance", "dashboards"},
}
COMPOSITION_ROOTS = ("governance/cli/",)
UI_MOUNT = ("governance/api/app.py", "dashboards")  # the one line that mounts the web UI

# Rule 2.
VOCABULARY = {"governance.errors", "governance.principal", "governance.roles", "governance.metrics",
              "governance.schemas"}
WEB_FRAMEWORKS = {"fastapi", "starlette", "uvicorn", "jinja2"}
HTTP_LAYER = "governance.api"
HTTP_LAYER_USERS = ("governance/api/", "governance/cli/", "dashboards/deps.py")  # and every views.py

# Rule 3.
ROOMS_WITH_TABLES = ("alerts", "audit", "auth", "deployments", "gates", "monitoring", "outbox", "outputs", "registry")
CO_OWNERS = {"gates": {"evaluators"}, "monitoring": {"monitors"}}
MODEL_AGGREGATOR = "governance/models.py"  # every table in one metadata, for migrations

# Rule 4: what an import inside a function may defer.
# (scipy and pandas: over a second of CPU to import, which every `govern` command would pay)
HEAVY = {"torch", "transformers", "evidently", "great_expectations", "safetensors", "gguf", "plotly", "weasyprint",
         "playwright", "vaderSentiment", "scipy", "pandas", "sklearn", "pypdf"}


@dataclass(frozen=True)
class Imp:
    path: str  # relative to the repository
    line: int
    module: str  # absolute dotted name
    names: tuple[str, ...]  # for `from m import a, b`; empty for `import m`
    in_function: bool
    type_only: bool = False  # under `if TYPE_CHECKING:`


def _module_name(rel: str) -> str:
    parts = rel[:-3].split("/")
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(rel: str, source: str, modules: frozenset[str] = frozenset()) -> Iterator[Imp]:
    tree = ast.parse(source, rel)
    funcs = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]
    inner = {id(n) for f in funcs for n in ast.walk(f) if isinstance(n, ast.Import | ast.ImportFrom)}
    guarded = {id(n) for g in ast.walk(tree) if isinstance(g, ast.If) and "TYPE_CHECKING" in ast.unparse(g.test)
               for n in ast.walk(g) if isinstance(n, ast.Import | ast.ImportFrom)}
    package = _module_name(rel).split(".")
    if not rel.endswith("__init__.py"):
        package = package[:-1]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield Imp(rel, node.lineno, a.name, (), id(node) in inner, id(node) in guarded)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[: len(package) - node.level + 1] + ([base] if base else []))
            names = tuple(a.name for a in node.names)
            yield Imp(rel, node.lineno, base, names, id(node) in inner, id(node) in guarded)
            # `from governance.registry import models` imports a module too
            for n in names:
                if f"{base}.{n}" in modules:
                    yield Imp(rel, node.lineno, f"{base}.{n}", (), id(node) in inner, id(node) in guarded)


def source_files(root: Path = ROOT, packages: Iterable[str] = PACKAGES) -> dict[str, str]:
    return {str(p.relative_to(root)): p.read_text(encoding="utf-8")
            for pkg in packages for p in sorted((root / pkg).rglob("*.py"))}


def all_imports(files: dict[str, str]) -> list[Imp]:
    modules = frozenset(_module_name(rel) for rel in files)
    return [imp for rel, src in files.items() for imp in _imports(rel, src, modules)]


def _top(module: str) -> str:
    return module.split(".")[0]


def _is_views(rel: str) -> bool:
    return rel.endswith("/views.py")


def package_direction(imps: Iterable[Imp]) -> list[str]:
    bad = []
    for i in imps:
        src, dst = _top(_module_name(i.path)), _top(i.module)
        if dst not in PACKAGES or dst in ALLOWED[src]:
            continue
        if i.path.startswith(COMPOSITION_ROOTS) or (i.path, dst) == UI_MOUNT:
            continue
        bad.append(f"{i.path}:{i.line} {src} imports {i.module}")
    return bad


def vocabulary_and_http(imps: Iterable[Imp]) -> list[str]:
    bad = []
    for i in imps:
        mod = _module_name(i.path)
        if mod in VOCABULARY and (_top(i.module) in WEB_FRAMEWORKS
                                  or (_top(i.module) in PACKAGES and i.module not in VOCABULARY)):
            bad.append(f"{i.path}:{i.line} vocabulary module {mod} imports {i.module}")
        if (i.module == HTTP_LAYER or i.module.startswith(HTTP_LAYER + ".")) and not (
                i.path.startswith(HTTP_LAYER_USERS) or _is_views(i.path)):
            bad.append(f"{i.path}:{i.line} {mod} imports the HTTP layer ({i.module})")
    return bad


def _room(rel: str) -> str | None:
    parts = rel.split("/")
    if parts[0] != "governance":
        return parts[0]
    if len(parts) > 2 and parts[1] in ROOMS_WITH_TABLES:
        return parts[1]
    return None  # governance's shared modules, the HTTP layer and the CLI belong to no room


@cache
def orm_classes(root: Path = ROOT) -> dict[str, frozenset[str]]:
    """room -> the names of its ORM classes (classes deriving from `Base` in its models.py)."""
    out = {}
    for room in ROOMS_WITH_TABLES:
        tree = ast.parse((root / "governance" / room / "models.py").read_text(encoding="utf-8"))
        out[room] = frozenset(n.name for n in tree.body if isinstance(n, ast.ClassDef)
                              and any(isinstance(b, ast.Name) and b.id == "Base" for b in n.bases))
    return out


def room_models(imps: Iterable[Imp], root: Path = ROOT) -> list[str]:
    classes = orm_classes(root)
    bad = []
    for i in imps:
        parts = i.module.split(".")
        if len(parts) != 3 or parts[0] != "governance" or parts[1] not in classes or parts[2] != "models":
            continue
        if i.type_only:  # an annotation names a class; it queries nothing
            continue
        owner = parts[1]
        room = _room(i.path)
        if room is None or i.path == MODEL_AGGREGATOR or i.path.startswith(COMPOSITION_ROOTS):
            continue
        if room == owner or room in CO_OWNERS.get(owner, set()):
            continue
        taken = sorted(set(i.names) & classes[owner]) if i.names else ["(the module)"]
        if taken:
            bad.append(f"{i.path}:{i.line} room {room} imports {owner}'s ORM models {', '.join(taken)}")
    return bad


def _imported_room(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] == "governance":
        return parts[1] if len(parts) > 1 and parts[1] in ROOMS_WITH_TABLES else None
    return parts[0] if parts[0] in PACKAGES else None


def room_cycles(imps: Iterable[Imp]) -> list[str]:
    where: dict[tuple[str, str], str] = {}
    for i in imps:
        room, other = _room(i.path), _imported_room(i.module)
        if i.type_only or _is_views(i.path) or room is None or other is None or room == other:
            continue
        where.setdefault((room, other), f"{i.path}:{i.line}")
    return [f"rooms {a} and {b} import each other ({where[(a, b)]} and {where[(b, a)]})"
            for a, b in sorted(where) if a < b and (b, a) in where]


def _heavy_modules(files: dict[str, str]) -> set[str]:
    """Project modules that import a heavy dependency at their top level, directly or through others."""
    modules = frozenset(_module_name(rel) for rel in files)
    top: dict[str, set[str]] = {}
    for rel, src in files.items():
        top[_module_name(rel)] = {i.module for i in _imports(rel, src, modules) if not i.in_function}
    # importing a.b.c runs a/__init__ and a/b/__init__ first
    for m in list(top):
        parts = m.split(".")
        top[m] |= {".".join(parts[:k]) for k in range(1, len(parts))}
    heavy = {m for m, deps in top.items() if any(_top(d) in HEAVY for d in deps)}
    changed = True
    while changed:
        changed = False
        for m, deps in top.items():
            if m not in heavy and deps & heavy:
                heavy.add(m)
                changed = True
    return heavy


def deferred_imports(files: dict[str, str], imps: Iterable[Imp]) -> list[str]:
    heavy = _heavy_modules(files)
    bad = []
    for i in imps:
        if not i.in_function or _top(i.module) not in PACKAGES or i.module in heavy:
            continue
        if any(f"{i.module}.{n}" in heavy for n in i.names):
            continue
        bad.append(f"{i.path}:{i.line} imports {i.module} inside a function, which defers nothing heavy")
    return bad


def check(root: Path = ROOT) -> list[str]:
    files = source_files(root)
    imps = all_imports(files)
    return (package_direction(imps) + vocabulary_and_http(imps) + room_models(imps, root)
            + deferred_imports(files, imps) + room_cycles(imps))


def test_the_tree_follows_the_layering() -> None:
    problems = check()
    assert not problems, "layering violations (docs/architecture.md):\n" + "\n".join(problems)


def _tree_with(tmp_path: Path, rel: str, source: str) -> Path:
    """A copy of the source packages with one file replaced or added."""
    for r, src in source_files().items():
        (tmp_path / r).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / r).write_text(src, encoding="utf-8")
    (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
    (tmp_path / rel).write_text(source, encoding="utf-8")
    return tmp_path


def test_a_wrong_direction_inside_a_function_is_caught(tmp_path: Path) -> None:
    src = (ROOT / "dashboards/pages/releases.py").read_text(encoding="utf-8")
    src += "\n\ndef _sneaky() -> None:\n    from evaluators.runner import plan_rows  # noqa: F401\n"
    problems = check(_tree_with(tmp_path, "dashboards/pages/releases.py", src))
    assert any("dashboards/pages/releases.py" in p and "dashboards imports evaluators.runner" in p for p in problems)


def test_governance_importing_a_worker_package_is_caught(tmp_path: Path) -> None:
    problems = check(_tree_with(tmp_path, "governance/registry/extra.py", "import monitors.tasks\n"))
    assert problems == ["governance/registry/extra.py:1 governance imports monitors.tasks"]


def test_a_domain_module_importing_the_http_layer_is_caught(tmp_path: Path) -> None:
    problems = check(_tree_with(tmp_path, "governance/alerts/extra.py", "from governance.api.deps import role\n"))
    assert any("governance/alerts/extra.py:1" in p and "HTTP layer" in p for p in problems)


def test_the_vocabulary_imports_no_web_framework(tmp_path: Path) -> None:
    src = (ROOT / "governance/errors.py").read_text(encoding="utf-8") + "\nfrom fastapi import HTTPException\n"
    problems = check(_tree_with(tmp_path, "governance/errors.py", src))
    assert any("vocabulary module governance.errors imports fastapi" in p for p in problems)


def test_another_rooms_orm_model_is_caught_but_its_enum_is_not(tmp_path: Path) -> None:
    src = "from governance.registry.models import TokenVersion, VersionState\n"
    problems = check(_tree_with(tmp_path, "governance/alerts/extra.py", src))
    assert problems == ["governance/alerts/extra.py:1 room alerts imports registry's ORM models TokenVersion"]


def test_an_import_inside_a_function_must_defer_something_heavy(tmp_path: Path) -> None:
    src = ("def f() -> None:\n    from governance.errors import NotFound  # noqa: F401\n\n\n"
           "def g() -> None:\n    from aligner.model import load_base  # noqa: F401\n")
    problems = check(_tree_with(tmp_path, "governance/registry/extra.py", src))
    assert problems == ["governance/registry/extra.py:2 imports governance.errors inside a function, "
                        "which defers nothing heavy"]


def test_two_rooms_importing_each_other_are_caught(tmp_path: Path) -> None:
    problems = check(_tree_with(tmp_path, "governance/registry/extra.py",
                                "from governance.deployments import service as deployments  # noqa: F401\n"))
    assert len(problems) == 1 and problems[0].startswith("rooms deployments and registry import each other")
    assert "governance/registry/extra.py:1" in problems[0]
