"""``TBPSRetriever``: the text-based person search model.

Composes an image encoder (any MMPretrain backbone), a text encoder (a
transformers model wrapped in ``tbps_mm.models.text_encoders``), a head that
turns each modality's tokens into a coarse embedding and K part embeddings
(``PartQueryDecoderHead``) and a dict of named losses, behind MMEngine's
``BaseModel`` interface (``loss`` / ``predict`` / ``tensor`` modes; see
docs/data_flow.md sections 3 and 4 for the exact inputs and outputs).

At test time a caption and an image are compared with
``s = s_coarse + fusion_weight * mean_k s_k`` over L2-normalised embeddings,
so a gallery is encoded once and every score is a dot product.

The model also checks checkpoints: any ``load_state_dict`` into it (torch's,
MMEngine's ``load_from`` or ``init_cfg``) raises an error naming every
parameter whose shape does not fit (e.g. an ID classifier trained with a
different identity count) instead of silently keeping random weights.
"""

from typing import Dict, List, Optional, Union

import torch
import torch.nn.functional as F
from mmengine.model import BaseModel
from mmpretrain.structures import DataSample
from torch import Tensor, nn

from tbps_mm.fused_score import fused_similarity, fused_vector
from tbps_mm.registry import MODELS

from ..checkpoint import install_shape_check

LOSS_INPUTS = ('embed', 'part_embeds', 'attn', 'fused_embed')
IMAGE_TOKENS = ('patch', 'all')
IMAGE_POOLINGS = ('cls', 'mean')
IMAGE_TOKEN_MAPS = ('last', 'concat', 'first')
# Image encoder outputs that keep no token features (the decoder needs them).
POOLED_OUT_TYPES = ('cls_token', 'avg_featmap')


def _build(cfg: Union[dict, nn.Module]) -> nn.Module:
    return cfg if isinstance(cfg, nn.Module) else MODELS.build(cfg)


@MODELS.register_module()
class TBPSRetriever(BaseModel):
    """Image encoder + text encoder + shared part-query head + losses.

    Args:
        image_encoder (dict | nn.Module): Any MMPretrain backbone config,
            built through tbps_mm's registry (``type='VisionTransformer'``
            with ``out_type='raw'``, ``type='mmpretrain.ResNet'``, ...). A ViT
            gives (B, 1 + N, C): its CLS token is the pooled feature and its
            patch tokens the tokens; a CNN gives (B, C, H, W): its flattened
            map is the tokens and their mean the pooled feature.
        text_encoder (dict | nn.Module): A tbps_mm text encoder config
            (``CLIPTextEncoder``, ``BertTextEncoder``, ``HFTextEncoder``).
        head (dict | nn.Module): The head config (``PartQueryDecoderHead``).
        losses (dict, optional): Name -> loss config. The name gives the key
            of the loss (``'sdm'`` -> ``loss_sdm``); each loss's
            ``input_key`` says which head output it takes; an entry set to
            None is skipped. None: no losses (inference only).
        fusion_weight (float): lambda in ``s = s_coarse + lambda * mean_k
            s_k``. Defaults to 1.0.
        image_tokens (str): For ViT-like encoders, which tokens the decoder
            sees: ``'patch'`` (the patch grid, so attention maps reshape to an
            image) or ``'all'`` (CLS too). Defaults to ``'patch'``.
        image_pooling (str): For ViT-like encoders, the pooled feature the
            coarse embedding is projected from: ``'cls'`` (the CLS token, as
            CLIP) or ``'mean'`` (the mean patch token; from scratch, the CLS
            token of a random ViT barely depends on the image and coarse
            training collapses, while the mean patch token carries the
            image's content from the first step). Defaults to ``'cls'``.
        image_token_maps (str): For CNN encoders returning several maps
            (``out_indices`` with several stages): ``'last'`` (the last map
            gives the tokens and the pooled feature) or ``'concat'`` (the
            tokens are the cells of the first, finest map with every later
            map upsampled to its grid (nearest) and concatenated along the
            channels, so the part queries see a finer grid that still
            carries the last stage's features; the pooled feature stays the
            last map's mean) or ``'first'`` (the tokens are the cells of
            the first, finest map alone, so the part queries read
            features whose receptive field stays near their part; the
            pooled feature stays the last map's mean). Defaults to
            ``'last'``.
        channels_last (bool): Keep a convolutional image encoder and its
            input in channels-last memory layout, in which oneDNN runs
            convolutions faster on CPU; outputs are the same. Defaults to
            False.
        data_preprocessor (dict | nn.Module, optional): Defaults to
            ``dict(type='TBPSDataPreprocessor')``.
        init_cfg (dict, optional): MMEngine init config.

    Example:
        >>> model = MODELS.build(dict(
        ...     type='TBPSRetriever',
        ...     image_encoder=dict(type='VisionTransformer', arch=dict(
        ...         embed_dims=64, num_layers=2, num_heads=4,
        ...         feedforward_channels=128), img_size=(96, 32),
        ...         patch_size=16, out_type='raw'),
        ...     text_encoder=dict(type='BertTextEncoder', config=dict(
        ...         vocab_size=100, hidden_size=32, num_hidden_layers=1,
        ...         num_attention_heads=4, intermediate_size=64)),
        ...     head=dict(type='PartQueryDecoderHead', image_in_channels=64,
        ...               text_in_channels=32, embed_dims=32, num_parts=4,
        ...               decoder_dims=32, num_heads=4),
        ...     losses=dict(sdm=dict(type='SDMLoss'))))
        >>> model.encode_image(torch.rand(2, 3, 96, 32))['part_embeds'].shape
        torch.Size([2, 4, 32])
    """

    def __init__(
        self,
        image_encoder: Union[dict, nn.Module],
        text_encoder: Union[dict, nn.Module],
        head: Union[dict, nn.Module],
        losses: Optional[dict] = None,
        fusion_weight: float = 1.0,
        image_tokens: str = 'patch',
        image_pooling: str = 'cls',
        image_token_maps: str = 'last',
        channels_last: bool = False,
        data_preprocessor: Optional[Union[dict, nn.Module]] = None,
        init_cfg: Optional[dict] = None,
    ) -> None:
        if data_preprocessor is None:
            data_preprocessor = dict(type='TBPSDataPreprocessor')
        # Built here so that tbps_mm's registry resolves the type whatever
        # the default scope (BaseModel would use MMEngine's root registry).
        super().__init__(data_preprocessor=_build(data_preprocessor), init_cfg=init_cfg)
        if image_tokens not in IMAGE_TOKENS:
            raise ValueError(
                f'image_tokens must be one of {IMAGE_TOKENS}, got {image_tokens!r}'
            )
        self.image_tokens = image_tokens
        if image_pooling not in IMAGE_POOLINGS:
            raise ValueError(
                f'image_pooling must be one of {IMAGE_POOLINGS}, got {image_pooling!r}'
            )
        self.image_pooling = image_pooling
        if image_token_maps not in IMAGE_TOKEN_MAPS:
            raise ValueError(
                f'image_token_maps must be one of {IMAGE_TOKEN_MAPS}, '
                f'got {image_token_maps!r}'
            )
        self.image_token_maps = image_token_maps
        self.fusion_weight = float(fusion_weight)
        self.image_encoder = _build(image_encoder)
        self.channels_last = channels_last
        if channels_last:
            # In-place weight inits and checkpoint loads keep the layout.
            self.image_encoder.to(memory_format=torch.channels_last)
        out_type = getattr(self.image_encoder, 'out_type', None)
        if out_type in POOLED_OUT_TYPES:
            raise ValueError(
                f"image_encoder has out_type='{out_type}', which keeps no token "
                "features for the part decoder: use out_type='raw' (or 'featmap')"
            )
        self.text_encoder = _build(text_encoder)
        self.head = _build(head)
        self.num_parts = getattr(self.head, 'num_parts', 0)
        # A loss set to None (e.g. ``--cfg-options model.losses.id=None``) is off.
        self.losses = nn.ModuleDict(
            {
                name: _build(cfg)
                for name, cfg in (losses or {}).items()
                if cfg is not None
            }
        )
        for name, loss in self.losses.items():
            key = getattr(loss, 'input_key', None)
            if key not in LOSS_INPUTS:
                raise ValueError(
                    f'loss "{name}" ({type(loss).__name__}) declares input_key='
                    f'{key!r}; tbps_mm losses take one of {LOSS_INPUTS}'
                )
            if key in ('part_embeds', 'attn') and self.num_parts == 0:
                raise ValueError(
                    f'loss "{name}" ({type(loss).__name__}) needs part outputs but '
                    'the head has num_parts=0: remove the loss or add parts'
                )
        install_shape_check(self)

    # ------------------------------------------------------------------ #
    # Encoders
    # ------------------------------------------------------------------ #
    def _image_features(self, images: Tensor) -> Dict:
        """Backbone output -> tokens, pooled (B, C), token grid.

        The tokens are (B, N, C), or with ``image_token_maps='concat'`` the
        feature maps themselves, finest first (see :meth:`_feature_maps`).
        """
        if self.channels_last:
            images = images.contiguous(memory_format=torch.channels_last)
        feats = self.image_encoder(images)
        if self.image_token_maps in ('concat', 'first'):
            return self._feature_maps(feats)
        if isinstance(feats, (tuple, list)):
            feats = feats[-1]
        if feats.dim() == 4:
            tokens = feats.flatten(2).transpose(1, 2)
            return dict(
                tokens=tokens, pooled=tokens.mean(dim=1), hw=tuple(feats.shape[-2:])
            )
        if feats.dim() != 3:
            raise ValueError(
                f'image_encoder returned features of shape {tuple(feats.shape)}; '
                'the part decoder needs tokens (B, N, C) or a map (B, C, H, W)'
            )
        num_extra = getattr(self.image_encoder, 'num_extra_tokens', 0)
        if getattr(self.image_encoder, 'cls_token', None) is None:
            num_extra = 0
        patches = feats[:, num_extra:]
        use_cls = num_extra and self.image_pooling == 'cls'
        pooled = feats[:, 0] if use_cls else patches.mean(dim=1)
        tokens = feats if self.image_tokens == 'all' else patches
        return dict(tokens=tokens, pooled=pooled, hw=self._patch_grid(images, patches))

    def _feature_maps(self, feats) -> Dict:
        """Tokens on the first, finest map's grid; pooled from the last map.

        With ``'concat'`` the tokens are the maps themselves, finest first:
        the head upsamples each onto the finest grid and concatenates them
        (in effect; it projects each map at its own resolution first, which
        is cheaper). With ``'first'`` they are the finest map's cells alone.
        """
        maps = list(feats) if isinstance(feats, (tuple, list)) else [feats]
        if any(m.dim() != 4 for m in maps):
            raise ValueError(
                f"image_token_maps='{self.image_token_maps}' needs feature maps "
                '(B, C, H, W) from the image encoder, got shapes '
                f'{[tuple(m.shape) for m in maps]}'
            )
        if self.image_token_maps == 'first':
            tokens = maps[0].flatten(2).transpose(1, 2)
        else:
            tokens = maps
        hw = tuple(maps[0].shape[-2:])
        return dict(tokens=tokens, pooled=maps[-1].mean(dim=(2, 3)), hw=hw)

    def _patch_grid(self, images: Tensor, patches: Tensor) -> Optional[tuple]:
        """(h, w) of the patch tokens when they form the image's patch grid."""
        projection = getattr(
            getattr(self.image_encoder, 'patch_embed', None), 'projection', None
        )
        stride = getattr(projection, 'stride', None)
        if stride is None:
            return None
        h, w = images.shape[-2] // stride[0], images.shape[-1] // stride[1]
        return (h, w) if h * w == patches.shape[1] else None

    def _embed_image(self, images: Tensor) -> Dict:
        feats = self._image_features(images)
        hw = feats['hw'] if self.image_tokens == 'patch' else None
        out = self.head(feats['tokens'], feats['pooled'], None, modality='image', hw=hw)
        out['attn_hw'] = hw
        return out

    def _embed_text(self, text_ids: Tensor, text_mask: Tensor) -> Dict:
        # Padding columns are the data preprocessor's business (trim_text):
        # the model encodes the columns it is given, and its maps cover them.
        feats = self.text_encoder(text_ids, text_mask)
        return self.head(
            feats['tokens'], feats['pooled'], feats['mask'], modality='text'
        )

    @staticmethod
    def _normalised(out: Dict) -> Dict:
        out = dict(out)
        out['embed'] = F.normalize(out['embed'], dim=-1)
        out['part_embeds'] = F.normalize(out['part_embeds'], dim=-1)
        return out

    def encode_image(self, images: Tensor) -> Dict:
        """Embed images.

        Args:
            images (Tensor): (B, 3, H, W) normalised images.

        Returns:
            dict: ``embed`` (B, D) and ``part_embeds`` (B, K, D), both
            L2-normalised; ``attn`` (B, K, N), each part query's attention
            over the N image tokens; ``attn_hw`` the (h, w) patch grid of
            those tokens (``attn.view(B, K, h, w)``) or None.
        """
        return self._normalised(self._embed_image(images))

    def encode_text(self, text_ids: Tensor, text_mask: Tensor) -> Dict:
        """Embed captions.

        Args:
            text_ids (Tensor): (B, L) token ids.
            text_mask (Tensor): (B, L), 1 for real tokens, 0 for padding.

        Returns:
            dict: ``embed`` (B, D), ``part_embeds`` (B, K, D) (L2-normalised)
            and ``attn`` (B, K, L), each part query's attention over the
            L token columns given (zero on padding). The columns are encoded
            as given: ``TBPSDataPreprocessor(trim_text=True)`` is what drops
            the padding columns every caption of a batch shares.
        """
        return self._normalised(self._embed_text(text_ids, text_mask))

    def fused_embed(self, out: Dict, fusion_weight: Optional[float] = None) -> Tensor:
        """One vector per sample whose dot products are the test-time score.

        ``[f, sqrt(lambda / K) f^1, ..., sqrt(lambda / K) f^K]`` over the
        L2-normalised coarse and part embeddings, so that
        ``<fused(g), fused(f)> = s_coarse + lambda * mean_k s_k``, the score
        :meth:`similarity` ranks by. A loss with ``input_key='fused_embed'``
        (e.g. ``SDMLoss(input_key='fused_embed')``) thus trains the fused
        ranking itself rather than each term on its own.

        Args:
            out (dict): Head output with ``embed`` (B, D) and ``part_embeds``
                (B, K, D), normalised or not.
            fusion_weight (float, optional): lambda; defaults to the model's.

        Returns:
            Tensor: (B, D * (1 + K)); (B, D) when K = 0 or lambda = 0.
        """
        weight = self.fusion_weight if fusion_weight is None else fusion_weight
        return fused_vector(out['embed'], out['part_embeds'], weight)

    def similarity(
        self, query: Dict, gallery: Dict, fusion_weight: Optional[float] = None
    ) -> Tensor:
        """``s = s_coarse + lambda * mean_k s_k`` between two encode outputs.

        Args:
            query (dict): ``encode_text`` (or ``encode_image``) output, Q rows.
            gallery (dict): ``encode_image`` (or ``encode_text``) output, G
                rows.
            fusion_weight (float, optional): lambda; defaults to the model's.

        Returns:
            Tensor: (Q, G) similarities.

        Example:
            >>> sim = model.similarity(model.encode_text(ids, mask),  # doctest: +SKIP
            ...                        model.encode_image(images))
        """
        weight = self.fusion_weight if fusion_weight is None else fusion_weight
        return fused_similarity(
            query['embed'],
            query['part_embeds'],
            gallery['embed'],
            gallery['part_embeds'],
            weight,
        )

    # ------------------------------------------------------------------ #
    # BaseModel interface
    # ------------------------------------------------------------------ #
    def forward(
        self,
        inputs: dict,
        data_samples: Optional[List[DataSample]] = None,
        mode: str = 'tensor',
    ):
        """Run the model in MMEngine's ``loss`` / ``predict`` / ``tensor`` mode.

        Args:
            inputs (dict): The data preprocessor's ``inputs``: ``images``
                (Bi, 3, H, W) or None, ``image_index`` (Bi,), ``text_ids`` /
                ``text_mask`` (Bt, L) or None, ``text_index`` (Bt,).
            data_samples (list[DataSample], optional): One per sample; the
                indices point into this list.
            mode (str): ``'loss'``, ``'predict'`` or ``'tensor'``.

        Returns:
            ``loss``: dict of named losses; ``predict``: the data samples
            with ``img_embed`` / ``img_part_embeds`` and / or ``text_embed`` /
            ``text_part_embeds`` and ``fusion_weight`` in their metainfo;
            ``tensor``: dict of the normalised encode outputs keyed
            ``img_*`` / ``text_*``.
        """
        if mode == 'loss':
            return self.loss(inputs, data_samples)
        if mode == 'predict':
            return self.predict(inputs, data_samples)
        if mode == 'tensor':
            return self._tensor(inputs)
        raise ValueError(f"mode must be 'loss', 'predict' or 'tensor', got {mode!r}")

    def _tensor(self, inputs: dict) -> Dict[str, Tensor]:
        out = {}
        if inputs.get('images') is not None:
            enc = self.encode_image(inputs['images'])
            out.update({f'img_{k}': v for k, v in enc.items() if k != 'attn_hw'})
        if inputs.get('text_ids') is not None:
            enc = self.encode_text(inputs['text_ids'], inputs['text_mask'])
            out.update({f'text_{k}': v for k, v in enc.items()})
        return out

    @staticmethod
    def _labels(data_samples: List[DataSample], index: Tensor, device) -> Tensor:
        labels = [
            torch.as_tensor(data_samples[i].gt_label).view(-1)[0]
            for i in index.tolist()
        ]
        return torch.stack(labels).long().to(device)

    def loss(self, inputs: dict, data_samples: List[DataSample]) -> Dict[str, Tensor]:
        """Named losses of a batch of image-caption pairs.

        Args:
            inputs (dict): As in :meth:`forward`; both modalities required.
            data_samples (list[DataSample]): With ``gt_label``.

        Returns:
            dict[str, Tensor]: ``loss_<name>`` for every configured loss.
        """
        if not self.losses:
            raise ValueError(
                'TBPSRetriever was built without losses: add '
                '`losses=dict(...)` to the model config to train'
            )
        if inputs.get('images') is None or inputs.get('text_ids') is None:
            raise ValueError(
                'loss mode needs image-caption pairs: the batch lacks '
                + ('images' if inputs.get('images') is None else 'captions')
            )
        image_index, text_index = inputs['image_index'], inputs['text_index']
        if image_index.shape != text_index.shape or not torch.equal(
            image_index.cpu(), text_index.cpu()
        ):
            raise ValueError(
                'loss mode needs every sample to be an image-caption '
                'pair (image_index must equal text_index)'
            )
        image = self._embed_image(inputs['images'])
        text = self._embed_text(inputs['text_ids'], inputs['text_mask'])
        if any(loss.input_key == 'fused_embed' for loss in self.losses.values()):
            image['fused_embed'] = self.fused_embed(image)
            text['fused_embed'] = self.fused_embed(text)
        labels = self._labels(data_samples, image_index, image['embed'].device)
        out = {}
        for name, loss in self.losses.items():
            extra = {}
            if getattr(loss, 'needs_part_codes', False):
                # The oracle-commonality diagnostic only (SynthPedes attributes).
                extra['part_codes'] = self._part_codes(
                    data_samples, image_index, labels.device
                )
            out[f'loss_{name}'] = loss(
                image[loss.input_key], text[loss.input_key], labels, **extra
            )
            # Diagnostics a loss exposes (no "loss" in the key: logged, not summed).
            for key, value in getattr(loss, 'last_stats', {}).items():
                out[f'{name}_{key}'] = value
        return out

    @staticmethod
    def _part_codes(data_samples: List[DataSample], index: Tensor, device) -> Tensor:
        rows = []
        for i in index.tolist():
            codes = data_samples[i].metainfo.get('part_codes')
            if codes is None:
                raise ValueError(
                    'a loss needs part_codes but the data samples have none: '
                    'build the dataset with with_part_codes=True'
                )
            rows.append(torch.as_tensor(codes, dtype=torch.long).view(-1))
        return torch.stack(rows).to(device)

    def predict(
        self, inputs: dict, data_samples: Optional[List[DataSample]] = None
    ) -> List[DataSample]:
        """Per-sample embeddings for whichever modality each sample has.

        Args:
            inputs (dict): As in :meth:`forward`; either modality may be None.
            data_samples (list[DataSample], optional): Created (empty) when
                None, one per index.

        Returns:
            list[DataSample]: With ``img_embed`` (D,), ``img_part_embeds``
            (K, D), ``text_embed`` (D,), ``text_part_embeds`` (K, D) for the
            modalities present (L2-normalised) and ``fusion_weight`` in the
            metainfo.
        """
        sides = []
        if inputs.get('images') is not None:
            sides.append(
                ('img', inputs['image_index'], self.encode_image(inputs['images']))
            )
        if inputs.get('text_ids') is not None:
            sides.append(
                (
                    'text',
                    inputs['text_index'],
                    self.encode_text(inputs['text_ids'], inputs['text_mask']),
                )
            )
        if data_samples is None:
            size = max(
                (int(index.max()) + 1 for _, index, _ in sides if index.numel()),
                default=0,
            )
            data_samples = [DataSample() for _ in range(size)]
        for prefix, index, enc in sides:
            embeds, parts = enc['embed'].detach(), enc['part_embeds'].detach()
            for row, i in enumerate(index.tolist()):
                data_samples[i].set_field(embeds[row], f'{prefix}_embed')
                data_samples[i].set_field(parts[row], f'{prefix}_part_embeds')
        for sample in data_samples:
            sample.set_metainfo(dict(fusion_weight=self.fusion_weight))
        return data_samples


__all__ = ['TBPSRetriever']
