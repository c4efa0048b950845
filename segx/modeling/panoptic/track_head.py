"""VPSNet's track head (Kim et al., CVPR 2020, §4.1 "Track"; MaskTrack R-CNN's head as the official code, mcahny/vps
``TrackHead`` and ``PanopticFuseTrack.simple_test_bboxes``, uses it); segx's code is its own.

* ``TrackHead``: RoI features (the box head's pooler output, ``[N,C,R,R]``) → fully connected layers → embeddings
  ``[N,D]``;
* ``track_affinity``: the affinity of each current instance with the M instances it is compared to, with a
  "new object" entry of 0 in front: ``[N, 1 + M]`` (entry ``1 + j`` = ``e_i · m_j``);
* ``track_targets`` / ``track_loss``: training on pairs of frames: each foreground proposal of the target frame must
  pick the reference frame's GT instance of the same identity (entry ``1 + j``), or "new" (0) when its identity is not
  in the reference; cross-entropy over the row, summed over the foreground proposals of an image and divided by
  their number (at least 1), averaged over the images;
* ``match_scores``: at inference, the score of matching current instance ``i`` with memory entry ``j`` (the paper's
  combination, official ``compute_comp_scores``): ``log softmax(affinity)_ij + c_s·log(score_i) + c_iou·IoU_ij +
  c_cls·[class_i = class_j]``, the "new" entry taking IoU ``dummy_iou`` and class agreement 1
  (official coefficients ``c_s, c_iou, c_cls = 1, 2, 10``);
* ``assign_tracks``: each instance, in order (by score), takes its best entry; "new" gives a new identity; when two
  instances pick the same memory entry the higher match score keeps it and the other becomes a new object (official);
* ``TrackMatcher``: the ``StreamState.matcher`` of VPSNet: matches a frame's instances against the stream's memory
  (``state.tracks``: every identity seen in the video with its last embedding, box and first class), gives
  ``track_ids`` and updates the memory (matched entries take the new embedding and box; new ones are appended).
"""
import torch
import torch.nn.functional as F
from torch import nn

from detectron2.structures import Boxes, Instances, pairwise_iou

_NO_MATCH = -100.0  # official best_match_scores start

__all__ = ["TrackHead", "track_affinity", "track_targets", "track_loss", "match_scores", "assign_tracks",
           "TrackMatcher"]


class TrackHead(nn.Module):
    """RoI features → track embeddings (official: 2 fully connected layers of 1024, ReLU between, weights N(0, 0.01)).

    Args:
        in_channels, pooler_resolution: the RoI features' C and R (the box head's pooler).
        num_fcs, fc_dim: the layers.
    Forward: ``[N,C,R,R]`` → ``[N, fc_dim]``.
    """

    def __init__(self, *, in_channels, pooler_resolution, num_fcs=2, fc_dim=1024):
        super().__init__()
        if num_fcs < 1:
            raise ValueError(f"TrackHead: NUM_FCS must be >= 1, got {num_fcs}")
        dims = [in_channels * pooler_resolution ** 2] + [fc_dim] * num_fcs
        self.fcs = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:]))
        for fc in self.fcs:
            nn.init.normal_(fc.weight, 0, 0.01)
            nn.init.zeros_(fc.bias)
        self.embedding_dim = fc_dim

    def forward(self, roi_features):
        x = roi_features.flatten(1)
        for i, fc in enumerate(self.fcs):
            x = fc(x)
            if i < len(self.fcs) - 1:
                x = F.relu(x)
        return x


def track_affinity(embeddings, memory_embeddings):
    """``[N,D]``, ``[M,D]`` → ``[N, 1 + M]``: 0 ("new object") then the dot products."""
    prod = embeddings @ memory_embeddings.t()
    return torch.cat([prod.new_zeros((prod.shape[0], 1)), prod], dim=1)


def track_targets(ids, reference_ids):
    """``[N]`` identities of the current instances, ``[M]`` of the reference's → ``[N]`` long: ``1 + j`` where
    ``reference_ids[j] == ids[i]``, 0 when the identity is not in the reference."""
    if reference_ids.numel() == 0 or ids.numel() == 0:
        return torch.zeros(ids.shape[0], dtype=torch.long, device=ids.device)
    eq = ids[:, None] == reference_ids[None, :]
    return torch.where(eq.any(1), eq.float().argmax(1) + 1, torch.zeros_like(ids)).long()


def track_loss(affinities, targets):
    """Mean over images of (Σ over an image's rows of the cross-entropy of ``affinities[b]`` ``[N_b, 1 + M_b]`` with
    ``targets[b]`` ``[N_b]``) / max(N_b, 1); 0 with a graph when no image has a row."""
    losses = []
    for aff, tgt in zip(affinities, targets):
        if aff.shape[0] == 0:
            losses.append(aff.sum() * 0.0)
            continue
        losses.append(F.cross_entropy(aff, tgt, reduction="sum") / aff.shape[0])
    return torch.stack(losses).mean()


def match_scores(affinity, scores, ious, same_class, coefficients=(1.0, 2.0, 10.0), dummy_iou=0.0):
    """Match scores ``[N, 1 + M]`` (module docstring) from the affinity ``[N, 1 + M]``, the instances' scores ``[N]``,
    box IoUs ``[N, M]`` and class agreement ``[N, M]`` (bool or float) with the memory. ``coefficients`` None: the
    log-probabilities alone."""
    logp = F.log_softmax(affinity, dim=1)
    if coefficients is None:
        return logp
    c_score, c_iou, c_class = coefficients
    ious = torch.cat([ious.new_full((ious.shape[0], 1), float(dummy_iou)), ious], dim=1)
    same = torch.cat([same_class.new_ones((same_class.shape[0], 1)), same_class], dim=1).to(logp.dtype)
    return logp + c_score * torch.log(scores)[:, None] + c_iou * ious.to(logp.dtype) + c_class * same


def assign_tracks(scores):
    """Greedy assignment of ``scores`` ``[N, 1 + M]`` (rows in instance order): ``[N]`` long, the memory entry each
    instance takes (``0..M-1``) or -1 (a new object): each row's argmax; column 0 → new; a memory entry picked by
    several rows goes to the row with the highest score (the others become new objects); a score must exceed -100
    (the official floor) to take an entry."""
    best, choice = scores.max(dim=1)
    out = torch.full((scores.shape[0],), -1, dtype=torch.long)
    holder = {}  # memory entry -> (row, score); a first pick must beat the official floor of -100
    for i, (c, s) in enumerate(zip(choice.tolist(), best.tolist())):
        if c == 0:
            continue
        j = c - 1
        if s > holder.get(j, (None, _NO_MATCH))[1]:
            if j in holder:
                out[holder[j][0]] = -1
            holder[j] = (i, s)
            out[i] = j
    return out.to(scores.device)


class TrackMatcher:
    """``StreamState.matcher`` (``segx.modeling.meta_arch.base``): gives a frame's instances (``pred_boxes``,
    ``scores``, ``pred_classes``, ``track_embeddings``, in score order) ``track_ids`` against ``state.tracks`` and
    updates it (module docstring). The memory is per stream: ``state.reset()`` empties it."""

    def __init__(self, coefficients=(1.0, 2.0, 10.0), dummy_iou=0.0):
        self.coefficients = None if coefficients is None else tuple(float(c) for c in coefficients)
        self.dummy_iou = float(dummy_iou)

    def scores(self, instances, memory):
        """Match scores ``[N, 1 + M]`` of ``instances`` against ``memory``."""
        affinity = track_affinity(instances.track_embeddings, memory.track_embeddings)
        ious = pairwise_iou(instances.pred_boxes, memory.pred_boxes)
        same = instances.pred_classes[:, None] == memory.pred_classes[None, :]
        return match_scores(affinity, instances.scores, ious, same, self.coefficients, self.dummy_iou)

    def __call__(self, state, instances):
        n = len(instances)
        device = instances.scores.device
        memory = state.tracks
        if memory is None or len(memory) == 0:
            instances.track_ids = state.new_track_ids(n, device)
            if n:
                state.tracks = self._entries(instances, instances.track_ids)
            return instances
        if n == 0:
            instances.track_ids = torch.zeros(0, dtype=torch.long, device=device)
            return instances
        entry = assign_tracks(self.scores(instances, memory))
        matched = entry >= 0
        ids = torch.empty(n, dtype=torch.long, device=device)
        ids[matched] = memory.track_ids[entry[matched]]
        ids[~matched] = state.new_track_ids(int((~matched).sum()), device)
        instances.track_ids = ids
        # matched entries take the new embedding and box (not the class: official); new identities are appended
        memory.track_embeddings[entry[matched]] = instances.track_embeddings[matched].detach()
        memory.pred_boxes.tensor[entry[matched]] = instances.pred_boxes.tensor[matched].detach()
        if (~matched).any():
            state.tracks = Instances.cat([memory, self._entries(instances[~matched], ids[~matched])])
        return instances

    @staticmethod
    def _entries(instances, ids):
        out = Instances(instances.image_size)
        out.track_ids = ids.clone()
        out.track_embeddings = instances.track_embeddings.detach().clone()
        out.pred_boxes = Boxes(instances.pred_boxes.tensor.detach().clone())
        out.pred_classes = instances.pred_classes.clone()
        return out
