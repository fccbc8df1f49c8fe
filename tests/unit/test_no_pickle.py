"""No pickle anywhere: weights and checkpoints are safetensors (DESIGN section 3), and nothing unpickles a file."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from fixtures.tiny import TINY
from safetensors import safe_open

from linkage_pipeline import api
from linkage_pipeline.multimodal.encoder import MultimodalEncoder
from linkage_pipeline.multimodal.training.data import build_training_set
from linkage_pipeline.multimodal.training.trainer import TrainConfig, train

REPO = Path(__file__).resolve().parents[2]
#: Calls that read pickle data (torch.load unpickles, even with weights_only=True it is the pickle format).
PICKLE_READERS = re.compile(r"\btorch\.load\(|\bimport pickle\b|\bpickle\.loads?\(|\bjoblib\b|\bdill\b|"
                            r"\bcloudpickle\b|allow_pickle\s*=\s*True|\bread_pickle\(|\bto_pickle\(|torch\.save\(")


def _tiny_bert_with_pickle_weights(path: Path) -> Path:
    """A tiny BERT whose weights are saved the old way: a pickled ``pytorch_model.bin`` and no safetensors."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import BertConfig, BertModel, PreTrainedTokenizerFast

    vocab = {w: i for i, w in enumerate(["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "acme", "corp"])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                            sep_token="[SEP]", mask_token="[MASK]").save_pretrained(str(path))
    config = BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=16)
    model = BertModel(config)
    model.save_pretrained(str(path))
    # The old format, written by hand: this transformers version saves safetensors only.
    torch.save(model.state_dict(), path / "pytorch_model.bin")  # the test writes a pickle; the library must not read it
    for weights in path.glob("*.safetensors"):
        weights.unlink()
    assert (path / "pytorch_model.bin").is_file() and not list(path.glob("*.safetensors"))
    return path


def test_text_encoder_refuses_pickled_weights(tmp_path: Path) -> None:
    model_dir = _tiny_bert_with_pickle_weights(tmp_path / "old model")
    with pytest.raises(ValueError) as info:
        api.TextEncoder(model_dir, device="cpu")
    message = str(info.value)
    assert "pytorch_model.bin" in message and "safetensors" in message and str(model_dir) in message
    with pytest.raises(ValueError, match="safetensors"):
        api.load_text_encoder(model_dir, device="cpu")


def test_training_checkpoint_holds_no_pickle_and_an_old_one_is_refused(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    data = build_training_set(6, 3, seed=5)
    config = TrainConfig(stage="clip", lr=1e-3, batch_size=6, epochs=1, checkpoint_every=1, max_steps=2)
    train(MultimodalEncoder.create(seed=11, **TINY), data, config, checkpoint_dir=tmp_path)
    files = sorted(p for p in (tmp_path / "last").iterdir())
    assert files, "no checkpoint written"
    for path in files:  # every file is safetensors or JSON, read here by parsers that cannot run code
        if path.suffix == ".safetensors":
            with safe_open(str(path), framework="pt") as fh:
                assert list(fh.keys())
        else:
            assert path.suffix == ".json", path.name
            json.loads(path.read_text(encoding="utf-8"))
    resumed = train(MultimodalEncoder.create(seed=11, **TINY), data,
                    TrainConfig(**{**config.__dict__, "max_steps": 3}), checkpoint_dir=tmp_path)
    assert resumed.resumed_from == 2 and resumed.steps == 3 and np.isfinite(resumed.losses).all()

    # A checkpoint written by an older version keeps its optimizer state as a pickle: refused, not unpickled.
    last = tmp_path / "last"
    for path in last.glob("optimizer*"):
        path.unlink()
    (last / "optimizer.pt").write_bytes(b"\x80\x04pickle")
    with pytest.raises(ValueError, match=r"optimizer\.pt.*pickle.*safetensors"):
        train(MultimodalEncoder.create(seed=11, **TINY), data, config, checkpoint_dir=tmp_path)


def test_no_code_reads_or_writes_pickle() -> None:
    offenders = []
    for folder in ("linkage_pipeline", "assets_defs", "resources", "bench"):
        for path in sorted((REPO / folder).rglob("*.py")):
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
                if PICKLE_READERS.search(line):
                    offenders.append(f"{path.relative_to(REPO)}:{number}: {line.strip()}")
    assert offenders == []
