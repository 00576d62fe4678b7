"""Detection AP and tracking IDF1 / MOTA on MOTChallenge-style ground truth.

- :func:`detection_average_precision`: AP at one IoU threshold (VOC style:
  greedy matching in score order, all-point interpolated precision-recall
  area). Tie-safe: the precision-recall curve is only read at the end of
  each group of equal scores, so the order of tied detections cannot change
  the number (a detector that scores everything alike gets the precision of
  its whole output, never better).
- :func:`tracking_metrics`: IDF1, MOTA, identity switches, precision and
  recall from ``motmetrics`` (its ``MOTAccumulator`` and metric host); the
  IoU distance matrix is computed here, because ``motmetrics`` 1.4's own
  ``iou_matrix`` calls ``np.asfarray``, which NumPy 2 removed.

Ground-truth boxes less visible than ``min_visibility`` are *ignore*
regions, as in MOTChallenge: a detection or track box that matches only such
a box is neither a hit nor a false positive.

Example:
    >>> ap = detection_average_precision(gt, dets, iou_thr=0.5)
    >>> metrics = tracking_metrics({'cam1': (gt, hyp)})
"""

from typing import Dict, Sequence, Tuple

import numpy as np

__all__ = ['box_iou', 'detection_average_precision', 'tracking_metrics']

#: One frame's boxes: frame -> (N, 4) xyxy (and optionally ids / scores).
FrameBoxes = Dict[int, np.ndarray]


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise IoU of xyxy boxes.

    Args:
        a (np.ndarray): (N, 4).
        b (np.ndarray): (M, 4).

    Returns:
        np.ndarray: (N, M) float64.

    Example:
        >>> box_iou(np.array([[0, 0, 2, 2]]), np.array([[1, 0, 3, 2]]))
        array([[0.33333333]])
    """
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    x1 = np.maximum(a[:, None, 0], b[None, :, 0])
    y1 = np.maximum(a[:, None, 1], b[None, :, 1])
    x2 = np.minimum(a[:, None, 2], b[None, :, 2])
    y2 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(x2 - x1, 0, None) * np.clip(y2 - y1, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    union = area_a[:, None] + area_b[None, :] - inter
    return np.where(union > 0, inter / np.maximum(union, 1e-12), 0.0)


def _split_gt(gt: Dict, frame: int, min_visibility: float):
    boxes, ids, vis = gt.get(frame, (np.zeros((0, 4)), np.zeros(0), np.zeros(0)))
    keep = np.asarray(vis) >= min_visibility
    return boxes[keep], ids[keep], boxes[~keep]


def detection_average_precision(
    gt: Dict[int, Tuple[np.ndarray, np.ndarray, np.ndarray]],
    detections: Dict[int, Tuple[np.ndarray, np.ndarray]],
    iou_thr: float = 0.5,
    min_visibility: float = 0.25,
) -> Dict[str, float]:
    """Average precision of person detections over the frames of ``gt``.

    Args:
        gt (dict): frame -> ``(boxes (N, 4) xyxy, ids (N,), visibility (N,))``.
            Frames absent from ``gt`` but present in ``detections`` count as
            frames with no person.
        detections (dict): frame -> ``(boxes (M, 4) xyxy, scores (M,))``.
        iou_thr (float): IoU for a hit. Defaults to 0.5.
        min_visibility (float): Less visible ground truth is ignored.
            Defaults to 0.25.

    Returns:
        dict: ``ap`` (0-1), ``recall`` (at the lowest score), ``precision``
        (of all detections), ``num_gt``, ``num_det`` (ignored ones left out).
        With no ground-truth box AP is NaN (undefined), never 1.

    Example:
        >>> gt = {1: (np.array([[0, 0, 10, 20]]), np.array([1]), np.array([1.]))}
        >>> detection_average_precision(gt, {1: (np.array([[0, 0, 10, 20]]),
        ...                                      np.array([.9]))})['ap']
        1.0
    """
    records = []  # (score, is_hit) of every non-ignored detection
    num_gt = 0
    for frame in sorted(set(gt) | set(detections)):
        gt_boxes, _, ignored = _split_gt(gt, frame, min_visibility)
        num_gt += len(gt_boxes)
        boxes, scores = detections.get(frame, (np.zeros((0, 4)), np.zeros(0)))
        if not len(boxes):
            continue
        order = np.argsort(-np.asarray(scores), kind='stable')
        iou = box_iou(boxes, gt_boxes)
        iou_ignored = box_iou(boxes, ignored)
        taken = np.zeros(len(gt_boxes), bool)
        # equal scores: the detection with the best overlap claims first
        best = iou.max(1) if iou.size else np.zeros(len(boxes))
        order = sorted(order, key=lambda i: (-scores[i], -best[i]))
        for i in order:
            candidates = np.where(~taken & (iou[i] >= iou_thr))[0] if iou.size else []
            if len(candidates):
                j = candidates[np.argmax(iou[i, candidates])]
                taken[j] = True
                records.append((float(scores[i]), True))
            elif iou_ignored.size and iou_ignored[i].max() >= iou_thr:
                continue  # matches a barely visible person: ignored
            else:
                records.append((float(scores[i]), False))
    num_det = len(records)
    if num_gt == 0:
        return dict(
            ap=float('nan'),
            recall=float('nan'),
            precision=float('nan'),
            num_gt=0,
            num_det=num_det,
        )
    if not records:
        return dict(ap=0.0, recall=0.0, precision=0.0, num_gt=num_gt, num_det=0)
    scores = np.array([s for s, _ in records])
    hits = np.array([h for _, h in records], dtype=np.float64)
    order = np.argsort(-scores, kind='stable')
    scores, hits = scores[order], hits[order]
    tp = np.cumsum(hits)
    # read the curve only at the last detection of each group of equal scores
    ends = np.r_[np.nonzero(np.diff(scores))[0], len(scores) - 1]
    recall = tp[ends] / num_gt
    precision = tp[ends] / (ends + 1)
    # all-point interpolation: precision envelope, area over recall steps
    envelope = np.maximum.accumulate(precision[::-1])[::-1]
    steps = np.diff(np.r_[0.0, recall])
    ap = float(np.sum(steps * envelope))
    return dict(
        ap=ap,
        recall=float(recall[-1]),
        precision=float(tp[-1] / len(hits)),
        num_gt=int(num_gt),
        num_det=int(num_det),
    )


def tracking_metrics(
    sequences: Dict[str, Tuple[Dict, Dict]],
    iou_thr: float = 0.5,
    min_visibility: float = 0.25,
    frames: Dict[str, Sequence[int]] = None,
) -> Dict[str, Dict[str, float]]:
    """IDF1, MOTA and friends per sequence and overall, with ``motmetrics``.

    Args:
        sequences (dict): name -> ``(gt, hyp)``; ``gt`` as in
            :func:`detection_average_precision`, ``hyp`` frame ->
            ``(boxes (M, 4) xyxy, track ids (M,))``.
        iou_thr (float): Smallest IoU of a match. Defaults to 0.5.
        min_visibility (float): Less visible ground truth is ignored (and
            track boxes that only match it are dropped). Defaults to 0.25.
        frames (dict, optional): name -> the frames evaluated (e.g. the
            sampled ones); defaults to every frame of ``gt`` and ``hyp``.

    Returns:
        dict: name (and ``'overall'``) -> ``idf1``, ``mota``,
        ``num_switches``, ``precision``, ``recall``, ``num_objects``.

    Example:
        >>> tracking_metrics({'cam1': (gt, hyp)})['overall']['idf1']
    """
    import motmetrics as mm

    accumulators, names = [], []
    for name, (gt, hyp) in sequences.items():
        acc = mm.MOTAccumulator(auto_id=False)
        wanted = frames.get(name) if frames else None
        for frame in sorted(wanted if wanted is not None else set(gt) | set(hyp)):
            gt_boxes, gt_ids, ignored = _split_gt(gt, frame, min_visibility)
            boxes, ids = hyp.get(frame, (np.zeros((0, 4)), np.zeros(0)))
            boxes = np.asarray(boxes).reshape(-1, 4)
            if len(boxes) and len(ignored):
                iou = box_iou(boxes, gt_boxes)
                only_ignored = (box_iou(boxes, ignored).max(1) >= iou_thr) & (
                    (iou.max(1) if iou.size else np.zeros(len(boxes))) < iou_thr
                )
                boxes, ids = boxes[~only_ignored], np.asarray(ids)[~only_ignored]
            iou = box_iou(gt_boxes, boxes)
            dist = np.where(iou >= iou_thr, 1.0 - iou, np.nan)
            acc.update(
                [int(i) for i in gt_ids], [int(i) for i in ids], dist, frameid=frame
            )
        accumulators.append(acc)
        names.append(name)
    host = mm.metrics.create()
    wanted_metrics = [
        'idf1',
        'mota',
        'num_switches',
        'precision',
        'recall',
        'num_objects',
    ]
    summary = host.compute_many(
        accumulators, names=names, metrics=wanted_metrics, generate_overall=True
    )
    out = {}
    for row_name, row in summary.iterrows():
        key = 'overall' if row_name == 'OVERALL' else row_name
        out[key] = {m: float(row[m]) for m in wanted_metrics}
    return out
