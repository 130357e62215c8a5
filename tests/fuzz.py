"""Example counts for fuzz tests: at least 10,000 in CI, fewer for a quick local run."""

from __future__ import annotations

import os

IN_CI_PROFILE = os.environ.get("HYPOTHESIS_PROFILE") == "ci"

FUZZ_EXAMPLES = 10_000 if IN_CI_PROFILE else 500
"""Examples for tests that feed random bytes or JSON to a decoder."""

STATEFUL_EXAMPLES = 1_000 if IN_CI_PROFILE else 100
"""Runs of a stateful (rule-based) test."""
