"""The training losses. A reader finds every loss of the toolkit here and nowhere else.

Embeddings arrive L2-normalised; similarities are cosine similarities times `logit_scale.exp()`.
Under DDP each rank passes its own rows; image and text embeddings are all-gathered *with* gradient,
and the local rows' targets are offset by rank * B in the gathered similarity matrix.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from toolkit.train.distributed import all_gather_with_grad, rank, world_size

NUM_POSITIVE_SETS = 4  # p1, p2, p3, p4
TEXTS_PER_IMAGE = NUM_POSITIVE_SETS + 1  # ... plus the hard negative n


@dataclass(frozen=True)
class ClicLossWeights:
    """Weights of the three terms; `use_*` switches a term off entirely (it is then not computed)."""

    cont: float = 0.5
    sneg: float = 0.5
    uni: float = 1.0
    use_cont: bool = True
    use_sneg: bool = True
    use_uni: bool = True

    def __post_init__(self) -> None:
        if not (self.use_cont or self.use_sneg or self.use_uni):
            raise ValueError("ClicLossWeights: at least one of cont, sneg, uni must be switched on")


def _local_targets(batch: int, device: torch.device) -> torch.Tensor:
    """Row j of this rank sits at row rank*B + j of the gathered matrix."""
    return torch.arange(batch, device=device) + rank() * batch


class ClicLoss(nn.Module):
    r"""CLIC loss for B concatenated images and 5B texts laid out as

        text_features = [p1 | p2 | p3 | p4 | n]   (B rows per block; row j of every block is image j's)

    p1 = "c1. c2.", p2 = "c2. c1.", p3/p4 = extra-sentence positives, n = the hard negative.

        L_cont = 1/4 Σ_i ( CE(s·I·P_iᵀ, diag) + CE(s·P_i·Iᵀ, diag) ) / 2        (I, P_i gathered over ranks)
        L_sneg = 1/4 Σ_i mean_j CE([s·⟨I_j, p_i,j⟩, s·⟨I_j, n_j⟩], target 0)
        L_uni  = mean_j ‖p1_j − p2_j‖²
        L      = w_cont·L_cont + w_sneg·L_sneg + w_uni·L_uni                  (defaults 0.5, 0.5, 1.0)

    where s = exp(logit_scale). Image→text contrasts against set i's texts only: the other positive
    sets and the negatives stay out of that softmax. The hard negative competes only with its own positive.
    """

    def __init__(self, weights: ClicLossWeights | None = None) -> None:
        super().__init__()
        self.weights = weights or ClicLossWeights()

    def forward(
        self, image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        batch = image_features.shape[0]
        if text_features.shape[0] != TEXTS_PER_IMAGE * batch:
            raise ValueError(f"ClicLoss expects {TEXTS_PER_IMAGE}·B = {TEXTS_PER_IMAGE * batch} texts for "
                             f"B = {batch} images, got {text_features.shape[0]}")
        scale = logit_scale.exp()
        positives = [text_features[i * batch : (i + 1) * batch] for i in range(NUM_POSITIVE_SETS)]
        negative = text_features[NUM_POSITIVE_SETS * batch:]
        w = self.weights
        terms: dict[str, torch.Tensor] = {}

        if w.use_cont:
            all_images = all_gather_with_grad(image_features)
            # One gather for the four positive sets only ([world, 4, B, D]; the negatives never enter
            # this softmax, so they are not sent), then pick set i from every rank.
            all_texts = all_gather_with_grad(text_features[: NUM_POSITIVE_SETS * batch]).view(
                world_size(), NUM_POSITIVE_SETS, batch, -1)
            targets = _local_targets(batch, image_features.device)
            per_set = []
            for i, positive in enumerate(positives):
                all_positive = all_texts[:, i].reshape(world_size() * batch, -1)
                image_to_text = F.cross_entropy(scale * image_features @ all_positive.T, targets)
                text_to_image = F.cross_entropy(scale * positive @ all_images.T, targets)
                per_set.append((image_to_text + text_to_image) / 2)
            terms["cont"] = torch.stack(per_set).mean()

        if w.use_sneg:
            negative_similarity = (image_features * negative).sum(dim=-1)
            first_is_right = torch.zeros(batch, dtype=torch.long, device=image_features.device)
            per_set = []
            for positive in positives:
                positive_similarity = (image_features * positive).sum(dim=-1)
                two_way = scale * torch.stack([positive_similarity, negative_similarity], dim=1)
                per_set.append(F.cross_entropy(two_way, first_is_right))
            terms["sneg"] = torch.stack(per_set).mean()

        if w.use_uni:
            p1, p2 = positives[0], positives[1]
            terms["uni"] = (p1 - p2).pow(2).sum(dim=-1).mean()

        weight_of = {"cont": w.cont, "sneg": w.sneg, "uni": w.uni}
        total = torch.stack([weight_of[name] * value for name, value in terms.items()]).sum()
        return total, terms


class ClipLoss(nn.Module):
    r"""Plain symmetric CLIP loss for B images and their B texts (the odd, single-image steps):

        L = ( CE(s·I·Tᵀ, diag) + CE(s·T·Iᵀ, diag) ) / 2,   s = exp(logit_scale), I and T gathered over ranks.
    """

    def forward(
        self, image_features: torch.Tensor, text_features: torch.Tensor, logit_scale: torch.Tensor
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        batch = image_features.shape[0]
        if text_features.shape[0] != batch:
            raise ValueError(f"ClipLoss expects one text per image, got {text_features.shape[0]} texts "
                             f"for {batch} images")
        scale = logit_scale.exp()
        targets = _local_targets(batch, image_features.device)
        all_texts, all_images = all_gather_with_grad(text_features), all_gather_with_grad(image_features)
        image_to_text = F.cross_entropy(scale * image_features @ all_texts.T, targets)
        text_to_image = F.cross_entropy(scale * text_features @ all_images.T, targets)
        total = (image_to_text + text_to_image) / 2
        return total, {"clip": total}


def hard_negative_accuracy(image_features: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
    """Share of (image, positive set) pairs in a CLIC batch (laid out as for `ClicLoss`) whose positive is
    closer to the image than the image's hard negative: whether training separates the negatives it is shown,
    which the loss alone does not say (a falling loss may only be the contrastive term). Not differentiable."""
    batch = image_features.shape[0]
    similarity = (text_features.detach().view(TEXTS_PER_IMAGE, batch, -1) * image_features.detach()).sum(dim=-1)
    return (similarity[:NUM_POSITIVE_SETS] > similarity[NUM_POSITIVE_SETS]).float().mean()


def anchor_loss(trained: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    r"""Anchor distillation against forgetting (toolkit.train.anchors): for K anchor texts,

        L_anchor = mean_k ‖t_k − t̂_k‖²

    with t_k the trained tower's and t̂_k the base tower's unit embedding of anchor k (the same form as
    L_uni). The image tower is frozen, so an anchor kept in place keeps its zero-shot and retrieval scores.
    """
    if trained.shape != base.shape:
        raise ValueError(f"anchor_loss: trained {tuple(trained.shape)} and base {tuple(base.shape)} embeddings "
                         "must have the same shape")
    return (trained - base).pow(2).sum(dim=-1).mean()
