"""A user's own torchvision detection model, loaded from a local weights file.

Builds one of torchvision's detection architectures with ``weights=None``
(nothing is downloaded) and loads the user's weights from a local file
*weights-only*: a ``.safetensors`` file or a state dict that
``torch.load(weights_only=True)`` reads. A checkpoint that does not fit the
architecture is an error naming the file and the mismatched keys. The model
runs on each sampled frame; boxes of the person class above ``score_thr``
are the detections.

Written on torchvision's detection models; only the loading and filtering
are ours.

Example:
    >>> detector = TorchvisionDetector(
    ...     'fasterrcnn_mobilenet_v3_large_fpn', 'person_detector.pth')
    >>> detector.reset('cam1.mp4')
    >>> boxes, scores = detector.detect(frame)
"""

import hashlib
import os.path as osp
from typing import Optional, Tuple

import numpy as np
import torch

from tbps_mm.registry import TASK_UTILS

from ..decoding import VideoFrame
from .base import BaseVideoDetector

__all__ = ['TorchvisionDetector', 'ARCHITECTURES']

#: The torchvision builders this detector accepts.
ARCHITECTURES = (
    'fasterrcnn_mobilenet_v3_large_fpn',
    'fasterrcnn_mobilenet_v3_large_320_fpn',
    'fasterrcnn_resnet50_fpn',
    'fasterrcnn_resnet50_fpn_v2',
    'retinanet_resnet50_fpn',
    'fcos_resnet50_fpn',
    'ssdlite320_mobilenet_v3_large',
    'ssd300_vgg16',
)


def _load_state_dict(path: str) -> dict:
    if not osp.isfile(path):
        raise FileNotFoundError(f'detector weights "{path}" do not exist')
    if path.endswith('.safetensors'):
        from safetensors.torch import load_file

        return load_file(path)
    try:
        state = torch.load(path, map_location='cpu', weights_only=True)
    except Exception as err:  # noqa: BLE001 - name the file and why
        raise ValueError(
            f'detector weights "{path}" cannot be read weights-only '
            f'({type(err).__name__}: {err}); save a state_dict '
            '(torch.save(model.state_dict(), path)) or a .safetensors file'
        ) from err
    if isinstance(state, dict) and 'state_dict' in state:
        state = state['state_dict']
    if not isinstance(state, dict):
        raise ValueError(f'detector weights "{path}" hold no state dict')
    return state


@TASK_UTILS.register_module()
class TorchvisionDetector(BaseVideoDetector):
    """A torchvision detection model with the user's weights.

    Args:
        arch (str): A torchvision builder name (see :data:`ARCHITECTURES`).
        checkpoint (str, optional): Local weights file (``.safetensors`` or a
            ``torch.save``'d state dict). None keeps the random
            initialisation (only useful to test the plumbing).
        num_classes (int): Classes of the model, background included
            (91 for COCO-trained torchvision weights). Defaults to 91.
        person_label (int): The class index of people (1 in COCO's
            torchvision labels). Defaults to 1.
        score_thr (float): Smallest score kept. Defaults to 0.3.
        device (str): Torch device. Defaults to ``'cpu'``.
        model_kwargs (dict, optional): Extra builder arguments (for example
            ``box_score_thresh`` or ``min_size``).

    Raises:
        ValueError: An unknown architecture, or weights that do not fit it
            (the mismatched keys named).

    Example:
        >>> TorchvisionDetector('ssdlite320_mobilenet_v3_large',
        ...                     'ssdlite_person.pth', num_classes=2)
    """

    def __init__(
        self,
        arch: str = 'fasterrcnn_mobilenet_v3_large_fpn',
        checkpoint: Optional[str] = None,
        num_classes: int = 91,
        person_label: int = 1,
        score_thr: float = 0.3,
        device: str = 'cpu',
        model_kwargs: Optional[dict] = None,
    ) -> None:
        import torchvision.models.detection as detection

        if arch not in ARCHITECTURES:
            raise ValueError(f'arch must be one of {ARCHITECTURES}, got {arch!r}')
        kwargs = dict(model_kwargs or {})
        self.model = getattr(detection, arch)(
            weights=None, weights_backbone=None, num_classes=num_classes, **kwargs
        )
        self.checkpoint_sha256 = None
        if checkpoint is not None:
            state = _load_state_dict(checkpoint)
            result = self.model.load_state_dict(state, strict=False)
            if result.missing_keys or result.unexpected_keys:
                raise ValueError(
                    f'detector weights "{checkpoint}" do not fit {arch} with '
                    f'{num_classes} classes: missing {result.missing_keys[:5]}'
                    f'{"..." if len(result.missing_keys) > 5 else ""}, unexpected '
                    f'{result.unexpected_keys[:5]}'
                    f'{"..." if len(result.unexpected_keys) > 5 else ""}'
                )
            with open(checkpoint, 'rb') as f:
                self.checkpoint_sha256 = hashlib.sha256(f.read()).hexdigest()
        self.device = torch.device(device)
        self.model.to(self.device).eval()
        self.arch = arch
        self.num_classes = int(num_classes)
        self.person_label = int(person_label)
        self.score_thr = float(score_thr)
        self.model_kwargs = kwargs

    @torch.no_grad()
    def detect(self, frame: VideoFrame) -> Tuple[np.ndarray, np.ndarray]:
        image = torch.from_numpy(np.ascontiguousarray(frame.image)).to(self.device)
        image = image.permute(2, 0, 1).float().div_(255.0)
        out = self.model([image])[0]
        keep = (out['labels'] == self.person_label) & (out['scores'] >= self.score_thr)
        boxes = out['boxes'][keep].float().cpu().numpy().astype(np.float32)
        scores = out['scores'][keep].float().cpu().numpy().astype(np.float32)
        return boxes.reshape(-1, 4), np.clip(scores, 0.0, 1.0)

    def settings(self) -> dict:
        return dict(
            type=type(self).__name__,
            arch=self.arch,
            checkpoint_sha256=self.checkpoint_sha256,
            num_classes=self.num_classes,
            person_label=self.person_label,
            score_thr=self.score_thr,
            model_kwargs=self.model_kwargs,
        )
