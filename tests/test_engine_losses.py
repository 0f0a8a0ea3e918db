"""The Lovasz-softmax term: hand-computed values, the exact Jaccard loss on hard predictions, ignore handling."""
from __future__ import annotations

import pytest
import torch

from minkseg.engine.losses import SegmentationLoss, lovasz_softmax


def test_hand_computed_single_class():
    # errors 0.1 and 0.4, both foreground: sorted [0.4, 0.1] weighted by the Jaccard increments [0.5, 0.5]
    probabilities = torch.tensor([[0.9, 0.1], [0.6, 0.4]])
    labels = torch.tensor([0, 0])
    assert lovasz_softmax(probabilities, labels).item() == pytest.approx(0.25)


def test_perfect_prediction_scores_zero():
    labels = torch.tensor([0, 1, 2, 1])
    assert lovasz_softmax(torch.eye(3)[labels], labels).item() == 0.0


def test_equals_one_minus_iou_on_hard_predictions():
    generator = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 4, (200,), generator=generator)
    predicted = torch.where(torch.rand(200, generator=generator) < 0.7, labels,
                            torch.randint(0, 4, (200,), generator=generator))
    expected = []
    for cls in labels.unique():
        truth, guess = labels == cls, predicted == cls
        expected.append(1.0 - (truth & guess).sum().item() / (truth | guess).sum().item())
    value = lovasz_softmax(torch.eye(4)[predicted], labels).item()
    assert value == pytest.approx(sum(expected) / len(expected), abs=1e-6)


def test_ignored_rows_are_left_out_and_all_ignored_gives_a_zero_with_a_graph():
    probabilities = torch.tensor([[0.9, 0.1], [0.6, 0.4], [0.0, 1.0]], requires_grad=True)
    assert lovasz_softmax(probabilities, torch.tensor([0, 0, 255])).item() == pytest.approx(0.25)
    zero = lovasz_softmax(probabilities, torch.tensor([255, 255, 255]))
    zero.backward()
    assert zero.item() == 0.0 and probabilities.grad is not None


def test_segmentation_loss_adds_the_weighted_term_and_trains():
    torch.manual_seed(0)
    logits = torch.randn(64, 5, requires_grad=True)
    labels = torch.randint(0, 5, (64,))
    labels[:4] = 255
    plain = SegmentationLoss(255, lovasz_weight=0.0)(logits, labels)
    combined = SegmentationLoss(255, lovasz_weight=0.5)(logits, labels)
    expected = plain + 0.5 * lovasz_softmax(logits.softmax(1), labels)
    assert combined.item() == pytest.approx(expected.item(), rel=1e-6)
    combined.backward()
    assert torch.isfinite(logits.grad).all() and logits.grad[:4].abs().sum() == 0  # ignored rows get no gradient
