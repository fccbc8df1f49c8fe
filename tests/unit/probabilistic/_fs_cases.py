"""Shared inputs of the Fellegi-Sunter tests: small alphabets and random strings over them."""

from __future__ import annotations

import numpy as np

# Alphabets mixing ASCII, accented Latin (composed), CJK, Hangul and an astral-plane character: small, so that
# random strings share characters and reach every Jaro-Winkler level.
ALPHABETS = {
    "ascii": "abcde",
    "latin": "aeéèêç",
    "cjk": "東京会社會株式販売賣",
    "mixed": "a東é社한글😀",
}


def random_strings(rng: np.random.Generator, alphabet: str, n: int, max_len: int = 9) -> list[str]:
    """Up to ``n`` distinct random strings of 1 to ``max_len`` characters of ``alphabet``, sorted."""
    chars = list(alphabet)
    out = {"".join(rng.choice(chars, int(rng.integers(1, max_len + 1)))) for _ in range(n)}
    return sorted(out)
