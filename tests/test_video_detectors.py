"""Tests of the video person detectors (registered in TASK_UTILS)."""

import numpy as np
import pytest
import torch

from tbps_mm.registry import TASK_UTILS
from tbps_mm.video import (
    BackgroundSubtractionDetector,
    MOTFileError,
    TorchvisionDetector,
    VideoFrame,
    read_mot_detections,
)


def test_mot_file_is_parsed_and_served_per_frame(tmp_path):
    dets = tmp_path / 'dets'
    dets.mkdir()
    (dets / 'cam1.txt').write_text(
        '# frame,id,x,y,w,h,score\n'
        '1,-1,10,20,30,60,0.9,-1,-1,-1\n'
        '1,-1,100,20,30,60,0.2\n'
        '3 -1 5 5 10 20 0.5\n'
    )
    frames = read_mot_detections(str(dets / 'cam1.txt'))
    assert sorted(frames) == [1, 3]
    np.testing.assert_allclose(frames[1][0][0], [10, 20, 40, 80])
    detector = TASK_UTILS.build(
        dict(type='MOTDetectionsFile', det_dir=str(dets), min_score=0.3)
    )
    detector.reset('/videos/cam1.mp4')
    image = np.zeros((90, 160, 3), np.uint8)
    boxes, scores = detector.detect(VideoFrame(0, 0.0, image))
    assert boxes.shape == (1, 4) and scores.tolist() == pytest.approx([0.9])
    assert detector.detect(VideoFrame(1, 0.1, image))[0].shape == (0, 4)
    assert detector.detect(VideoFrame(2, 0.2, image))[0].shape == (1, 4)
    with pytest.raises(FileNotFoundError, match='cam2.txt'):
        detector.reset('/videos/cam2.mp4')


@pytest.mark.parametrize(
    'row, field',
    [
        ('1,-1,10,20,30', None),  # too few fields
        ('x,-1,10,20,30,60,0.9', 'frame'),
        ('0,-1,10,20,30,60,0.9', 'frame'),
        ('1.5,-1,10,20,30,60,0.9', 'frame'),
        ('1,-1,10,nan,30,60,0.9', 'y'),
        ('1,-1,10,20,-3,60,0.9', 'w'),
        ('1,-1,10,20,30,0,0.9', 'h'),
        ('1,-1,10,20,30,60,1.5', 'score'),
    ],
)
def test_bad_rows_name_file_row_and_field(tmp_path, row, field):
    path = tmp_path / 'bad.txt'
    path.write_text('1,-1,1,1,5,5,0.5\n\n' + row + '\n')
    with pytest.raises(MOTFileError) as info:
        read_mot_detections(str(path))
    message = str(info.value)
    assert 'bad.txt' in message and 'row 3' in message
    if field is None:
        assert 'fields' in message
    else:
        assert f'field "{field}"' in message


def _scene(person_x: int) -> np.ndarray:
    rng = np.random.default_rng(0)
    image = np.full((120, 200, 3), 120, np.uint8)
    image += rng.integers(0, 4, image.shape, dtype=np.uint8)
    image[30:100, person_x : person_x + 20] = (200, 30, 30)  # a walking figure
    return image


def test_background_subtraction_finds_a_moving_person():
    detector = TASK_UTILS.build(
        dict(type='BackgroundSubtractionDetector', min_height=30, warmup=2)
    )
    assert isinstance(detector, BackgroundSubtractionDetector)
    detector.reset('video.mp4')
    background = np.full((120, 200, 3), 120, np.uint8)
    for i in range(5):
        assert detector.detect(VideoFrame(i, i / 10, background))[0].shape == (0, 4)
    found = None
    for i, x in enumerate(range(20, 120, 10)):
        boxes, scores = detector.detect(VideoFrame(5 + i, (5 + i) / 10, _scene(x)))
        found = (boxes, scores, x)
    boxes, scores, x = found
    assert boxes.shape == (1, 4)
    x1, y1, x2, y2 = boxes[0]
    assert abs(x1 - x) <= 4 and abs(x2 - (x + 20)) <= 4
    assert abs(y1 - 30) <= 4 and abs(y2 - 100) <= 4
    assert 0.5 < scores[0] <= 1.0
    # a fresh video starts a fresh background model
    detector.reset('other.mp4')
    assert detector.detect(VideoFrame(0, 0.0, _scene(50)))[0].shape == (0, 4)


def test_torchvision_detector_loads_local_weights_and_returns_boxes(tmp_path):
    kwargs = dict(box_score_thresh=0.0, min_size=128, max_size=160)
    torch.manual_seed(0)
    reference = TorchvisionDetector(
        'fasterrcnn_mobilenet_v3_large_320_fpn', num_classes=2, model_kwargs=kwargs
    )
    weights = tmp_path / 'person.pth'
    torch.save(reference.model.state_dict(), weights)
    detector = TASK_UTILS.build(
        dict(
            type='TorchvisionDetector',
            arch='fasterrcnn_mobilenet_v3_large_320_fpn',
            checkpoint=str(weights),
            num_classes=2,
            person_label=1,
            score_thr=0.0,
            model_kwargs=kwargs,
        )
    )
    for name, value in detector.model.state_dict().items():
        assert torch.equal(value, reference.model.state_dict()[name]), name
    image = np.random.default_rng(0).integers(0, 255, (120, 160, 3), dtype=np.uint8)
    boxes, scores = detector.detect(VideoFrame(0, 0.0, image))
    assert boxes.dtype == np.float32 and boxes.ndim == 2 and boxes.shape[1] == 4
    assert len(boxes) == len(scores) > 0  # a random model with no threshold
    assert np.all(boxes[:, 2] >= boxes[:, 0]) and np.all((scores >= 0) & (scores <= 1))
    assert detector.settings()['checkpoint_sha256']
    # weights of another architecture / class count are refused, named
    other = tmp_path / 'other.pth'
    torch.save({'backbone.body.0.weight': torch.zeros(1)}, other)
    with pytest.raises(ValueError, match='other.pth.*do not fit'):
        TorchvisionDetector(
            'fasterrcnn_mobilenet_v3_large_320_fpn', str(other), num_classes=2,
            model_kwargs=kwargs,
        )  # fmt: skip
    with pytest.raises(FileNotFoundError, match='missing.pth'):
        TorchvisionDetector(checkpoint=str(tmp_path / 'missing.pth'), num_classes=2)
    with pytest.raises(ValueError, match='arch must be one of'):
        TorchvisionDetector('yolo')
