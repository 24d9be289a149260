"""The README and docs/ say what runs: every Python block and every command of the walkthroughs runs offline as
written; every other command line parses.

Python blocks run per file, in reading order, in one shared folder (a reader of the FAQ has the checkpoint the README
saved), each file in a fresh interpreter. Blocks fenced as ```python gptq need gptqmodel and run in the GPT-Q
environment (`python dev.py test-gptq`). The `optimum-layerwise` commands of the README and getting-started run as
written, in order, except `sweep` (hours on a CPU). The other shell lines install packages, run the test suite, the
demo (which its own tests run) or benchmarks of hours: every `optimum-layerwise ...` line must parse with the real
argument parser, every `python <script>` must name a script of the repository, and every `pip install -e` a declared
extra.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from lm_eval._cli import HarnessCLI

from optimum_layerwise.cli.main import build_parser


ROOT = Path(__file__).resolve().parents[1]
# reading order: later ones use what earlier saved
DOCS = [
    "README.md",
    "docs/getting-started.md",
    "docs/faq.md",
    "docs/loading.md",
    "docs/large-models.md",
    "docs/slicing.md",
]
ALL_DOCS = ["README.md", *sorted(str(path.relative_to(ROOT)) for path in (ROOT / "docs").glob("*.md"))]
_FENCE = re.compile(r"^```([^\n`]*)\n(.*?)^```\s*$", re.MULTILINE | re.DOTALL)


def code_blocks(document: str) -> list[tuple[str, str]]:
    """`(info string, code)` of every fenced block of a Markdown file of the repository."""
    return [(info.strip(), code) for info, code in _FENCE.findall((ROOT / document).read_text(encoding="utf-8"))]


def python_code(document: str, *, gptq: bool) -> str:
    blocks = [code for info, code in code_blocks(document) if info.split()[:1] == ["python"]]
    if not gptq:
        blocks = [code for info, code in code_blocks(document) if info == "python"]
    return "\n".join(blocks)


def shell_commands(document: str) -> list[list[str]]:
    commands = []
    for info, code in code_blocks(document):
        if info != "bash":
            continue
        for line in code.replace("\\\n", " ").splitlines():
            line = line.split(" #", 1)[0].strip()
            if line and not line.startswith("#"):
                commands.extend(shlex.split(part) for part in line.split("&&"))
    return commands


def parse_lm_eval(arguments: list[str]) -> None:
    """Parse `lm_eval` arguments with lm-eval's own parser (its legacy form, without a subcommand, means `run`)."""
    HarnessCLI()._parser.parse_args(["run", *arguments])


def test_every_document_with_python_is_run():
    with_python = {
        document for document in ALL_DOCS if any(info.startswith("python") for info, _ in code_blocks(document))
    }
    assert with_python <= set(DOCS)


@pytest.mark.parametrize("document", ALL_DOCS)
def test_every_command_line_is_valid(document, capsys):
    pyproject = (ROOT / "pyproject.toml").read_text()
    section = pyproject.split("[project.optional-dependencies]", 1)[1].split("\n[", 1)[0]
    extras = set(re.findall(r"^([\w-]+)\s*=", section, re.MULTILINE))
    for command in shell_commands(document):
        while "=" in command[0]:  # environment assignments in front of a command
            command = command[1:]
        if command[0] == "optimum-layerwise":
            build_parser().parse_args(command[1:])  # exits with the parser's message on an unknown or bad flag
            if command[1] == "lm-eval":
                parse_lm_eval(command[2:])
        elif command[0] == "lm_eval":
            parse_lm_eval(command[1:])
        elif command[0] == "python" and command[1] != "-m":
            assert (ROOT / command[1]).is_file(), f"{document}: {shlex.join(command)}"
        elif command[:3] == ["pip", "install", "-e"]:
            wanted = re.fullmatch(r"\.\[(.*)\]", command[3]).group(1).split(",")
            assert set(wanted) <= extras, f"{document}: {shlex.join(command)}"
        else:
            assert command[0] in {"pip", "python"}, f"{document}: unexpected command {shlex.join(command)}"


def run_documents(workdir: Path, *, gptq: bool) -> None:
    """Run the Python blocks of `DOCS` in order in `workdir`; with `gptq`, only the documents that have GPT-Q blocks,
    all their blocks (the others ran in the main environment)."""
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    documents = [d for d in DOCS if not gptq or any(info == "python gptq" for info, _ in code_blocks(d))]
    for document in documents:
        code = python_code(document, gptq=gptq)
        if not code:
            continue
        result = subprocess.run(
            [sys.executable, "-c", code], cwd=workdir, env=environment, capture_output=True, text=True
        )
        assert result.returncode == 0, f"{document}:\n{result.stderr[-3000:]}"


WALKTHROUGHS = ["README.md", "docs/getting-started.md"]


@pytest.mark.slow
def test_walkthrough_commands_run_as_written(tmp_path):
    environment = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    ran = []
    for document in WALKTHROUGHS:
        for command in shell_commands(document):
            if command[0] != "optimum-layerwise" or command[1] == "sweep":
                continue
            result = subprocess.run(
                [sys.executable, "-m", "optimum_layerwise", *command[1:]],
                cwd=tmp_path,
                env=environment,
                capture_output=True,
                text=True,
            )
            assert result.returncode == 0, f"{document}: {shlex.join(command)}\n{result.stderr[-3000:]}"
            ran.append(command[1])
    assert ran.count("quantize") == 2 and ran.count("inspect") == 2 and "eval" in ran and "score" in ran
    assert (tmp_path / "scores.png").is_file() and (tmp_path / "out" / "config.json").is_file()


@pytest.mark.slow
def test_python_blocks_run_as_written(tmp_path):
    run_documents(tmp_path, gptq=False)
    assert (tmp_path / "my-model-6bit" / "config.json").is_file()


@pytest.mark.slow
@pytest.mark.gptq
def test_python_blocks_run_as_written_with_gptq(tmp_path):
    run_documents(tmp_path, gptq=True)
    assert (tmp_path / "smollm2-5bit-gptq" / "config.json").is_file()
