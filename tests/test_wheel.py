"""The package as a user installs it: a wheel built from the repository's files, in a fresh virtual environment with
only its declared dependencies, runs both command lines and imports every module and every public name."""

from __future__ import annotations

import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest


ROOT = Path(__file__).resolve().parents[1]

_IMPORT_EVERYTHING = """
import importlib, pkgutil, warnings
import optimum_layerwise

names = [getattr(optimum_layerwise, name) for name in optimum_layerwise.__all__]
modules = 0
for module in pkgutil.walk_packages(optimum_layerwise.__path__, "optimum_layerwise."):
    if module.name.endswith("__main__"):
        continue
    imported = importlib.import_module(module.name)
    names += [getattr(imported, name) for name in getattr(imported, "__all__", ())]
    modules += 1
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    from optimum_layerwise import export  # a module moved to formats/export: a one-release alias that warns
assert export.export_checkpoint and "formats.export" in str(caught[0].message)
print(modules, len(names))
"""


def tracked_files(folder: Path) -> None:
    """Copy the files git tracks (what a clean checkout has, no build folders) into `folder`."""
    listed = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True)
    for name in listed.stdout.split("\0"):
        if name and (ROOT / name).is_file():
            (folder / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, folder / name)


def run(*command: str | Path, cwd: Path) -> str:
    result = subprocess.run([str(part) for part in command], cwd=cwd, capture_output=True, text=True)
    assert result.returncode == 0, f"{command}:\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    return result.stdout


@pytest.mark.slow
def test_wheel_installs_in_a_fresh_venv_and_every_public_name_imports(tmp_path):
    checkout, dist, environment = tmp_path / "checkout", tmp_path / "dist", tmp_path / "venv"
    tracked_files(checkout)
    run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q", "-w", dist, ".", cwd=checkout)
    (wheel,) = dist.glob("optimum_layerwise-*.whl")
    venv.EnvBuilder(with_pip=True).create(environment)
    python, scripts = environment / "bin" / "python", environment / "bin"
    torch = f"torch=={__import__('torch').__version__.split('+')[0]}"  # the CPU build this machine installs offline
    run(python, "-m", "pip", "install", "-q", "--disable-pip-version-check", wheel, torch, cwd=tmp_path)

    modules, names = map(int, run(python, "-c", _IMPORT_EVERYTHING, cwd=tmp_path).split())
    assert modules >= 100 and names >= 100, (modules, names)
    for command in ([scripts / "optimum-layerwise", "--help"], [scripts / "optimum-cli", "layerwise", "--help"]):
        usage = run(*command, cwd=tmp_path)
        assert "{score,quantize,slice,eval,sweep,lm-eval,tasks,export,inspect}" in usage
