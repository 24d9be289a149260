"""The Hugging Face datasets used by the paper's community (PG-19, WikiText-2, C4), read with `datasets`."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass

from .offline_corpora import OFFLINE_CORPORA


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


def load_hub_corpus(corpus: HubCorpus, split: str | None) -> list[str]:
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
