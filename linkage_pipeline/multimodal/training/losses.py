"""Contrastive losses: CLIP's symmetric InfoNCE, supervised contrastive (SupCon), and in-batch similarity distillation."""

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


def relation_kl(student: torch.Tensor, teacher: torch.Tensor, temperature: float, *, exclude_self: bool) -> torch.Tensor:
    """KL divergence from the teacher's to the student's in-batch similarity distributions, mean over rows.

    Row ``i`` of each (n, n) similarity matrix, divided by ``temperature``, is a softmax distribution over the
    batch ("which crops does crop ``i`` look like, and how much"); the student is pulled towards the teacher's
    distribution, ``KL(softmax(teacher_i / t) || softmax(student_i / t))``. Only the ranking structure of the
    similarities is transferred, so the student and teacher embeddings may have different dimensions.

    Args:
        student: float (n, n) cosine similarities of the student (differentiable).
        teacher: float (n, n) cosine similarities of the teacher (constants).
        temperature: Softmax temperature ``> 0``.
        exclude_self: Leave the diagonal out (for a matrix of a set with itself, where it is always 1).

    Raises:
        ValueError: If the matrices are not of one (n, n) shape with n >= 2, or ``temperature <= 0``.
    """
    n = student.shape[0]
    if student.shape != teacher.shape or student.ndim != 2 or student.shape != (n, n) or n < 2:
        raise ValueError(f"expected two (n, n) similarity matrices, n >= 2; got {tuple(student.shape)} and "
                         f"{tuple(teacher.shape)}")
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    s, t = student / temperature, teacher.to(student.dtype) / temperature
    if exclude_self:
        eye = torch.eye(n, dtype=torch.bool, device=student.device)
        s, t = s.masked_fill(eye, float("-inf")), t.masked_fill(eye, float("-inf"))
    log_s, log_t = F.log_softmax(s, dim=1), F.log_softmax(t, dim=1)
    # 0 * log 0 terms (the masked diagonal) contribute nothing
    kl = torch.where(torch.isfinite(log_t), log_t.exp() * (log_t - log_s), torch.zeros_like(log_t))
    return kl.sum(dim=1).mean()


def distillation_loss(
    image_emb: torch.Tensor,
    text_emb: torch.Tensor,
    teacher_image: torch.Tensor,
    teacher_text: torch.Tensor,
    *,
    image_weight: float = 0.5,
    temperature: float = 0.1,
) -> torch.Tensor:
    """Similarity distillation of a multimodal encoder: the mean of :func:`relation_kl` over four relations.

    The relations are image-image, text-text, pooled-pooled (weight ``image_weight``) and image-text, each of the
    student against the same relation of the teacher. A teacher may be an ensemble: the concatenation of its
    members' unit-normalised embeddings, so its cosine similarity is the mean of theirs.

    Args:
        image_emb: float (n, d) student image embeddings (any norm; normalised here).
        text_emb: float (n, d) student text embeddings.
        teacher_image: float (n, D) teacher image embeddings of the same rows.
        teacher_text: float (n, D) teacher text embeddings.
        image_weight: ``w`` of the pooled embedding ``w * image + (1 - w) * text``.
        temperature: Softmax temperature of every relation.

    Raises:
        ValueError: If the student's or the teacher's two embeddings differ in shape, or the rows differ.
    """
    if image_emb.shape != text_emb.shape or teacher_image.shape != teacher_text.shape or \
            image_emb.shape[0] != teacher_image.shape[0]:
        raise ValueError(f"expected student (n, d) and teacher (n, D) image and text embeddings, got "
                         f"{tuple(image_emb.shape)}, {tuple(text_emb.shape)}, {tuple(teacher_image.shape)}, "
                         f"{tuple(teacher_text.shape)}")

    def pooled(img: torch.Tensor, txt: torch.Tensor) -> torch.Tensor:
        return F.normalize(image_weight * img + (1 - image_weight) * txt, dim=-1)

    si, st = F.normalize(image_emb, dim=-1), F.normalize(text_emb, dim=-1)
    ti, tt = F.normalize(teacher_image.float(), dim=-1), F.normalize(teacher_text.float(), dim=-1)
    sp, tp = pooled(si, st), pooled(ti, tt)
    return (
        relation_kl(si @ si.T, ti @ ti.T, temperature, exclude_self=True)
        + relation_kl(st @ st.T, tt @ tt.T, temperature, exclude_self=True)
        + relation_kl(sp @ sp.T, tp @ tp.T, temperature, exclude_self=True)
        + relation_kl(si @ st.T, ti @ tt.T, temperature, exclude_self=False)
    ) / 4
