"""The engines resource: OCR engines loaded once per process and reused across assets."""

from __future__ import annotations

import dagster as dg
from pydantic import Field, PrivateAttr

from linkage_pipeline.documents.ocr import OcrEngine, make_engine


class EnginesResource(dg.ConfigurableResource):
    """OCR engine settings; engines are built lazily and kept in a private cache (the resource stays frozen)."""

    ocr_workers: int = Field(default=0, ge=0, description="parallel OCR workers; 0 = one per CPU core")

    _engines: dict[str, OcrEngine] = PrivateAttr(default_factory=dict)

    def ocr_engine(self, name: str) -> OcrEngine:
        if name not in self._engines:
            options = {"workers": self.ocr_workers} if name == "tesseract" and self.ocr_workers else {}
            self._engines[name] = make_engine(name, **options)
        return self._engines[name]
