"""The layered architecture of DESIGN.md §1, checked with `ast` on every import of `src/optimum_layerwise`.

Each test names its offenders. The analysis lives in `tools/architecture.py` (a dev tool outside the installed
package), loaded here from its path; `python tools/architecture_report.py` prints the same findings as a table.
"""

from __future__ import annotations

import importlib.util
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType

import pytest


ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
BLOCKED = ("torch", "transformers", "safetensors", "accelerate")


def _load_tool() -> ModuleType:
    spec = importlib.util.spec_from_file_location("architecture_tool", ROOT / "tools" / "architecture.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up while the class is built
    spec.loader.exec_module(module)
    return module


arch = _load_tool()


@pytest.fixture(scope="module")
def report():
    return arch.analyze(SRC)


def _fail_listing(rule: str, items: list[str]) -> None:
    if items:
        pytest.fail(f"{len(items)} {rule}:\n" + "\n".join(f"  {item}" for item in items), pytrace=False)


def test_no_flat_modules(report):
    _fail_listing("flat modules (move them into a stage package)", arch.offenders(report)["flat modules"])


def test_every_module_sits_on_a_floor(report):
    _fail_listing(
        "modules in a package DESIGN.md §1 gives no floor", arch.offenders(report)["modules outside every floor"]
    )


def test_files_stay_under_the_line_limit(report):
    _fail_listing(f"files over {arch.MAX_LINES} lines", arch.offenders(report)[f"files over {arch.MAX_LINES} lines"])


def test_imports_point_down_the_floors(report):
    _fail_listing("upward or sideways imports", arch.offenders(report)["upward or sideways imports"])


def test_no_import_cycle_but_the_registration_loop(report):
    _fail_listing("import cycles besides the registration loop", arch.offenders(report)["import cycles (not allowed)"])


def test_plan_and_utils_import_no_torch_or_backend(report):
    _fail_listing(
        "torch/backend imports in plan/ or utils/", arch.offenders(report)["torch/backend imports in plan/ or utils/"]
    )


def test_the_registration_loop_is_found_and_allowed(report):
    allowed = arch.offenders(report)["import cycles (allowed: registration loop)"]
    assert any("hf.registration" in cycle and "hf.lazy_registration" in cycle for cycle in allowed), report.cycles


# ---------------------------------------------------------------------------------------------------------------------
# the checker itself, on planted trees


def _plant(root: Path, files: dict[str, str]) -> Path:
    """Write `files` (paths relative to `root/src`) and the package `__init__.py` files they need; return src."""
    src = root / "src"
    for relative, text in files.items():
        path = src / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
        for parent in path.parents:
            if parent == src:
                break
            (parent / "__init__.py").touch()
    return src


def test_a_planted_upward_import_is_reported(tmp_path):
    """A copy of the real plan/ and hf/ packages plus `plan/x.py` importing `hf.config`: the check names it."""
    src = tmp_path / "src"
    for package in ("plan", "hf", "utils"):
        shutil.copytree(SRC / "optimum_layerwise" / package, src / "optimum_layerwise" / package)
    (src / "optimum_layerwise" / "__init__.py").touch()
    (src / "optimum_layerwise" / "plan" / "x.py").write_text("from ..hf import config\n")
    with pytest.raises(pytest.fail.Exception) as failure:
        test_imports_point_down_the_floors(arch.analyze(src))
    assert "plan.x [plan=2] -> hf.config [hf=7] (line 1, top-level)" in str(failure.value)


@pytest.mark.parametrize(
    "planted, expected",
    [
        ("def f():\n    from ..formats import card\n", "quantize.x [quantize=4] -> formats.card [formats=5]"),
        ("from ..slicing.rotation import rotate\n", "quantize.x [quantize=4] -> slicing.rotation [slicing=4]"),
        ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import optimum_layerwise.hf.config\n", "hf.config"),
        ("from .. import pipelines\n", "quantize.x [quantize=4] -> pipelines [pipelines=6]"),
        ("from .. import config\n", "config [hf=7]"),  # an old path served by utils/moved.py
    ],
    ids=["function-level", "sideways", "type-checking", "from-dots-import-package", "moved-alias"],
)
def test_every_kind_of_upward_import_is_reported(tmp_path, planted, expected):
    src = _plant(
        tmp_path,
        {
            "optimum_layerwise/quantize/backends/x.py": "",
            "optimum_layerwise/formats/card.py": "",
            "optimum_layerwise/slicing/rotation.py": "rotate = None\n",
            "optimum_layerwise/hf/config.py": "",
            "optimum_layerwise/pipelines/__init__.py": "",
        },
    )
    (src / "optimum_layerwise" / "quantize" / "x.py").write_text(planted)
    found = arch.offenders(arch.analyze(src))["upward or sideways imports"]
    assert any(item.startswith("quantize.x") and expected in item for item in found), found


def test_relative_imports_resolve_to_submodules(tmp_path):
    src = _plant(
        tmp_path,
        {
            "optimum_layerwise/model/a.py": "from . import b\nfrom .sub import c, NAME\n",
            "optimum_layerwise/model/b.py": "",
            "optimum_layerwise/model/sub/c.py": "",
        },
    )
    layout = arch.load_layout(src)
    targets = {imp.target for imp in arch.module_imports(layout.modules["optimum_layerwise.model.a"], layout.modules)}
    assert targets == {"optimum_layerwise.model.b", "optimum_layerwise.model.sub.c", "optimum_layerwise.model.sub"}


def test_planted_offenders_of_the_other_rules_are_reported(tmp_path):
    src = _plant(
        tmp_path,
        {
            "optimum_layerwise/stray.py": "\n" * (arch.MAX_LINES + 1),
            "optimum_layerwise/utils/u.py": "def f():\n    from safetensors.torch import load_file\n",
            "optimum_layerwise/plan/p.py": "from optimum.quanto import qint4\nfrom . import q\n",
            "optimum_layerwise/plan/q.py": "from .p import qint4\n",
            "optimum_layerwise/hf/lazy_registration.py": "def f():\n    from .registration import register\n",
            "optimum_layerwise/hf/registration.py": "from .lazy_registration import f\n",
        },
    )
    found = arch.offenders(arch.analyze(src))
    assert found["flat modules"] == ["stray"]
    assert found["modules outside every floor"] == ["stray [stray=?]"]
    assert found[f"files over {arch.MAX_LINES} lines"] == [f"optimum_layerwise/stray.py ({arch.MAX_LINES + 1} lines)"]
    assert found["torch/backend imports in plan/ or utils/"] == [
        "plan.p imports optimum.quanto (line 1, top-level)",
        "utils.u imports safetensors.torch (line 2, function-level)",
    ]
    assert found["import cycles (not allowed)"] == ["plan.p <-> plan.q"]
    assert found["import cycles (allowed: registration loop)"] == ["hf.lazy_registration <-> hf.registration"]


def test_the_flat_layout_gets_floors_from_the_alias_table(tmp_path):
    """Old flat modules take the floor of the package they moved to (`config` -> hf, `plan` -> plan)."""
    src = _plant(tmp_path, {"optimum_layerwise/plan.py": "from .config import X\n", "optimum_layerwise/config.py": ""})
    found = arch.offenders(arch.analyze(src))
    assert found["flat modules"] == ["config", "plan"]
    assert found["upward or sideways imports"] == ["plan [plan=2] -> config [hf=7] (line 1, top-level)"]


# ---------------------------------------------------------------------------------------------------------------------
# the pure packages import without torch


def _pure_modules(package: str) -> list[str]:
    layout = arch.load_layout(SRC)
    return sorted(name for name in layout.modules if name.startswith(f"optimum_layerwise.{package}"))


@pytest.mark.parametrize("package", arch.PURE_PACKAGES)
def test_pure_package_imports_with_torch_blocked(package):
    modules = _pure_modules(package)
    code = "\n".join(
        [
            "import importlib, sys",
            *(f"sys.modules[{name!r}] = None" for name in BLOCKED),
            f"import optimum_layerwise.{package}",
            f"for name in {modules!r}:",
            "    importlib.import_module(name)",
            f"assert not [name for name in {BLOCKED!r} if sys.modules.get(name) is not None]",
        ]
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert done.returncode == 0, f"optimum_layerwise.{package} needs a blocked library:\n{done.stderr[-2000:]}"
