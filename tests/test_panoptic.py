"""segx.modeling.panoptic: the parameter-free panoptic head (official and segx modes, hand-worked), its targets and
losses, instance selection, mask removal and the merge."""
import pytest
import torch

from segx.modeling.panoptic import (
    boxes_to_pixel_masks,
    mask_removal_keep,
    merge_panoptic_logits,
    panoptic_frame_boxes,
    paste_mask_logits,
    paste_mask_logits_official,
    thing_semantic_targets,
    upsnet_panoptic_logits,
    upsnet_panoptic_targets,
)


def _hand_case():
    # 1 stuff class, 2 thing classes, a 3x4 map.
    stuff = torch.full((3, 4), 0.5)
    thing0 = torch.tensor([[1.0, 2, 3, 4], [5, 6, 7, 8], [9, 10, 11, 12]])
    thing1 = torch.full((3, 4), 3.0)
    sem = torch.stack([stuff, thing0, thing1])
    boxes = torch.tensor([[0.0, 0.0, 2.0, 2.0], [1.0, 1.0, 4.0, 3.0]])  # cols 0-1 rows 0-1; cols 1-3 rows 1-2
    classes = torch.tensor([0, 1])
    mask_logits = torch.stack([torch.full((28, 28), 2.0), torch.full((28, 28), -1.0)])
    return sem, boxes, classes, mask_logits


def test_segx_mode_panoptic_logits_equal_hand_computed_values():
    sem, boxes, classes, mask_logits = _hand_case()
    out = upsnet_panoptic_logits(sem, 1, mask_logits, boxes, classes, with_unknown=True, mode="segx")
    assert out.shape == (4, 3, 4)  # stuff, 2 instances, unknown
    assert torch.equal(out[0], sem[0])
    # instance 0: thing-0 logits + 2 inside its box, 0 outside
    assert torch.equal(out[1], torch.tensor([[3.0, 4, 0, 0], [7, 8, 0, 0], [0, 0, 0, 0]]))
    # instance 1: thing-1 logits (3) - 1 inside its box, 0 outside
    assert torch.equal(out[2], torch.tensor([[0.0, 0, 0, 0], [0, 2, 2, 2], [0, 2, 2, 2]]))
    # unknown: max(thing0, thing1) - max(instance 0, instance 1)
    assert torch.equal(out[3], torch.tensor([[0.0, -1, 3, 4], [-2, -2, 5, 6], [9, 8, 9, 10]]))
    no_unknown = upsnet_panoptic_logits(sem, 1, mask_logits, boxes, classes, with_unknown=False, mode="segx")
    assert torch.equal(no_unknown, out[:3])


def test_segx_mode_unknown_channel_without_instances_is_max_thing_logit():
    sem, _, _, _ = _hand_case()
    out = upsnet_panoptic_logits(sem, 1, torch.zeros(0, 28, 28), torch.zeros(0, 4), torch.zeros(0, dtype=torch.long),
                                 mode="segx")
    assert out.shape == (2, 3, 4)
    assert torch.equal(out[1], torch.maximum(sem[1], sem[2]))


def test_segx_mode_one_instance_unknown_uses_its_own_logits_even_when_negative():
    sem, boxes, classes, mask_logits = _hand_case()
    out = upsnet_panoptic_logits(sem, 1, mask_logits[1:] - 10, boxes[1:], classes[1:], mode="segx")
    inside = boxes_to_pixel_masks(boxes[1:], 3, 4)[0].bool()
    # inside the box the instance logit is 3 - 11 = -8, so unknown = max thing logit + 8
    assert torch.equal(out[2][inside], (torch.maximum(sem[1], sem[2]) + 8)[inside])


def test_segx_mode_paste_mask_logits_maps_grid_onto_box_exactly():
    m = torch.tensor([[[1.0, 2.0], [3.0, 4.0]]])
    out = paste_mask_logits(m, torch.tensor([[1.0, 1.0, 3.0, 3.0]]), 4, 5)[0]
    expected = torch.zeros(4, 5)
    expected[1:3, 1:3] = m[0]
    assert torch.allclose(out, expected)


@pytest.mark.parametrize("mode", ["official", "segx"])
def test_gradient_reaches_semantic_and_mask_logits(mode):
    sem, boxes, classes, mask_logits = _hand_case()
    sem, mask_logits = sem.clone().requires_grad_(), mask_logits.clone().requires_grad_()
    out = upsnet_panoptic_logits(sem, 1, mask_logits, boxes, classes, mode=mode)
    torch.nn.functional.cross_entropy(out[None], torch.zeros(1, 3, 4, dtype=torch.long)).backward()
    assert sem.grad.abs().sum() > 0 and mask_logits.grad.abs().sum() > 0


# ---------------------------------------------------------------- official mode (uber-research/UPSNet SegTerm/MaskTerm)
def _official_hand_case():
    """1 stuff + 2 thing classes on a 4x6 frame; two instances in the official inclusive box convention."""
    stuff = torch.full((4, 6), 0.5)
    thing0 = torch.arange(1.0, 25.0).view(4, 6)  # row r, col c: 6r + c + 1
    thing1 = torch.full((4, 6), 3.0)
    sem = torch.stack([stuff, thing0, thing1])
    boxes = torch.tensor([
        # A: start (trunc) x 0, y 0; mask end (trunc) x 2, y 1 -> a 2x3 paste; semantic end (round, half to even)
        #    x round(2.5) = 2, y round(1.5) = 2
        [0.6, 0.2, 2.5, 1.5],
        # B: start x 3, y 2; mask end x 6, y 3 -> resized to 2x4, columns 3..5 visible (frame width 6); semantic end
        #    x round(6.7) = 7 -> clipped to 5, y round(3.5) = 4 -> clipped to 3
        [3.0, 2.5, 6.7, 3.5],
    ])
    classes = torch.tensor([0, 1])
    mask_logits = torch.tensor([[[1.0, 2.0], [3.0, 4.0]], [[0.0, 4.0], [8.0, 12.0]]])
    return sem, boxes, classes, mask_logits


def test_official_paste_resizes_to_the_truncated_span_and_writes_it():
    _, boxes, _, mask_logits = _official_hand_case()
    out = paste_mask_logits_official(mask_logits, boxes, 4, 6)
    # A: 2x2 -> 2 rows x 3 columns, bilinear align_corners=False: column sources -1/6 (clamped to 0), 1/2, 7/6
    # (clamped to 1) -> [c0, (c0 + c1) / 2, c1]
    a = torch.zeros(4, 6)
    a[0, :3] = torch.tensor([1.0, 1.5, 2.0])
    a[1, :3] = torch.tensor([3.0, 3.5, 4.0])
    # B: 2x2 -> 2 x 4, column sources -1/4 (0), 1/4, 3/4, 5/4 (1) -> [c0, .75c0 + .25c1, .25c0 + .75c1, c1]; the 4th
    # column (frame column 6) is outside the frame
    b = torch.zeros(4, 6)
    b[2, 3:] = torch.tensor([0.0, 1.0, 3.0])
    b[3, 3:] = torch.tensor([8.0, 9.0, 11.0])
    torch.testing.assert_close(out, torch.stack([a, b]), atol=1e-6, rtol=0)
    # a span of one pixel (trunc(4.9) = trunc(4.2)): the 2x2 logits resized to 1x1 = their mean, at (row 0, col 4)
    one = paste_mask_logits_official(mask_logits[:1], torch.tensor([[4.2, 0.0, 4.9, 0.9]]), 2, 6)[0]
    expected = torch.zeros(2, 6)
    expected[0, 4] = 2.5
    torch.testing.assert_close(one, expected, atol=1e-6, rtol=0)


def test_official_panoptic_logits_equal_hand_computed_values():
    sem, boxes, classes, mask_logits = _official_hand_case()
    out = upsnet_panoptic_logits(sem, 1, mask_logits, boxes, classes, with_unknown=True, mode="official")
    assert out.shape == (4, 4, 6)  # stuff, 2 instances, unknown
    assert torch.equal(out[0], sem[0])
    # A: thing-0 logits on rows 0..2, columns 0..2 (the semantic span) + the pasted mask on rows 0..1
    expected_a = torch.tensor([[2.0, 3.5, 5, 0, 0, 0], [10, 11.5, 13, 0, 0, 0], [13, 14, 15, 0, 0, 0],
                               [0, 0, 0, 0, 0, 0]])
    # B: thing-1 logit 3 on rows 2..3, columns 3..5 + its pasted mask
    expected_b = torch.tensor([[0.0, 0, 0, 0, 0, 0], [0, 0, 0, 0, 0, 0], [0, 0, 0, 3, 4, 6], [0, 0, 0, 11, 12, 14]])
    torch.testing.assert_close(out[1], expected_a, atol=1e-6, rtol=0)
    torch.testing.assert_close(out[2], expected_b, atol=1e-6, rtol=0)
    # unknown: max(thing0, thing1) - max(semantic term of A, of B) -- the mask logits do not enter it
    max_thing = torch.maximum(sem[1], sem[2])
    max_sem_term = torch.tensor([[1.0, 2, 3, 0, 0, 0], [7, 8, 9, 0, 0, 0], [13, 14, 15, 3, 3, 3], [0, 0, 0, 3, 3, 3]])
    assert torch.equal(out[3], max_thing - max_sem_term)
    assert torch.equal(out[3], torch.tensor([[2.0, 1, 0, 4, 5, 6], [0, 0, 0, 10, 11, 12], [0, 0, 0, 13, 14, 15],
                                             [19, 20, 21, 19, 20, 21]]))
    no_unknown = upsnet_panoptic_logits(sem, 1, mask_logits, boxes, classes, with_unknown=False, mode="official")
    assert torch.equal(no_unknown, out[:3])


def test_official_unknown_channel_without_instances_subtracts_minus_ten():
    sem, _, _, _ = _official_hand_case()
    out = upsnet_panoptic_logits(sem, 1, torch.zeros(0, 28, 28), torch.zeros(0, 4), torch.zeros(0, dtype=torch.long),
                                 mode="official")
    assert out.shape == (2, 4, 6)
    assert torch.equal(out[1], torch.maximum(sem[1], sem[2]) + 10)


def test_panoptic_frame_boxes_converts_to_the_official_inclusive_convention():
    d2 = torch.tensor([[4.0, 8.0, 20.0, 12.0]])  # continuous edges: columns 4..19, rows 8..11
    assert panoptic_frame_boxes(d2, 1, "official").tolist() == [[4.0, 8.0, 19.0, 11.0]]  # last pixel's index
    assert panoptic_frame_boxes(d2, 4, "official").tolist() == [[1.0, 2.0, 4.75, 2.75]]
    assert panoptic_frame_boxes(d2, 4, "segx").tolist() == [[1.0, 2.0, 5.0, 3.0]]
    # columns 4..19 of the input: the official paste covers exactly those 16 columns and rows 8..11
    span = paste_mask_logits_official(torch.ones(1, 2, 2), panoptic_frame_boxes(d2, 1, "official"), 16, 24)[0]
    assert span.nonzero()[:, 1].unique().tolist() == list(range(4, 20))
    assert span.nonzero()[:, 0].unique().tolist() == list(range(8, 12))
    with pytest.raises(ValueError, match="PANOPTIC_HEAD_MODE"):
        panoptic_frame_boxes(d2, 1, "nearest")


def test_targets_of_semantic_and_panoptic_heads():
    # separated labels: 0 = thing, 1..2 = stuff, 255 = unlabelled
    sem = torch.tensor([[1, 1, 0, 0], [2, 0, 0, 255], [2, 0, 0, 0]])
    masks = torch.zeros(2, 3, 4, dtype=torch.bool)
    masks[0, 0, 2:] = True
    masks[1, 1:, 1:3] = True  # one thing pixel (row 2, col 3) belongs to no instance
    classes = torch.tensor([3, 1])
    tsem = thing_semantic_targets(sem, masks, classes, num_stuff=2)
    assert torch.equal(tsem, torch.tensor([[0, 0, 5, 5], [1, 3, 3, 255], [1, 3, 3, 255]]))
    keep = torch.tensor([False, True])
    pan = upsnet_panoptic_targets(sem, masks, keep, num_stuff=2, with_unknown=True)
    # kept instance 1 -> channel 2 + 0; dropped instance 0 and the orphan thing pixel -> unknown (2 + 1)
    assert torch.equal(pan, torch.tensor([[0, 0, 3, 3], [1, 2, 2, 255], [1, 2, 2, 3]]))
    pan = upsnet_panoptic_targets(sem, masks, keep, num_stuff=2, with_unknown=False)
    assert torch.equal(pan, torch.tensor([[0, 0, 255, 255], [1, 2, 2, 255], [1, 2, 2, 255]]))


def test_mask_removal_drops_masks_mostly_under_higher_scored_ones():
    masks = torch.zeros(4, 10, 10, dtype=torch.bool)
    masks[0, :, :5] = True  # 50 px
    masks[1, :, 3:7] = True  # 40 px, 20 on mask 0 -> 0.5 > 0.3: removed
    masks[2, :, 4:9] = True  # 50 px, 10 on mask 0 -> 0.2: kept (the removed mask 1 does not count)
    # mask 3 is empty: removed
    assert mask_removal_keep(masks, 0.3).tolist() == [True, False, True, False]
    # official: only kept masks of the same class count (one occupancy map per class)
    assert mask_removal_keep(masks, 0.3, torch.tensor([0, 1, 0, 1])).tolist() == [True, True, True, False]
    assert mask_removal_keep(masks, 0.3, torch.tensor([2, 2, 2, 2])).tolist() == [True, False, True, False]
    masks[3, 0, :] = True  # 10 px: 9 on masks 0 and 2 (kept, class 1), 4 on mask 1 (kept, class 0)
    assert mask_removal_keep(masks, 0.3, torch.tensor([1, 0, 1, 1])).tolist() == [True, True, True, False]  # 0.9
    assert mask_removal_keep(masks, 0.3, torch.tensor([1, 0, 1, 0])).tolist() == [True, True, True, False]  # 0.4
    assert mask_removal_keep(masks, 0.3, torch.tensor([1, 0, 1, 2])).tolist() == [True, True, True, True]  # alone


def test_merge_gives_non_overlapping_segments_with_correct_segments_info():
    s, h, w = 2, 6, 8
    logits = torch.full((s + 3 + 1, h, w), -5.0)
    logits[0, :, :4] = 1  # stuff 0: left half
    logits[1, :, 4:] = 1  # stuff 1: right half
    logits[2, 1:3, 1:3] = 3  # instance 0 (class 2)
    logits[3, 2:5, 5:7] = 3  # instance 1 (class 0)
    logits[4, 0, 0] = 0.5  # instance 2 never wins: no segment
    logits[5, 5, 0] = 9  # unknown pixel -> 0
    classes, scores = torch.tensor([2, 0, 1]), torch.tensor([0.9, 0.8, 0.7])
    seg, info = merge_panoptic_logits(logits, s, classes, scores, stuff_area_limit=0)
    assert seg.dtype == torch.int32 and seg.shape == (h, w)
    by_id = {x["id"]: x for x in info}
    assert sorted(by_id) == list(range(1, len(info) + 1)) and len(info) == 4
    assert set(seg.unique().tolist()) == set(by_id) | {0}
    assert (seg == 0).sum() == 1 and seg[5, 0] == 0
    for x in info:
        assert x.get("area", int((seg == x["id"]).sum())) == int((seg == x["id"]).sum())
    things = sorted((x for x in info if x["isthing"]), key=lambda x: x["instance_id"])
    assert [(x["category_id"], x["instance_id"]) for x in things] == [(2, 0), (0, 1)]
    assert [round(x["score"], 3) for x in things] == [0.9, 0.8]
    assert (seg == things[0]["id"]).sum() == 4 and (seg == things[1]["id"]).sum() == 6
    stuff = sorted((x for x in info if not x["isthing"]), key=lambda x: x["category_id"])
    assert [x["category_id"] for x in stuff] == [1, 2]  # separated labels: channel + 1
    assert [x["area"] for x in stuff] == [4 * 6 - 4 - 1, 4 * 6 - 6]
    # a stuff area limit above the smaller stuff segment turns it into unlabelled pixels
    seg2, info2 = merge_panoptic_logits(logits, s, classes, scores, stuff_area_limit=19)
    assert [x["category_id"] for x in info2 if not x["isthing"]] == [1]
    assert (seg2 == 0).sum() == 1 + 18


def test_selection_thresholds_suppresses_across_classes_and_clips():
    from segx.modeling.panoptic import select_panoptic_instances

    # 3 proposals, 2 classes (+ background): per-class boxes [R, 2*4]
    boxes = torch.tensor([
        [0.0, 0.0, 10, 10, 1, 1, 11, 11],  # proposal 0: class 0 box, class 1 box (overlapping)
        [20.0, 20, 30, 30, 20, 20, 40, 40],  # proposal 1: class 1 box runs past the 32x32 image
        [0.0, 0.0, 5, 5, 0, 0, 5, 5],
    ])
    scores = torch.tensor([[0.9, 0.8, 0.0], [0.1, 0.7, 0.2], [0.3, 0.2, 0.5]])
    sel = select_panoptic_instances(boxes, scores, (32, 32), score_thresh=0.5, nms_thresh=0.5, topk=10)
    # (0, class 0) 0.9 wins over its overlapping (0, class 1) 0.8 (class-agnostic NMS); (1, class 1) 0.7 clipped
    assert sel.scores.tolist() == pytest.approx([0.9, 0.7])
    assert sel.pred_classes.tolist() == [0, 1]
    assert sel.pred_boxes.tensor.tolist() == [[0, 0, 10, 10], [20, 20, 32, 32]]
    assert len(select_panoptic_instances(boxes, scores, (32, 32), 0.5, 0.5, topk=1)) == 1


def test_kept_instances_draw_and_cross_entropy_of_all_ignored_pixels():
    import numpy as np

    from segx.modeling.panoptic import cross_entropy_with_ignore, sample_kept_instances

    np.random.seed(0)
    a = sample_kept_instances(10, 0.7)
    np.random.seed(0)
    assert torch.equal(a, sample_kept_instances(10, 0.7)) and int(a.sum()) == 7
    assert int(sample_kept_instances(1, 0.7).sum()) == 1 and bool(sample_kept_instances(3, 1.0).all())
    assert sample_kept_instances(0, 0.7).shape == (0,)
    logits = torch.randn(1, 3, 4, 4, requires_grad=True)
    loss = cross_entropy_with_ignore(logits, torch.full((1, 4, 4), 255), 255)
    loss.backward()
    assert float(loss) == 0 and logits.grad is not None


def test_roi_loss_samples_labels_inside_each_box():
    from segx.modeling.panoptic import sample_labels_in_boxes, semantic_roi_loss

    labels = torch.arange(16).view(1, 4, 4)
    rois = torch.tensor([[0.0, 2, 0, 4, 2]])  # columns 2-3, rows 0-1
    assert sample_labels_in_boxes(labels, rois, 2)[0].tolist() == [[2, 3], [6, 7]]
    sem_logits = torch.zeros(1, 2, 1, 1, requires_grad=True)
    empty = semantic_roi_loss(sem_logits, torch.zeros(1, 4, 4, dtype=torch.long), [torch.zeros(0, 4)], 2, 4, 255)
    assert float(empty) == 0 and empty.requires_grad
