"""Contrastive losses: CLIP's symmetric InfoNCE and supervised contrastive (SupCon)."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


# ------------------------------------------------------------------------------------------------ losses
def clip_loss(
    image_emb: torch.Tensor,
    text_emb: torch.Tensor,
    logit_scale: torch.Tensor | float,
    labels: torch.Tensor | None = None,
) -> torch.Tensor:
    """Symmetric CLIP loss: cross-entropy of image->text and text->image logits, matched pairs on the diagonal.

    Args:
        image_emb: float (n, d), any norm (normalised here).
        text_emb: float (n, d), row ``i`` pairs with image row ``i``.
        logit_scale: Log of the inverse temperature (CLIP's learnable ``logit_scale``).
        labels: Optional int (n,) class of each pair. Rows of one class are then all positives of each other
            (the target spreads evenly over them), so several views of one name in a batch are not pushed apart.

    Returns:
        Scalar loss.

    Raises:
        ValueError: If shapes differ or the batch has fewer than 2 pairs.
    """
    if image_emb.shape != text_emb.shape or image_emb.ndim != 2 or image_emb.shape[0] < 2:
        raise ValueError(
            f"expected two (n >= 2, d) tensors of one shape, got {tuple(image_emb.shape)} and {tuple(text_emb.shape)}"
        )
    scale = logit_scale.exp() if isinstance(logit_scale, torch.Tensor) else float(np.exp(logit_scale))
    logits = scale * F.normalize(image_emb, dim=-1) @ F.normalize(text_emb, dim=-1).T
    if labels is None:
        target = torch.arange(logits.shape[0], device=logits.device)
        return (F.cross_entropy(logits, target) + F.cross_entropy(logits.T, target)) / 2
    if labels.shape != (logits.shape[0],):
        raise ValueError(f"labels must be ({logits.shape[0]},), got {tuple(labels.shape)}")
    same = (labels[:, None] == labels[None, :]).to(logits.dtype)
    soft = same / same.sum(dim=1, keepdim=True)  # symmetric: the transpose is the text->image target
    return (F.cross_entropy(logits, soft) + F.cross_entropy(logits.T, soft)) / 2


def supcon_loss(z: torch.Tensor, labels: torch.Tensor, temperature: float = 0.1) -> torch.Tensor:
    """Supervised contrastive loss (Khosla et al. 2020, ``L_out``), as CLIPPINGS uses on pooled embeddings.

    Args:
        z: float (n, d) embeddings (normalised here).
        labels: int (n,) class of each row.
        temperature: Softmax temperature ``> 0`` (Table S-1: 0.1).

    Returns:
        Scalar: mean over anchors that have at least one positive of
        ``-1/|P(i)| sum_{p in P(i)} log softmax_{j != i}(z_i . z_j / t)_p``; zero if no anchor has a positive.

    Raises:
        ValueError: If shapes disagree or ``temperature <= 0``.
    """
    if z.ndim != 2 or labels.shape != (z.shape[0],):
        raise ValueError(f"expected z (n, d) and labels (n,), got {tuple(z.shape)} and {tuple(labels.shape)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    z = F.normalize(z, dim=-1)
    n = z.shape[0]
    sim = z @ z.T / temperature
    self_mask = torch.eye(n, dtype=torch.bool, device=z.device)
    sim = sim.masked_fill(self_mask, float("-inf"))
    log_prob = sim - torch.logsumexp(sim, dim=1, keepdim=True)
    pos = (labels[:, None] == labels[None, :]) & ~self_mask
    n_pos = pos.sum(dim=1)
    has = n_pos > 0
    if not bool(has.any()):
        return z.sum() * 0.0
    per_anchor = -(log_prob.masked_fill(~pos, 0.0).sum(dim=1)[has]) / n_pos[has]
    return per_anchor.mean()
