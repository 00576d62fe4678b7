"""Tests of detection AP and the motmetrics-backed tracking metrics."""

import math

import numpy as np
import pytest

from tbps_mm.evaluation.video_metrics import (
    box_iou,
    detection_average_precision,
    tracking_metrics,
)


def _gt(*boxes, vis=None):
    boxes = np.array(boxes, float)
    vis = np.ones(len(boxes)) if vis is None else np.asarray(vis, float)
    return boxes, np.arange(1, len(boxes) + 1), vis


def test_iou():
    assert box_iou([[0, 0, 2, 2]], [[1, 0, 3, 2]])[0, 0] == pytest.approx(1 / 3)
    assert box_iou([[0, 0, 1, 1]], [[2, 2, 3, 3]])[0, 0] == 0
    assert box_iou(np.zeros((0, 4)), [[0, 0, 1, 1]]).shape == (0, 1)


def test_ap_perfect_partial_and_tie_safe():
    gt = {1: _gt([0, 0, 10, 20], [50, 0, 60, 20])}
    perfect = {1: (np.array([[0, 0, 10, 20], [50, 0, 60, 20]]), np.array([0.9, 0.8]))}
    assert detection_average_precision(gt, perfect)['ap'] == pytest.approx(1.0)
    # a false positive scored above both hits
    fp_first = {
        1: (
            np.array([[100, 0, 110, 20], [0, 0, 10, 20], [50, 0, 60, 20]]),
            np.array([0.95, 0.9, 0.8]),
        )
    }
    assert detection_average_precision(gt, fp_first)['ap'] == pytest.approx(2 / 3)
    # the same three boxes all scored alike: the order of ties must not help
    tied = {1: (fp_first[1][0], np.array([0.5, 0.5, 0.5]))}
    result = detection_average_precision(gt, tied)
    assert result['ap'] == pytest.approx(2 / 3)
    tied_reversed = {1: (fp_first[1][0][::-1].copy(), np.array([0.5, 0.5, 0.5]))}
    assert detection_average_precision(gt, tied_reversed)['ap'] == result['ap']
    # no detections: AP 0; no ground truth: undefined (NaN), never 1
    assert detection_average_precision(gt, {})['ap'] == 0.0
    assert math.isnan(detection_average_precision({}, perfect)['ap'])


def test_ap_ignores_barely_visible_people():
    gt = {1: _gt([0, 0, 10, 20], [50, 0, 60, 20], vis=[1.0, 0.1])}
    dets = {1: (np.array([[0, 0, 10, 20], [50, 0, 60, 20]]), np.array([0.9, 0.8]))}
    result = detection_average_precision(gt, dets)
    assert result['num_gt'] == 1 and result['num_det'] == 1
    assert result['ap'] == pytest.approx(1.0)


def test_tracking_metrics_count_an_identity_switch():
    gt = {f: _gt([0 + f, 0, 10 + f, 20], [50, 0, 60, 20]) for f in range(1, 5)}
    same = {f: (gt[f][0], np.array([7, 8])) for f in gt}
    switched = {f: (gt[f][0], np.array([7, 8] if f < 3 else [8, 7])) for f in gt}
    out = tracking_metrics({'a': (gt, same), 'b': (gt, switched)})
    assert out['a']['idf1'] == pytest.approx(1.0) and out['a']['mota'] == 1.0
    assert out['b']['num_switches'] == 2 and out['b']['idf1'] < 1.0
    assert out['overall']['num_objects'] == 16
    missed = tracking_metrics({'c': (gt, {})})['c']
    assert missed['recall'] == 0.0 and missed['mota'] == 0.0
