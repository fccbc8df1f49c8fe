"""Which knowledge source makes the label-free (self-supervised) model link: an ablation on processed corpora.

Usage:
    .venv/bin/python bench/label_free_ablation.py --corpus demo=/tmp/demo --corpus heldout=/tmp/heldout \\
        --work /tmp/ablation [--names 4000 --steps 600] [--only all no_variants]

Each row trains the language-image pretraining stage from scratch on a label-free set
(:func:`linkage_pipeline.multimodal.training.label_free.build_label_free_set`) with one knowledge source left out
(or, ``clip_only``, every source but without the instance loss: the plain CLIP loss on crop/reading pairs), then
links each corpus's test firms with it (no labels of any corpus are used; the pooling weight is chosen per OCR
condition on the corpus's validation firms, as the pipeline does). The table gives top-1 accuracy of the
multimodal embedding per corpus and OCR condition, and the best string method of the same queries.
Trained models and sets are kept under ``--work``, so a re-run only evaluates.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import replace
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cross_corpus import load_corpus, score_model

from linkage_pipeline.evaluation import report
from linkage_pipeline.multimodal.encoder import MultimodalEncoder
from linkage_pipeline.multimodal.preprocessing import Preprocessing
from linkage_pipeline.multimodal.training import label_free
from linkage_pipeline.multimodal.training.data import (
    load_training_set,
    save_training_set,
)
from linkage_pipeline.multimodal.training.recipe import Recipe
from linkage_pipeline.multimodal.training.trainer import train

#: name -> (knowledge sources left out, instance loss on)
SETTINGS: dict[str, tuple[tuple[str, ...], bool]] = {
    "all": ((), True),
    "no_variants": (("variants",), True),
    "no_legal_forms": (("legal_forms",), True),
    "no_typefaces": (("typefaces",), True),
    "no_degradations": (("degradations",), True),
    "no_glyph_noise": (("glyph_noise",), True),
    "no_open_vocabulary": (("open_vocabulary",), True),
    "clip_only": ((), False),
}


def trained(work: Path, name: str, names: int, steps: int) -> Path:
    """The pretrained model of one setting (trained unless already there)."""
    without, instance = SETTINGS[name]
    folder = work / f"{name}-{names}-{steps}"
    if (folder / "config.json").is_file():
        return folder
    set_path = work / f"set-{'-'.join(without) or 'all'}-{names}.parquet"
    if set_path.is_file():
        data = load_training_set(set_path)
    else:
        data = label_free.build_label_free_set(names, 3, seed=1, knowledge=label_free.Knowledge.without(*without))
        save_training_set(data, set_path)
    recipe = Recipe()
    config = replace(recipe.clip, max_steps=steps, instance_weight=recipe.clip.instance_weight if instance else 0.0)
    encoder = MultimodalEncoder.create(seed=recipe.seed, device="cpu", dtype="float32", vision_tower=recipe.vision_tower,
                                       preprocessing=Preprocessing(image_size=recipe.image_size, layout=recipe.layout))
    start = time.perf_counter()
    result = train(encoder, data, config, checkpoint_dir=work / "checkpoints" / folder.name)
    encoder.save(folder, card={"ablation": name, "data": data.info, "steps": result.steps,
                               "seconds": round(time.perf_counter() - start, 1)})
    return folder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", action="append", required=True, help="NAME=DATA_DIR of a processed corpus")
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--names", type=int, default=4000)
    parser.add_argument("--steps", type=int, default=600)
    parser.add_argument("--only", nargs="*", default=list(SETTINGS), choices=list(SETTINGS))
    args = parser.parse_args(argv)
    args.work.mkdir(parents=True, exist_ok=True)
    corpora = {spec.split("=", 1)[0]: load_corpus(spec.split("=", 1)[1]) for spec in args.corpus}
    rows = []
    for name in args.only:
        folder = trained(args.work, name, args.names, args.steps)
        encoder = MultimodalEncoder.load(folder, device="cpu")
        for corpus_name, corpus in corpora.items():
            t = score_model(encoder, corpus, "self_supervised", None)
            for r in t[t["method"] == "multimodal"].itertuples():
                rows.append({"setting": name, "corpus": corpus_name, "ocr": r.ocr, "multimodal": r.top1_accuracy,
                             "weight": r.weight, "n": r.n})
        print(f"{name}: done", flush=True)
    table = pd.DataFrame(rows).pivot_table(index="setting", columns=["corpus", "ocr"], values="multimodal",
                                           sort=False)
    strings = []
    for corpus_name, corpus in corpora.items():
        s = report.linkage_evaluation_table(corpus["strings"], corpus["regions"], report_splits=("test",))
        best = s.groupby("ocr")["top1_accuracy"].max()
        strings.append(pd.DataFrame({(corpus_name, o): [best[o]] for o in best.index}, index=["best string"]))
    table = pd.concat([table, *strings])
    print(table.to_string(float_format=lambda x: f"{x:.3f}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
