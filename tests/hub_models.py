"""Architectures people take from model libraries, built offline from `transformers`' own model classes with small
configs (and `keras.applications` with weights=None), in the file formats users hand over.

bench/model_hub.py converts every one; tests/test_model_hub.py checks and converts a quick few. Weights are random
but shaped like trained ones (see `realistic_init`): transformers' default init leaves CLS/distillation tokens and
position tables at zero, and LayerNorm of an all-zero token has variance 0, so int8 RSQRT scales explode (DeiT int8
cosine 0.10; /work/shared/notes/field-notes.md, "Models from public model libraries"). Nothing is downloaded:
HF_HUB_OFFLINE=1 is set before transformers is imported.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # why before the import: transformers reads it when imported

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

FORMATS = ("torchscript", "pt2", "onnx", "onnx-dynamo", "keras")
SUFFIX = {"torchscript": ".pt", "pt2": ".pt2", "onnx": ".onnx", "onnx-dynamo": ".onnx", "keras": ".keras"}
TOKEN_STD = 0.02  # timm's trunc_normal_(std=.02) for tokens, position and relative-position tables
LAYER_SCALE = 0.1  # ConvNeXt/PoolFormer/SwiftFormer layer scale of a trained model (init 1e-6/1e-5 is untrained)
_TABLE_WORDS = ("cls_token", "distillation_token", "position_embedding", "position_embeddings",
                "relative_position_bias_table", "attention_biases", "mask_token", "register_tokens")
_SCALE_WORDS = ("layer_scale", "layer_scale_parameter", "lambda1", "lambda2")


@dataclass(frozen=True)
class HubModel:
    """One architecture: how to build it, its input (NCHW / the library's own layout), and the formats to save."""
    name: str
    family: str  # what a user would call it ("windowed attention", "audio transformer", ...)
    build: Callable[[], object]  # an nn.Module returning logits, or a Keras model
    input_shape: tuple[int, ...]
    formats: tuple[str, ...]
    library: str = "transformers"
    notes: str = ""
    input_range: tuple[float, float] = field(default=(0.0, 1.0))


class Logits(nn.Module):
    """transformers' models return a ModelOutput: users export `.logits`."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x).logits


def realistic_init(model: nn.Module, input_shape: tuple[int, ...], seed: int = 0) -> nn.Module:
    """timm-style init over transformers' defaults, then BatchNorm statistics settled by training-mode batches."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, parameter in model.named_parameters():
            leaf = name.rsplit(".", 1)[-1]
            if any(word in name for word in _TABLE_WORDS):
                parameter.copy_((torch.randn(parameter.shape, generator=generator) * TOKEN_STD).clamp(-0.04, 0.04))
            elif any(leaf.startswith(word) for word in _SCALE_WORDS):
                parameter.fill_(LAYER_SCALE)
            elif leaf == "bias" and parameter.dim() == 1 and ("attention" in name or "attn" in name):
                parameter.copy_(torch.randn(parameter.shape, generator=generator) * TOKEN_STD)
        for module in model.modules():
            if isinstance(module, nn.modules.batchnorm._BatchNorm):
                if module.affine:  # transformers 5.25 draws some BatchNorm scales from N(0, 0.02): outputs underflow
                    module.weight.fill_(1.0)
                    module.bias.zero_()
                module.reset_running_stats()
                module.momentum = None  # a cumulative average over the settling batches
    model.train()
    with torch.no_grad():
        for _ in range(4):
            model(torch.rand((4,) + tuple(input_shape[1:]), generator=generator))
    return model.eval()


def _hf(config_class: str, model_class: str, input_shape: tuple[int, ...], **config) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import transformers  # why here: a 2-4 s import only the torch builders need

        torch.manual_seed(0)
        cfg = getattr(transformers, config_class)(num_labels=config.pop("num_labels", 10), **config)
        return realistic_init(Logits(getattr(transformers, model_class)(cfg)), input_shape)
    return build


def _keras(application: str, input_shape: tuple[int, ...], **kwargs) -> Callable[[], object]:
    def build():
        import keras  # why here: TensorFlow's import costs seconds the torch builders do not need

        keras.utils.set_random_seed(0)
        model = getattr(keras.applications, application)(weights=None, input_shape=input_shape[1:], classes=10,
                                                         **kwargs)
        rng = np.random.default_rng(0)
        for _ in range(4):  # settle BatchNorm's moving statistics as training would
            model(rng.uniform(0, 255, (4,) + tuple(input_shape[1:])).astype("float32"), training=True)
        return model
    return build


IMG = (1, 3, 32, 32)
IMG64 = (1, 3, 64, 64)
_VIT = dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
            intermediate_size=64)
_STAGES = dict(hidden_sizes=[16, 24, 32, 48], depths=[1, 1, 1, 1])

MODELS: tuple[HubModel, ...] = (
    HubModel("vit", "vision transformer", _hf("ViTConfig", "ViTForImageClassification", IMG, **_VIT), IMG,
             ("pt2",)),
    HubModel("deit", "vision transformer (distilled)", _hf("DeiTConfig", "DeiTForImageClassificationWithTeacher",
                                                           IMG, **_VIT), IMG, ("onnx-dynamo",)),
    HubModel("beit", "vision transformer (relative position)",
             _hf("BeitConfig", "BeitForImageClassification", IMG, use_relative_position_bias=True, **_VIT), IMG,
             ("onnx",)),
    HubModel("dinov2", "vision transformer", _hf("Dinov2Config", "Dinov2ForImageClassification", IMG, **_VIT), IMG,
             ("torchscript",)),
    HubModel("swin", "windowed attention", _hf("SwinConfig", "SwinForImageClassification", IMG, image_size=32,
                                               patch_size=2, embed_dim=16, depths=[2, 2], num_heads=[2, 2],
                                               window_size=4), IMG, ("torchscript", "onnx-dynamo")),
    HubModel("mobilevit", "mobile transformer", _hf("MobileViTConfig", "MobileViTForImageClassification", IMG64,
                                                    image_size=64, hidden_sizes=[16, 24, 32],
                                                    neck_hidden_sizes=[8, 8, 16, 16, 24, 32, 64],
                                                    num_attention_heads=2), IMG64, ("onnx", "torchscript")),
    HubModel("mobilevitv2", "mobile transformer (separable attention)",
             _hf("MobileViTV2Config", "MobileViTV2ForImageClassification", IMG64, image_size=64,
                 width_multiplier=0.25), IMG64, ("onnx-dynamo",)),
    HubModel("levit", "hybrid transformer", _hf("LevitConfig", "LevitForImageClassificationWithTeacher", IMG64,
                                                image_size=64, hidden_sizes=[32, 48, 64], num_attention_heads=[1, 2, 2],
                                                depths=[1, 1, 1], key_dim=[16, 16, 16]), IMG64, ("pt2",)),
    HubModel("convnext", "modern CNN", _hf("ConvNextConfig", "ConvNextForImageClassification", IMG, **_STAGES), IMG,
             ("torchscript",)),
    HubModel("convnextv2", "modern CNN (GRN)", _hf("ConvNextV2Config", "ConvNextV2ForImageClassification", IMG,
                                                   **_STAGES), IMG, ("onnx",)),
    HubModel("regnet", "CNN", _hf("RegNetConfig", "RegNetForImageClassification", IMG, embedding_size=16,
                                  hidden_sizes=[16, 32, 48, 64], depths=[1, 1, 1, 1], groups_width=8), IMG,
             ("torchscript",)),
    HubModel("efficientnet", "CNN (ceil-mode pooler)",
             _hf("EfficientNetConfig", "EfficientNetForImageClassification", IMG, image_size=32,
                 width_coefficient=0.25, depth_coefficient=0.25, hidden_dim=320), IMG, ("torchscript",)),
    # 64x64, not 32: at 32 its last stage is 1x1, where pool(x) - x is exactly 0 and the int8 SUB's output scale
    # (7.8e-9) makes TFLM abort; no trained PoolFormer sees a 1x1 map
    HubModel("poolformer", "metaformer", _hf("PoolFormerConfig", "PoolFormerForImageClassification", IMG64,
                                             hidden_sizes=[16, 24, 32, 48], depths=[1, 1, 1, 1]), IMG64,
             ("torchscript", "onnx")),
    HubModel("swiftformer", "mobile transformer (additive attention)",
             _hf("SwiftFormerConfig", "SwiftFormerForImageClassification", IMG64, depths=[1, 1, 1, 1],
                 embed_dims=[16, 24, 32, 48]), IMG64, ("onnx",)),
    HubModel("resnet", "CNN", _hf("ResNetConfig", "ResNetForImageClassification", IMG, embedding_size=16,
                                  hidden_sizes=[16, 32, 48, 64], depths=[1, 1, 1, 1], layer_type="basic"), IMG,
             ("torchscript",)),
    HubModel("mobilenetv1", "mobile CNN", _hf("MobileNetV1Config", "MobileNetV1ForImageClassification", IMG,
                                              image_size=32, depth_multiplier=0.25), IMG, ("torchscript",)),
    HubModel("mobilenetv2", "mobile CNN", _hf("MobileNetV2Config", "MobileNetV2ForImageClassification", IMG,
                                              image_size=32, depth_multiplier=0.25), IMG, ("onnx",)),
    HubModel("pvtv2", "pyramid transformer", _hf("PvtV2Config", "PvtV2ForImageClassification", IMG64,
                                                  image_size=64, hidden_sizes=[16, 24, 32, 48], depths=[1, 1, 1, 1],
                                                  num_attention_heads=[1, 1, 2, 2]), IMG64, ("onnx",)),
    HubModel("segformer", "pyramid transformer", _hf("SegformerConfig", "SegformerForImageClassification", IMG64,
                                                      hidden_sizes=[16, 24, 32, 48], depths=[1, 1, 1, 1],
                                                      num_attention_heads=[1, 1, 2, 2], decoder_hidden_size=32),
             IMG64, ("torchscript",)),
    HubModel("ast", "audio transformer", _hf("ASTConfig", "ASTForAudioClassification", (1, 32, 16),
                                             num_mel_bins=16, max_length=32, hidden_size=32, num_hidden_layers=2,
                                             num_attention_heads=2, intermediate_size=64), (1, 32, 16),
             ("onnx-dynamo", "onnx")),
    HubModel("wav2vec2", "speech encoder", _hf("Wav2Vec2Config", "Wav2Vec2ForSequenceClassification", (1, 800),
                                               conv_dim=(16, 16), conv_kernel=(10, 3), conv_stride=(5, 2),
                                               hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                               intermediate_size=64, num_conv_pos_embeddings=16,
                                               num_conv_pos_embedding_groups=2, classifier_proj_size=16), (1, 800),
             ("onnx",), input_range=(-1.0, 1.0)),
    HubModel("whisper", "speech encoder", _hf("WhisperConfig", "WhisperForAudioClassification", (1, 16, 32),
                                              num_mel_bins=16, d_model=32, encoder_layers=2,
                                              encoder_attention_heads=2, encoder_ffn_dim=64, decoder_layers=1,
                                              decoder_attention_heads=2, decoder_ffn_dim=64,
                                              max_source_positions=16, classifier_proj_size=16), (1, 16, 32),
             ("onnx",)),
    HubModel("keras_convnext_tiny", "modern CNN", _keras("ConvNeXtTiny", (1, 32, 32, 3)), (1, 32, 32, 3), ("keras",),
             library="keras.applications", input_range=(0.0, 255.0)),
    HubModel("keras_efficientnet_b0", "CNN", _keras("EfficientNetB0", (1, 32, 32, 3)), (1, 32, 32, 3), ("keras",),
             library="keras.applications", input_range=(0.0, 255.0)),
    HubModel("keras_mobilenetv3_small", "mobile CNN", _keras("MobileNetV3Small", (1, 32, 32, 3)), (1, 32, 32, 3),
             ("keras",), library="keras.applications", input_range=(0.0, 255.0)),
    HubModel("keras_mobilenetv2", "mobile CNN", _keras("MobileNetV2", (1, 32, 32, 3), alpha=0.35), (1, 32, 32, 3),
             ("keras",), library="keras.applications", input_range=(0.0, 255.0)),
)
# Issue 26's Keras applications with settled BatchNorm: too slow for bench/model_hub.py's 3-minute conversions;
# bench/mixed_precision.py measures them (96x96, the smallest input NASNetMobile's reduction cells take comfortably)
LARGE: tuple[HubModel, ...] = (
    HubModel("keras_resnet50", "CNN", _keras("ResNet50", (1, 96, 96, 3)), (1, 96, 96, 3), ("keras",),
             library="keras.applications", input_range=(0.0, 255.0)),
    HubModel("keras_nasnetmobile", "CNN (searched cells)", _keras("NASNetMobile", (1, 96, 96, 3)), (1, 96, 96, 3),
             ("keras",), library="keras.applications", input_range=(0.0, 255.0)),
)
BY_NAME = {model.name: model for model in (*MODELS, *LARGE)}


def saved_file(model: HubModel, fmt: str, folder: Path) -> Path:
    """Where `save` writes `model` in `fmt`."""
    return Path(folder) / f"{model.name}{'_dynamo' if fmt == 'onnx-dynamo' else ''}{SUFFIX[fmt]}"


def save(model: HubModel, fmt: str, folder: Path, built=None) -> Path:
    """Write `model` in `fmt` under `folder` as a user would hand it over; returns the file."""
    built = built if built is not None else model.build()
    path = saved_file(model, fmt, folder)
    if fmt == "keras":
        built.save(path)
        return path
    example = torch.rand(model.input_shape, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        if fmt == "torchscript":
            torch.jit.save(torch.jit.trace(built, example), str(path))
        elif fmt == "pt2":
            torch.export.save(torch.export.export(built, (example,)), str(path))
        else:  # the two exporters users meet: TorchScript-based (dynamo=False) and torch.export-based
            dynamo = fmt == "onnx-dynamo"
            extra = {"external_data": False} if dynamo else {}
            torch.onnx.export(built, (example,), str(path), input_names=["input"], output_names=["logits"],
                              dynamo=dynamo, opset_version=18 if dynamo else 17, **extra)
    return path


def hub_args(model: HubModel, fmt: str, command: str = "convert") -> list[str]:
    """What a user passes to `hub check`/`hub convert` for this file: TorchScript carries no input shape;
    convert calibrates on synthetic data over the model's input range."""
    args = ["--input-range", f"{model.input_range[0]},{model.input_range[1]}"] if command == "convert" else []
    if fmt == "torchscript":
        args += ["--input-shape", ",".join(str(d) for d in model.input_shape)]
    return args
