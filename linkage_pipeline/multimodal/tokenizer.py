"""The character-level tokenizer of the shipped model (JIS X 0208 plus the vocabulary of firm names)."""

from __future__ import annotations

import unicodedata
from typing import Any

from linkage_pipeline.synthetic.firms import OLD_NEW_PAIRS, vocabulary_characters

SPECIAL_TOKENS: tuple[str, ...] = ("[PAD]", "[UNK]", "[CLS]", "[SEP]")


# ------------------------------------------------------------------------------------------------ tokenizer
def _jis_x0208_characters() -> str:
    """Every character of JIS X 0208 (kana, the 6,355 level-1 and level-2 kanji, symbols), via EUC-JP."""
    chars = []
    for hi in range(0xA1, 0xFF):
        for lo in range(0xA1, 0xFF):
            try:
                chars.append(bytes((hi, lo)).decode("euc_jp"))
            except UnicodeDecodeError:
                continue
    return "".join(chars)


def tokenizer_characters() -> str:
    """The character vocabulary of our tokenizer, in a fixed order.

    Returns:
        Printable ASCII, half-width katakana excluded, JIS X 0208 (kana, common kanji, full-width forms), every
        character generated firm names can contain (old forms such as 會 and 鐵 included), and the NFKC forms
        of all of them (the tokenizer normalises to NFKC, as the OCR engines do). No duplicates, no whitespace.
    """
    raw = (
        "".join(chr(c) for c in range(0x21, 0x7F))
        + _jis_x0208_characters()
        + vocabulary_characters()
        + "".join(a + b for a, b in OLD_NEW_PAIRS)
        + "㈱㈲㈾㈴"
    )
    seen: dict[str, None] = {}
    for ch in raw:
        for c in (ch, *unicodedata.normalize("NFKC", ch)):
            if not c.isspace() and c not in seen:
                seen[c] = None
    return "".join(seen)


def build_char_tokenizer(characters: str | None = None, *, max_length: int = 48) -> Any:
    """Build a character-level WordLevel tokenizer (``[CLS] c1 c2 ... [SEP]``), NFKC-normalised.

    Args:
        characters: Characters of the vocabulary; ``None`` uses :func:`tokenizer_characters`.
        max_length: Longest token sequence, special tokens included (``>= 3``).

    Returns:
        A ``transformers.PreTrainedTokenizerFast`` with ``[PAD]`` = 0, ``[UNK]`` = 1, ``[CLS]`` = 2,
        ``[SEP]`` = 3; save it with ``save_pretrained`` and reload it with ``AutoTokenizer.from_pretrained``.

    Raises:
        ValueError: If ``max_length < 3`` or ``characters`` is empty.
    """
    from tokenizers import (
        Regex,
        Tokenizer,
        models,
        normalizers,
        pre_tokenizers,
        processors,
    )
    from transformers import PreTrainedTokenizerFast

    if max_length < 3:
        raise ValueError(f"max_length must be >= 3 (CLS, one character, SEP), got {max_length}")
    chars = tokenizer_characters() if characters is None else characters
    if not chars:
        raise ValueError("characters is empty; expected at least one character for the vocabulary")
    vocab: dict[str, int] = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for ch in chars:
        if not ch.isspace() and ch not in vocab:
            vocab[ch] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.normalizer = normalizers.NFKC()
    # Whitespace carries no identity in a firm name (OCR inserts it at random); every other character is a token.
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Split(Regex("."), behavior="isolated")]
    )
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]", special_tokens=[("[CLS]", 2), ("[SEP]", 3)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        unk_token="[UNK]",
        pad_token="[PAD]",
        cls_token="[CLS]",
        sep_token="[SEP]",
        model_max_length=max_length,
    )
