"""Deployment: export the two encoders to ONNX and run them on onnxruntime."""

from .export_wrappers import ImageEncoderForExport, TextEncoderForExport
from .onnx_encoder import ONNXRuntimeEncoder, read_deploy_meta
from .onnx_export import DEPLOY_META_FILE, export_onnx, image_size_from_config
from .onnx_parity import check_onnx_parity

__all__ = [
    'ImageEncoderForExport',
    'TextEncoderForExport',
    'ONNXRuntimeEncoder',
    'read_deploy_meta',
    'export_onnx',
    'image_size_from_config',
    'check_onnx_parity',
    'DEPLOY_META_FILE',
]
