"""How well a source tree keeps the layered architecture of DESIGN.md §1, read with `ast` (a dev tool, stdlib only).
`tools/architecture_report.py` prints it as a table (and traces one request); `tests/test_architecture.py` checks it.

The analysis reads every module under `SRC_DIR/optimum_layerwise` and `SRC_DIR/optimum` with `ast`: flat
modules, files over 400 lines, imports that point up or sideways between packages (function-level and
`TYPE_CHECKING` imports count), import cycles, torch-like imports in the pure packages, and function-level imports
of the package's own modules. `importlib.import_module` strings (lazy attribute tables) are not followed.

Floors come from the package a module lives in. The flat layout from before the stage packages is measured with the
alias table of `utils/moved.py` (old module -> new home) plus the three flat modules whose names became packages.
"""

from __future__ import annotations

import ast
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from pathlib import Path


PACKAGE = "optimum_layerwise"
NAMESPACE = "optimum"  # the optimum-cli registration module: part of the cli package
ROOT = Path(__file__).resolve().parents[1]
TOP = "<top>"  # optimum_layerwise/__init__.py and __main__.py, above every floor
# DESIGN.md §1, lowest first: a package imports only from lower floors (two on one floor never import each other)
FLOOR_ORDER = ("utils", "data", "plan", "model", "quantize slicing", "importance formats", "pipelines", "hf")
FLOOR_ORDER += ("evaluation", "cli", TOP)
FLOORS: dict[str, int] = {package: floor for floor, names in enumerate(FLOOR_ORDER) for package in names.split()}
# flat modules of the old layout whose name is a package now (so `utils/moved.py` cannot alias them): the file each
# became in the commit that made the stage packages
FLAT_RENAMES: dict[str, str] = {"plan": "plan.quantization_plan", "quantize": "pipelines.quantize", "cli": "cli.main"}
MAX_LINES = 400
PURE_PACKAGES = ("plan", "utils")
FORBIDDEN_IN_PURE = tuple(
    "torch transformers accelerate safetensors optimum.quanto gptqmodel auto_gptq peft huggingface_hub"
    " compressed_tensors gguf lm_eval datasets matplotlib".split()
)
# the one allowed import circle: deferred registration (new-layout locations, relative to the package)
ALLOWED_CYCLE_EDGES = frozenset({("hf.lazy_registration", "hf.registration")})


@dataclass(frozen=True)
class Module:
    """One source file: its dotted name, whether it is a package's `__init__.py`, its path and length."""

    name: str
    path: Path
    is_package: bool
    lines: int


@dataclass(frozen=True)
class Import:
    """One module named by one import statement; `internal` when it is a module of the analysed tree."""

    source: str
    target: str
    line: int
    internal: bool
    function_level: bool = False
    type_checking: bool = False

    @property
    def where(self) -> str:
        kind = "function-level" if self.function_level else "TYPE_CHECKING" if self.type_checking else "top-level"
        return f"line {self.line}, {kind}"


@dataclass
class Layout:
    """The modules of one source tree and where each would live in the stage-package layout."""

    src: Path
    modules: dict[str, Module]
    moved: dict[str, str] = field(default_factory=dict)

    def location(self, name: str) -> str:
        """New-layout path of a module relative to the package (`hf.config`), `cli` for the optimum namespace, or
        [`TOP`] for the package's `__init__`/`__main__`."""
        if name == NAMESPACE or name.startswith(NAMESPACE + "."):
            return "cli"
        if name in (PACKAGE, f"{PACKAGE}.__main__"):
            return TOP
        relative = name.removeprefix(PACKAGE + ".")
        module = self.modules.get(name)
        if relative in self.moved:
            return self.moved[relative]
        if relative in FLAT_RENAMES and not (module and module.is_package):
            return FLAT_RENAMES[relative]
        return relative

    def package(self, name: str) -> str:
        return self.location(name).split(".")[0]

    def floor(self, name: str) -> int | None:
        return FLOORS.get(self.package(name))

    def label(self, name: str) -> str:
        floor = self.floor(name)
        return f"{short(name)} [{self.package(name)}={'?' if floor is None else floor}]"


def short(name: str) -> str:
    """A module name without the package prefix (`hf.config`)."""
    return name.removeprefix(PACKAGE + ".") if name != PACKAGE else PACKAGE


def read_table(name: str, *sources: Path) -> dict:
    """The dict literal `name` of the first `utils/moved.py` found under `sources` (read with `ast`, never run)."""
    for src in sources:
        path = src / PACKAGE / "utils" / "moved.py"
        if not path.exists():
            continue
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.AnnAssign | ast.Assign):
                targets = [node.target] if isinstance(node, ast.AnnAssign) else node.targets
                if any(isinstance(t, ast.Name) and t.id == name for t in targets):
                    return ast.literal_eval(node.value)
    return {}


def find_modules(src: Path) -> dict[str, Module]:
    """Every `.py` file of the package and of the optimum namespace under `src`, by dotted module name."""
    modules = {}
    for top in (PACKAGE, NAMESPACE):
        for path in sorted((src / top).rglob("*.py")):
            parts = list(path.relative_to(src).with_suffix("").parts)
            if "__pycache__" in parts:
                continue
            is_package = parts[-1] == "__init__"
            name = ".".join(parts[:-1] if is_package else parts)
            modules[name] = Module(name, path, is_package, len(path.read_text().splitlines()))
    return modules


def load_layout(src: Path | str) -> Layout:
    """The modules of `src` with the alias table (from `src` itself, else from this repository's tree)."""
    src = Path(src).resolve()
    moved = read_table("MOVED_MODULES", src, ROOT / "src")
    return Layout(src, find_modules(src), moved)


def resolve_from(module: Module, level: int, name: str | None) -> str:
    """Absolute module name of `from <level dots><name> import ...` written in `module`."""
    if level == 0:
        return name or ""
    base = module.name.split(".") if module.is_package else module.name.split(".")[:-1]
    base = base[: len(base) - (level - 1)]
    return ".".join(base + ([name] if name else []))


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


class _ImportVisitor(ast.NodeVisitor):
    """Collects the imports of one module, remembering whether each sits in a function or a TYPE_CHECKING block."""

    def __init__(self, module: Module, known: Collection[str]):
        self.module, self.modules = module, known
        self.imports: list[Import] = []
        self.function_depth = 0
        self.type_checking_depth = 0

    def _add(self, target: str, line: int) -> None:
        internal = target in self.modules or target.split(".")[0] == PACKAGE
        self.imports.append(
            Import(self.module.name, target, line, internal, self.function_depth > 0, self.type_checking_depth > 0)
        )

    def _visit_function(self, node: ast.AST) -> None:
        self.function_depth += 1
        self.generic_visit(node)
        self.function_depth -= 1

    visit_FunctionDef = visit_AsyncFunctionDef = visit_Lambda = _visit_function

    def visit_If(self, node: ast.If) -> None:
        if not _is_type_checking(node.test):
            self.generic_visit(node)
            return
        self.type_checking_depth += 1
        for child in node.body:
            self.visit(child)
        self.type_checking_depth -= 1
        for child in node.orelse:
            self.visit(child)

    def visit_Import(self, node: ast.Import) -> None:
        for alias in node.names:
            parts = alias.name.split(".")
            prefixes = [".".join(parts[:i]) for i in range(len(parts), 0, -1)]
            self._add(next((p for p in prefixes if p in self.modules), alias.name), node.lineno)

    def visit_ImportFrom(self, node: ast.ImportFrom) -> None:
        base = resolve_from(self.module, node.level, node.module)
        names_the_base = False
        for alias in node.names:
            submodule = f"{base}.{alias.name}"
            if submodule in self.modules or (is_forbidden(submodule) and not is_forbidden(base)):
                self._add(submodule, node.lineno)  # also `from optimum import quanto`: optimum.quanto
            else:
                names_the_base = True
        if names_the_base:
            self._add(base, node.lineno)


def module_imports(module: Module, known: Collection[str]) -> list[Import]:
    """The imports of one module (one entry per imported module per statement); `known` names the tree's modules
    (and the old paths `utils/moved.py` serves, so that `from .. import config` names the alias module)."""
    visitor = _ImportVisitor(module, known)
    visitor.visit(ast.parse(module.path.read_text(), str(module.path)))
    return visitor.imports


def all_imports(layout: Layout) -> list[Import]:
    known = set(layout.modules) | {f"{PACKAGE}.{old}" for old in layout.moved}
    return [found for module in layout.modules.values() for found in module_imports(module, known)]


def flat_modules(layout: Layout) -> list[str]:
    """Modules directly under the package, other than `__init__`, `__main__` and alias files of moved modules."""
    flat = []
    for name, module in layout.modules.items():
        relative = name.removeprefix(PACKAGE + ".")
        if module.is_package or name.count(".") != 1 or not name.startswith(PACKAGE + ".") or relative == "__main__":
            continue
        is_alias = relative in layout.moved and f"{PACKAGE}.{layout.moved[relative]}" in layout.modules
        if not is_alias:
            flat.append(name)
    return flat


def unplaced_modules(layout: Layout) -> list[str]:
    """Modules whose package has no floor (a package the design does not know)."""
    return [name for name in layout.modules if layout.floor(name) is None]


def long_files(layout: Layout, limit: int = MAX_LINES) -> list[Module]:
    """Files over `limit` lines, longest first."""
    return sorted((m for m in layout.modules.values() if m.lines > limit), key=lambda m: -m.lines)


def layering_violations(layout: Layout, imports: Iterable[Import]) -> list[Import]:
    """Imports between two packages that do not point to a lower floor (upward or sideways)."""
    found = []
    for imp in imports:
        if not imp.internal or layout.package(imp.source) == layout.package(imp.target):
            continue
        source, target = layout.floor(imp.source), layout.floor(imp.target)
        if source is not None and target is not None and target >= source:
            found.append(imp)
    return found


def is_forbidden(name: str) -> bool:
    """Whether `name` is (a module of) a library that `plan/` and `utils/` must not import."""
    return any(name == lib or name.startswith(lib + ".") for lib in FORBIDDEN_IN_PURE)


def pure_violations(layout: Layout, imports: Iterable[Import]) -> list[Import]:
    """Imports of torch, transformers and backend libraries in the packages that must stay free of them."""
    return [
        imp
        for imp in imports
        if not imp.internal and layout.package(imp.source) in PURE_PACKAGES and is_forbidden(imp.target)
    ]


def import_graph(layout: Layout, imports: Iterable[Import]) -> dict[str, set[str]]:
    """Module -> the modules of the tree it imports (every kind of import)."""
    graph: dict[str, set[str]] = {name: set() for name in layout.modules}
    for imp in imports:
        target = imp.target
        if target not in layout.modules and target.removeprefix(PACKAGE + ".") in layout.moved:
            target = f"{PACKAGE}.{layout.moved[target.removeprefix(PACKAGE + '.')]}"  # an old path: its new module
        if imp.internal and target in layout.modules:
            graph[imp.source].add(target)
    return graph


def reachable(graph: dict[str, set[str]], start: str) -> set[str]:
    """The modules `start` imports directly or through others."""
    seen: set[str] = set()
    todo = [start]
    while todo:
        for child in graph.get(todo.pop(), ()):
            if child not in seen:
                seen.add(child)
                todo.append(child)
    return seen


def strongly_connected(graph: dict[str, set[str]]) -> list[list[str]]:
    """Import cycles: the strongly connected components with more than one module or a self-import."""
    reach = {node: reachable(graph, node) for node in graph}
    components = {frozenset(m for m in reach[node] if node in reach[m]) for node in graph if node in reach[node]}
    return sorted(sorted(component) for component in components)


def forbidden_cycles(layout: Layout, graph: dict[str, set[str]]) -> list[list[str]]:
    """Cycles that remain once the registration loop's deferred edge is taken out of the graph."""
    pruned = {
        source: {t for t in targets if (layout.location(source), layout.location(t)) not in ALLOWED_CYCLE_EDGES}
        for source, targets in graph.items()
    }
    return strongly_connected(pruned)


def function_level_imports(imports: Iterable[Import]) -> int:
    """Import statements inside functions that import the tree's own modules."""
    return len({(imp.source, imp.line) for imp in imports if imp.internal and imp.function_level})


@dataclass
class Report:
    """Everything the static checks found in one tree."""

    layout: Layout
    flat: list[str]
    unplaced: list[str]
    long: list[Module]
    layering: list[Import]
    pure: list[Import]
    cycles: list[list[str]]
    bad_cycles: list[list[str]]
    function_level: int


def analyze(src: Path | str) -> Report:
    """Run every static check on the tree under `src`."""
    layout = load_layout(src)
    imports = all_imports(layout)
    graph = import_graph(layout, imports)
    return Report(
        layout,
        flat_modules(layout),
        unplaced_modules(layout),
        long_files(layout),
        layering_violations(layout, imports),
        pure_violations(layout, imports),
        strongly_connected(graph),
        forbidden_cycles(layout, graph),
        function_level_imports(imports),
    )


def describe_import(layout: Layout, imp: Import) -> str:
    """`plan.x [plan=2] -> hf.config [hf=7] (line 1, top-level)`."""
    return f"{layout.label(imp.source)} -> {layout.label(imp.target)} ({imp.where})"


def describe_cycle(cycle: list[str]) -> str:
    return " <-> ".join(short(name) for name in cycle)


def offenders(report: Report) -> dict[str, list[str]]:
    """One readable line per offender, by rule."""
    layout = report.layout
    allowed = [c for c in report.cycles if not any(set(bad) <= set(c) for bad in report.bad_cycles)]
    return {
        "flat modules": [short(name) for name in report.flat],
        "modules outside every floor": [layout.label(name) for name in report.unplaced],
        f"files over {MAX_LINES} lines": [f"{m.path.relative_to(layout.src)} ({m.lines} lines)" for m in report.long],
        "upward or sideways imports": [describe_import(layout, imp) for imp in report.layering],
        "torch/backend imports in plan/ or utils/": [
            f"{short(imp.source)} imports {imp.target} ({imp.where})" for imp in report.pure
        ],
        "import cycles (not allowed)": [describe_cycle(c) for c in report.bad_cycles],
        "import cycles (allowed: registration loop)": [describe_cycle(c) for c in allowed],
    }
