"""Example counts for fuzz tests: at least 10,000 in CI, fewer for a quick local run."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from hypothesis import strategies as st
from hypothesis.strategies import SearchStrategy

IN_CI_PROFILE = os.environ.get("HYPOTHESIS_PROFILE") == "ci"

FUZZ_EXAMPLES = 10_000 if IN_CI_PROFILE else 500
"""Examples for tests that feed random bytes or JSON to a decoder."""

STATEFUL_EXAMPLES = 500 if IN_CI_PROFILE else 100
"""Runs of a stateful (rule-based) test."""


def toml_documents(
    headers: Sequence[str], keys: Sequence[str], values: SearchStrategy[str]
) -> SearchStrategy[str]:
    """Near-valid TOML: up to 8 tables from ``headers``, each with up to 5 ``key = value`` lines."""
    tables = st.lists(
        st.tuples(
            st.sampled_from(headers),
            st.lists(st.tuples(st.sampled_from(keys), values), max_size=5),
        ),
        max_size=8,
    )
    return tables.map(
        lambda items: "\n".join(
            f"{header}\n" + "\n".join(f"{key} = {value}" for key, value in pairs)
            for header, pairs in items
        )
    )


def mutated(files: Sequence[Path]) -> SearchStrategy[str]:
    """One of ``files`` with up to 40 characters replaced by up to 8 TOML-ish ones."""

    @st.composite
    def draw(data: st.DrawFn) -> str:
        text = data(st.sampled_from(files)).read_text(encoding="utf-8")
        start = data(st.integers(0, len(text)))
        end = data(st.integers(start, min(len(text), start + 40)))
        insert = data(st.text(alphabet='"[]={}=,.#\n 0:aZ_-', max_size=8))
        return text[:start] + insert + text[end:]

    return draw()
