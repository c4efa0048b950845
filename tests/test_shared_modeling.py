"""Shared mechanisms: SSD prior coding / matching / OHEM, deformable conv with offset branch, evaluator table."""
import pytest
import torch

from segx.evaluation import EVALUATOR_TYPES, build_evaluator_by_type, register_evaluator_type
from segx.layers.deform_conv import DeformConvWithOffset
from segx.modeling.ssd_coding import (
    IGNORE,
    NEGATIVE,
    decode_boxes,
    decode_landmarks,
    encode_boxes,
    encode_landmarks,
    hard_negative_mining,
    match_priors,
    priors_to_xyxy,
)


def _random_priors(n, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.cat([torch.rand(n, 2, generator=g) * 100, 5 + torch.rand(n, 2, generator=g) * 40], dim=1)


def test_box_and_landmark_coding_round_trip():
    priors = _random_priors(50)
    boxes = priors_to_xyxy(_random_priors(50, seed=1))
    for variances in [(0.1, 0.2), (1.0, 1.0)]:
        torch.testing.assert_close(decode_boxes(encode_boxes(boxes, priors, variances), priors, variances), boxes)
    points = torch.rand(50, 5, 2) * 100
    torch.testing.assert_close(decode_landmarks(encode_landmarks(points, priors), priors), points, atol=1e-4, rtol=1e-5)
    # a box equal to its prior encodes to zero
    torch.testing.assert_close(encode_boxes(priors_to_xyxy(priors), priors), torch.zeros(50, 4), atol=1e-5, rtol=0)
    # the variance scales the targets: centre offset of 1 prior width → 1/0.1 = 10
    p = torch.tensor([[10.0, 10.0, 4.0, 4.0]])
    torch.testing.assert_close(encode_boxes(torch.tensor([[12.0, 8.0, 16.0, 12.0]]), p)[0, :2], torch.tensor([10.0, 0.0]))


def test_match_priors_thresholds_and_forcing():
    priors = torch.tensor([[10.0, 10, 10, 10], [12, 10, 10, 10], [15, 10, 10, 10], [80, 80, 10, 10], [50, 50, 10, 10]])
    gt = torch.tensor([[5.0, 5, 15, 15], [46, 46, 53, 53]])
    matched, best = match_priors(gt, priors, pos_iou=0.5, neg_iou=0.4, force=None)
    # IoUs with gt0: 1.0, 0.667, 0.333; prior 4 vs gt1: 49/100 = 0.49 → neutral band
    assert matched.tolist() == [0, 0, NEGATIVE, NEGATIVE, IGNORE]
    matched, _ = match_priors(gt, priors, pos_iou=0.5, neg_iou=0.4, force="greedy")
    assert matched.tolist() == [0, 0, NEGATIVE, NEGATIVE, 1]
    matched, _ = match_priors(gt, priors, pos_iou=0.5, force="per_gt", min_force_iou=0.5)
    assert matched.tolist() == [0, 0, NEGATIVE, NEGATIVE, NEGATIVE]  # gt1's best IoU 0.49 < 0.5: not forced
    # no ground truth: everything is background
    matched, best = match_priors(torch.zeros(0, 4), priors, pos_iou=0.5)
    assert (matched == NEGATIVE).all() and (best == 0).all()


def test_greedy_forcing_gives_distinct_priors():
    priors = torch.tensor([[10.0, 10, 10, 10], [40, 40, 10, 10]])
    gt = torch.tensor([[5.0, 5, 15, 15], [6, 6, 16, 16]])  # both prefer prior 0
    matched, _ = match_priors(gt, priors, pos_iou=0.5, force="greedy")
    assert matched[0] == 0 and matched[1] == 1  # gt1 forced onto its remaining best prior
    matched, _ = match_priors(gt, priors, pos_iou=0.5, force="per_gt")
    assert matched[0] == 1  # per-GT forcing: the later GT wins the shared prior


def test_crowd_boxes_make_covered_negatives_ignored():
    priors = torch.tensor([[10.0, 10, 10, 10], [60, 60, 10, 10]])
    matched, _ = match_priors(torch.zeros(0, 4), priors, pos_iou=0.5, neg_iou=0.4,
                              crowd_boxes=torch.tensor([[50.0, 50, 70, 70]]))
    assert matched.tolist() == [NEGATIVE, IGNORE]


def test_hard_negative_mining_ratio():
    torch.manual_seed(0)
    loss = torch.rand(3, 200)
    positive = torch.zeros(3, 200, dtype=torch.bool)
    positive[0, :5] = True
    positive[1, :50] = True  # 3*50 = 150 <= 150 candidates
    candidates = ~positive
    candidates[1, 150:] = False  # only 100 candidates left in image 1
    neg = hard_negative_mining(loss, positive, candidates, neg_pos_ratio=3)
    assert neg.sum(1).tolist() == [15, 100, 0]
    assert not (neg & positive).any() and not (neg & ~candidates).any()
    # the chosen negatives are the highest-loss candidates
    chosen = loss[0][neg[0]]
    rest = loss[0][candidates[0] & ~neg[0]]
    assert chosen.min() >= rest.max()


@pytest.mark.parametrize("modulated", [False, True])
def test_deform_conv_starts_as_plain_conv_and_learns_offsets(modulated):
    m = DeformConvWithOffset(6, 4, 3, stride=2, modulated=modulated, deformable_groups=2).double()
    x = torch.randn(2, 6, 9, 11, dtype=torch.float64, requires_grad=True)
    ref = torch.nn.functional.conv2d(x, m.weight, m.bias, stride=2, padding=1)
    torch.testing.assert_close(m(x), ref)
    m(x).square().sum().backward()
    assert m.offset_conv.weight.grad.abs().sum() > 0  # the offsets receive a gradient
    with pytest.raises(ValueError, match="deformable_groups"):
        DeformConvWithOffset(6, 4, 3, deformable_groups=4)


def test_evaluator_table():
    assert {"coco", "coco_panoptic_seg", "sem_seg", "pck", "face"} <= set(EVALUATOR_TYPES)
    # every evaluator_type detectron2 gives its Cityscapes sets has an evaluator (no data needed to build them)
    from detectron2.data import MetadataCatalog
    from detectron2.evaluation import COCOPanopticEvaluator

    for name in ["cityscapes_fine_panoptic_val", "cityscapes_fine_instance_seg_val", "cityscapes_fine_sem_seg_val"]:
        etype = MetadataCatalog.get(name).evaluator_type
        (evaluator,) = build_evaluator_by_type(etype, None, name, None)
        assert evaluator.__class__.__name__.startswith(("Cityscapes", "COCOPanoptic")), (name, evaluator)
    (pan,) = build_evaluator_by_type("cityscapes_panoptic_seg", None, "cityscapes_fine_panoptic_val", "/tmp")
    assert isinstance(pan, COCOPanopticEvaluator)

    @register_evaluator_type("segx_test_dummy")
    def _dummy(cfg, dataset_name, output_folder):
        return ["a", "b"]

    try:
        assert build_evaluator_by_type("segx_test_dummy", None, "ds", None) == ["a", "b"]
        with pytest.raises(ValueError, match="'ds'.*'nope'"):
            build_evaluator_by_type("nope", None, "ds", None)
    finally:
        EVALUATOR_TYPES.pop("segx_test_dummy")
