"""Deployment: the encoder backends (the model in PyTorch; its two encoders
exported to ONNX and run on onnxruntime), the export and their parity check."""

from .export_wrappers import ImageEncoderForExport, TextEncoderForExport
from .onnx_encoder import ONNXRuntimeEncoder, read_deploy_meta
from .onnx_export import DEPLOY_META_FILE, export_onnx, image_size_from_config
from .onnx_parity import check_onnx_parity
from .torch_encoder import PyTorchEncoder

__all__ = [
    'ImageEncoderForExport',
    'TextEncoderForExport',
    'ONNXRuntimeEncoder',
    'PyTorchEncoder',
    'read_deploy_meta',
    'export_onnx',
    'image_size_from_config',
    'check_onnx_parity',
    'DEPLOY_META_FILE',
]
