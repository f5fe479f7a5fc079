"""dlib's face-recognition ResNet (``dlib_face_recognition_resnet_model_v1.dat``) in PyTorch.

Two parts:

* :func:`read_dlib_net`, a small pure-Python reader of dlib's serialization format (the facts it
  relies on: ``docs/ARCHITECTURE.md``, "dlib's network file"), which returns the layer records of
  the file, bottom (input) to top, each with its settings and float32 weights;
* :class:`DlibResNet`, a ``torch.nn.Module`` with the architecture of dlib's
  ``examples/dnn_face_recognition_ex.cpp`` (7x7/2 conv, 3x3/2 max pool, residual levels of
  32/64/128/256 filters, average-pool shortcuts, average pool over everything, 128-d
  ``fc_no_bias``), built from those records after every layer's kind and shape has been checked.

Usage::

    net = load_dlib_resnet()                       # cached conversion of the model file
    chips = torch.from_numpy(np.stack(rgb_chips))  # (N, 150, 150, 3) uint8 from dlib.get_face_chip
    vecs = net(chips.permute(0, 3, 1, 2).float())  # (N, 128), the same as dlib's descriptor

The network takes RGB chips in 0..255 (float, NCHW), as dlib's ``input_rgb_image_sized<150>``
does before it subtracts a fixed per-channel average and divides by 256.

Folded, for speed (the elementwise passes cost as much as a third of the convolutions' time on a
CPU), with the same function up to float rounding (~1e-7 relative):

* dlib's ``affine`` layers (a frozen batch norm, ``y = gamma * x + beta`` per channel) directly
  follow a convolution everywhere in this network: ``w * gamma``, ``b * gamma + beta``;
* the input normalisation goes into the stem convolution, which has no padding, so every tap sees
  a real pixel: ``w / 256`` and ``b - sum(w * mean) / 256``.
"""

from __future__ import annotations

import copy
import hashlib
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from facerec.errors import FacerecError

__all__ = [
    "DlibLayer",
    "DlibNetFile",
    "DlibResNet",
    "DlibTail",
    "MODEL_FILE",
    "default_model_path",
    "load_dlib_resnet",
    "read_dlib_net",
]

MODEL_FILE = "dlib_face_recognition_resnet_model_v1.dat"
#: bumped when the conversion changes, so stale cached conversions are not used
CONVERSION_VERSION = 2


# ------------------------------------------------------------------------------------------ reader
class DlibFormatError(FacerecError):
    """The file is not a dlib network of the expected kind (or is truncated)."""


@dataclass
class DlibLayer:
    """One serialized layer: ``kind`` is dlib's version string (``con_4``, ``affine_``, ...) or
    ``tag``/``skip`` (dlib does not write which), ``settings`` its integers (filters, kernel,
    stride, padding, ...), ``weights`` its float32 parameter tensors."""

    kind: str
    settings: dict[str, int] = field(default_factory=dict)
    weights: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class DlibNetFile:
    """A dlib network file: its loss layer, its input layer and its layers, input first."""

    loss: str
    input_kind: str
    input_mean: tuple[float, float, float]
    input_size: tuple[int, int]
    layers: list[DlibLayer]


class _Stream:
    """dlib's serialization primitives over the bytes of a file (``dlib/serialize.h``)."""

    def __init__(self, data: bytes, name: str) -> None:
        self.data = data
        self.pos = 0
        self.name = name

    def _take(self, n: int) -> bytes:
        if self.pos + n > len(self.data):
            raise DlibFormatError(f"{self.name}: truncated dlib network file (ends at byte "
                                  f"{len(self.data)}, needed {self.pos + n})")
        out = self.data[self.pos:self.pos + n]
        self.pos += n
        return out

    def integer(self) -> int:
        """Control byte (number of value bytes | 0x80 if negative), then little-endian bytes."""
        control = self._take(1)[0]
        size = control & 0x0F
        if size > 8:
            raise DlibFormatError(f"{self.name}: not a dlib network file (bad integer at byte "
                                  f"{self.pos - 1})")
        value = int.from_bytes(self._take(size), "little")
        return -value if control & 0x80 else value

    def string(self) -> str:
        size = self.integer()
        if not 0 <= size <= 256:
            raise DlibFormatError(f"{self.name}: not a dlib network file (bad string length "
                                  f"{size} at byte {self.pos})")
        try:
            return self._take(size).decode("ascii")
        except UnicodeDecodeError:
            raise DlibFormatError(f"{self.name}: not a dlib network file (binary where a layer "
                                  "name was expected)") from None

    def real(self) -> float:
        """dlib's portable float: integer mantissa, integer exponent (``float_details``)."""
        mantissa = self.integer()
        exponent = self.integer()
        return float(mantissa) * 2.0 ** exponent

    def boolean(self) -> bool:
        byte = self._take(1)
        if byte not in (b"0", b"1"):
            raise DlibFormatError(f"{self.name}: not a dlib network file (bad bool at byte "
                                  f"{self.pos - 1})")
        return byte == b"1"

    def tensor(self) -> np.ndarray:
        """Version 2, (num_samples, k, nr, nc), then raw little-endian float32 values."""
        version = self.integer()
        if version != 2:
            raise DlibFormatError(f"{self.name}: unsupported dlib tensor version {version}")
        shape = tuple(self.integer() for _ in range(4))
        count = int(np.prod(shape))
        values = np.frombuffer(self._take(4 * count), dtype="<f4")
        return values.reshape(shape).astype(np.float32)

    def alias(self) -> tuple[int, int, int, int]:
        """An ``alias_tensor`` (a view into a params tensor): version 1 and its shape."""
        version = self.integer()
        if version != 1:
            raise DlibFormatError(f"{self.name}: unsupported dlib alias_tensor version {version}")
        return tuple(self.integer() for _ in range(4))  # type: ignore[return-value]


def _read_layer_details(s: _Stream) -> DlibLayer:
    """The details of one computational layer (``dlib/dnn/layers.h`` serialize functions)."""
    kind = s.string()
    if kind == "con_4":
        params = s.tensor()
        names = ("filters", "nr", "nc", "stride_y", "stride_x", "padding_y", "padding_x")
        settings = {n: s.integer() for n in names}
        w_shape, b_shape = s.alias(), s.alias()
        for _ in range(4):  # learning-rate and weight-decay multipliers: training only
            s.real()
        n_w, n_b = int(np.prod(w_shape)), int(np.prod(b_shape))
        flat = params.reshape(-1)
        if flat.size != n_w + n_b:
            raise DlibFormatError(f"{s.name}: con_ params hold {flat.size} values, expected "
                                  f"{n_w} + {n_b}")
        return DlibLayer(kind, settings, {"weight": flat[:n_w].reshape(w_shape),
                                          "bias": flat[n_w:].reshape(-1)})
    if kind == "affine_":
        params = s.tensor().reshape(-1)
        g_shape, b_shape = s.alias(), s.alias()
        mode = s.integer()
        n = int(np.prod(g_shape))
        if params.size != n + int(np.prod(b_shape)):
            raise DlibFormatError(f"{s.name}: affine_ params do not match gamma and beta")
        return DlibLayer(kind, {"channels": n, "mode": mode},
                         {"gamma": params[:n], "beta": params[n:]})
    if kind in ("max_pool_2", "avg_pool_2"):
        names = ("nr", "nc", "stride_y", "stride_x", "padding_y", "padding_x")
        return DlibLayer(kind, {n: s.integer() for n in names})
    if kind in ("relu_", "add_prev_"):
        return DlibLayer(kind)
    if kind == "fc_2":
        outputs, inputs = s.integer(), s.integer()
        params = s.tensor()
        w_shape, b_shape = s.alias(), s.alias()
        bias_mode = s.integer()
        for _ in range(4):
            s.real()
        n_w = int(np.prod(w_shape))
        return DlibLayer(kind, {"outputs": outputs, "inputs": inputs, "bias_mode": bias_mode,
                                "bias_size": int(np.prod(b_shape))},
                         {"weight": params.reshape(-1)[:n_w].reshape(inputs, outputs)})
    raise DlibFormatError(f"{s.name}: dlib layer {kind!r} is not supported (this reader knows the "
                          "layers of dlib's face-recognition ResNet)")


def _skip_layer_state(s: _Stream, add_layer_version: int) -> None:
    """What ``add_layer`` writes after the details: three flags and training-time tensors (empty
    in a cleaned network), and the sample expansion factor for the layer above the input."""
    for _ in range(3):
        s.boolean()
    for _ in range(3):
        s.tensor()
    if add_layer_version == 3:
        s.integer()


def read_dlib_net(path: str | os.PathLike) -> DlibNetFile:
    """Parse a dlib ``loss_metric`` network file (e.g. the face-recognition ResNet).

    ``add_layer`` writes its version, then its whole sub-network (towards the input), then its own
    details; tag and skip layers (version 1) write only their sub-network. So the file is: the loss
    header, a run of version integers down to the input layer (version 3 is the ``add_layer``
    directly above the input), the input layer, then the details of every layer, bottom up.
    """
    p = Path(path)
    try:
        data = p.read_bytes()
    except FileNotFoundError:
        raise FacerecError(f"dlib face model not found: {p} (pip install face-recognition-models)"
                           ) from None
    except OSError as exc:
        raise FacerecError(f"cannot read {p}: {exc.strerror or exc}") from None
    s = _Stream(data, str(p))
    if s.integer() != 1:
        raise DlibFormatError(f"{p}: not a dlib network file (unexpected first bytes)")
    loss = s.string()
    if not loss.startswith("loss_metric"):
        raise DlibFormatError(f"{p}: a dlib {loss!r} network, not the face-recognition ResNet "
                              "(loss_metric)")
    s.real(), s.real()  # margin and distance threshold of the metric loss (training only)
    versions: list[int] = []
    while True:
        version = s.integer()
        if version not in (1, 2, 3) or len(versions) > 10_000:
            raise DlibFormatError(f"{p}: not a dlib network file (layer version {version})")
        versions.append(version)
        if version == 3:
            break
    input_kind = s.string()
    if input_kind != "input_rgb_image_sized":
        raise DlibFormatError(f"{p}: input layer {input_kind!r}, expected input_rgb_image_sized")
    mean = (s.real(), s.real(), s.real())
    size = (s.integer(), s.integer())
    layers: list[DlibLayer] = []
    for version in reversed(versions):
        if version == 1:
            layers.append(DlibLayer("tag"))  # tag or skip: told apart by the architecture
            continue
        layers.append(_read_layer_details(s))
        _skip_layer_state(s, version)
    if s.pos != len(data):
        raise DlibFormatError(f"{p}: {len(data) - s.pos} unexpected bytes after the network")
    return DlibNetFile(loss, input_kind, mean, size, layers)


# ----------------------------------------------------------------------------------------- network
#: residual levels of dnn_face_recognition_ex.cpp, input first: (filters, blocks, downsample first)
LEVELS: tuple[tuple[int, int, bool], ...] = (
    (32, 3, False), (64, 4, True), (128, 3, True), (256, 3, True), (256, 1, True))


def _expected_kinds() -> list[str]:
    """The flat layer sequence (input first) that the architecture serializes to."""
    kinds = ["con_4", "affine_", "relu_", "max_pool_2"]
    block = ["tag", "con_4", "affine_", "relu_", "con_4", "affine_"]
    for _, blocks, down in LEVELS:
        for b in range(blocks):
            if b == 0 and down:  # add_prev2<avg_pool<skip1<tag2<block<tag1<...>>>>>>
                kinds += [*block, "tag", "tag", "avg_pool_2", "add_prev_", "relu_"]
            else:                # add_prev1<block<tag1<...>>>
                kinds += [*block, "add_prev_", "relu_"]
    return kinds + ["avg_pool_2", "fc_2"]


def _pool_out(size: int, kernel: int, stride: int, padding: int = 0) -> int:
    return (size + 2 * padding - kernel) // stride + 1


class ResidualBlock(nn.Module):
    """``relu(add_prev(block(x), shortcut(x)))`` with dlib's block: conv3x3/s, affine, relu,
    conv3x3/1, affine (affines folded into the convolutions).

    Downsampling blocks (stride 2, no padding, as dlib's defaults for strided layers) add the
    2x2/2 average-pooled input. dlib's ``add_prev`` adds tensors of different shapes as if both
    were zero-padded to the larger one (channels, and rows/columns at the bottom/right): the
    shortcut has fewer channels, and at 8x8 the conv gives 3x3 where the pool gives 4x4.
    """

    def __init__(self, cin: int, cout: int, stride: int, size_in: int) -> None:
        super().__init__()
        self.downsample = stride != 1
        pad = 0 if self.downsample else 1
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, pad)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1)
        conv_size = _pool_out(size_in, 3, stride, pad)
        short_size = _pool_out(size_in, 2, 2) if self.downsample else size_in
        self.size_out = max(conv_size, short_size)
        # static zero paddings (F.pad order: last dim first), so the ONNX graph is static too
        grow_conv = self.size_out - conv_size
        grow_short = self.size_out - short_size
        self.pad_conv = (0, grow_conv, 0, grow_conv)
        self.pad_short = (0, grow_short, 0, grow_short, 0, cout - cin)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # in place: fewer memory passes (the convolutions' backward does not need their outputs)
        y = self.conv2(F.relu(self.conv1(x), inplace=True))
        shortcut = F.avg_pool2d(x, 2, 2) if self.downsample else x
        if any(self.pad_conv):
            y = F.pad(y, self.pad_conv)
        if any(self.pad_short):
            shortcut = F.pad(shortcut, self.pad_short)
        return F.relu(y.add_(shortcut), inplace=True)


class DlibResNet(nn.Module):
    """dlib's face-recognition ResNet: RGB chips (N, 3, 150, 150), 0..255 -> (N, 128) descriptors.

    ``levels`` are the residual stages input first (``levels[0]`` = the 32-filter stage); the
    embedding (``fc``) and the stem stay separate so fine-tuning can unfreeze the last levels.
    """

    def __init__(self, input_size: int = 150) -> None:
        super().__init__()
        self.input_size = int(input_size)
        self.stem = nn.Conv2d(3, 32, 7, 2, 0)  # input normalisation folded in (see the module doc)
        size = _pool_out(_pool_out(self.input_size, 7, 2), 3, 2)
        levels = []
        cin = 32
        for filters, blocks, down in LEVELS:
            stage = []
            for b in range(blocks):
                block = ResidualBlock(cin, filters, 2 if (b == 0 and down) else 1, size)
                size = block.size_out
                cin = filters
                stage.append(block)
            levels.append(nn.Sequential(*stage))
        self.levels = nn.ModuleList(levels)
        self.fc = nn.Linear(256, 128, bias=False)

    def forward(self, chips: torch.Tensor) -> torch.Tensor:
        x = F.max_pool2d(F.relu(self.stem(chips), inplace=True), 3, 2)
        for level in self.levels:
            x = level(x)
        return self.fc(x.mean(dim=(2, 3)))

    def trunk(self, chips: torch.Tensor, upto: int) -> torch.Tensor:
        """The activations entering ``levels[upto]`` (stem, max pool, ``levels[:upto]``): what
        ``facerec train --finetune`` computes once per chip; :class:`DlibTail` continues."""
        x = F.max_pool2d(F.relu(self.stem(chips), inplace=True), 3, 2)
        for level in self.levels[:upto]:
            x = level(x)
        return x

    def with_tail(self, tail: DlibTail) -> DlibResNet:
        """A new network: this one's stem and first levels (copied), ``tail``'s last levels and
        ``fc`` (copied too, so later training of ``tail`` does not change it)."""
        net = DlibResNet(self.input_size)
        net.load_state_dict(self.state_dict())
        for i, level in enumerate(tail.levels):
            net.levels[tail.start + i].load_state_dict(level.state_dict())
        net.fc.load_state_dict(tail.fc.state_dict())
        return net.to(device=self.fc.weight.device, dtype=self.fc.weight.dtype)

    def convs(self) -> Iterator[nn.Conv2d]:
        """The convolutions in dlib's file order (input first)."""
        yield self.stem
        for level in self.levels:
            for block in level:
                yield block.conv1
                yield block.conv2

    @classmethod
    def from_dlib_file(cls, path: str | os.PathLike) -> DlibResNet:
        """The network with the weights of a dlib model file (checked layer by layer)."""
        net_file = read_dlib_net(path)
        kinds = [layer.kind for layer in net_file.layers]
        expected = _expected_kinds()
        if kinds != expected:
            first = next((i for i, (a, b) in enumerate(zip(kinds, expected)) if a != b),
                         min(len(kinds), len(expected)))
            raise DlibFormatError(f"{path}: not dlib's face-recognition ResNet ({len(kinds)} "
                                  f"layers; layer {first} differs from the architecture)")
        if net_file.input_size != (150, 150):
            raise DlibFormatError(f"{path}: input size {net_file.input_size}, expected 150x150")
        net = cls(150)
        con = [layer for layer in net_file.layers if layer.kind == "con_4"]
        aff = [layer for layer in net_file.layers if layer.kind == "affine_"]
        with torch.no_grad():
            for conv, c, a in zip(net.convs(), con, aff, strict=True):
                _load_conv(conv, c, a, str(path))
            _fold_input_normalisation(net.stem, net_file.input_mean)
            fc = net_file.layers[-1]
            if fc.weights["weight"].shape != (256, 128) or fc.settings["bias_size"] != 0:
                raise DlibFormatError(f"{path}: the embedding layer is not a 256 -> 128 fc_no_bias")
            net.fc.weight.copy_(torch.from_numpy(fc.weights["weight"].T.copy()))
        return net.eval()


def _load_conv(conv: nn.Conv2d, con: DlibLayer, affine: DlibLayer, name: str) -> None:
    """Copy a dlib con_ (+ the affine_ after it, folded in) into ``conv``, checking every setting."""
    want = {"filters": conv.out_channels, "nr": conv.kernel_size[0], "nc": conv.kernel_size[1],
            "stride_y": conv.stride[0], "stride_x": conv.stride[1],
            "padding_y": conv.padding[0], "padding_x": conv.padding[1]}
    if con.settings != want or con.weights["weight"].shape != tuple(conv.weight.shape):
        raise DlibFormatError(f"{name}: convolution {con.settings} "
                              f"{con.weights['weight'].shape} does not match the architecture "
                              f"({want})")
    if affine.settings["channels"] != conv.out_channels or affine.settings["mode"] != 0:
        raise DlibFormatError(f"{name}: affine layer does not match its convolution")
    gamma = torch.from_numpy(affine.weights["gamma"]).double()
    beta = torch.from_numpy(affine.weights["beta"]).double()
    weight = torch.from_numpy(con.weights["weight"]).double() * gamma.view(-1, 1, 1, 1)
    bias = torch.from_numpy(con.weights["bias"]).double() * gamma + beta
    conv.weight.copy_(weight.float())
    conv.bias.copy_(bias.float())


def _fold_input_normalisation(stem: nn.Conv2d, mean: tuple[float, float, float]) -> None:
    """conv(w, (x - mean) / 256) + b = conv(w / 256, x) + b - sum(w * mean) / 256 when the
    convolution has no padding (every tap sees a pixel)."""
    assert stem.padding == (0, 0)
    w = stem.weight.double()
    m = torch.tensor(mean, dtype=torch.float64).view(1, 3, 1, 1)
    stem.bias.copy_((stem.bias.double() - (w * m).sum(dim=(1, 2, 3)) / 256.0).float())
    stem.weight.copy_((w / 256.0).float())


# ------------------------------------------------------------------------------------------ loading
class DlibTail(nn.Module):
    """The last ``n`` residual levels of a :class:`DlibResNet` and its ``fc``: the part that
    ``facerec train --finetune n`` trains. Input: :meth:`DlibResNet.trunk` activations (levels
    from ``start``); output: 128-d descriptors, as the whole network's."""

    def __init__(self, n: int, net: DlibResNet | None = None) -> None:
        super().__init__()
        if not 1 <= int(n) <= len(LEVELS):
            raise FacerecError(f"--finetune {n}: dlib_face has {len(LEVELS)} residual levels "
                               f"(use 0 to {len(LEVELS)})")
        net = net if net is not None else DlibResNet()  # architecture only: weights come later
        self.start = len(LEVELS) - int(n)
        self.levels = nn.ModuleList(copy.deepcopy(lvl) for lvl in net.levels[self.start:])
        self.fc = copy.deepcopy(net.fc)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for level in self.levels:
            x = level(x)
        return self.fc(x.mean(dim=(2, 3)))


def default_model_path() -> Path:
    """The model file of ``face_recognition_models`` (located, never imported; sha256-checked)."""
    from facerec.weights import wheel_file

    return wheel_file("dlib_resnet")


def _conversion_cache_dir() -> Path:
    from facerec.cache import cache_root

    return cache_root() / "models"


def _cache_name(path: Path) -> str:
    st = path.stat()
    key = f"{path.resolve()}:{st.st_size}:{st.st_mtime_ns}:{CONVERSION_VERSION}"
    return f"dlib_resnet-{hashlib.sha1(key.encode()).hexdigest()[:16]}.pt"


def load_dlib_resnet(path: str | os.PathLike | None = None, cache: bool = True) -> DlibResNet:
    """dlib's face ResNet in torch (eval mode, CPU, float32).

    The conversion (~0.2 s) is cached under the facerec cache folder (``models/``), keyed by the
    model file's path, size and modification time; a cache that cannot be read or written is
    simply skipped. Loading a cached conversion uses ``weights_only=True``.
    """
    p = Path(path) if path is not None else default_model_path()
    if not p.is_file():
        raise FacerecError(f"dlib face model not found: {p} (pip install face-recognition-models)")
    cached = _conversion_cache_dir() / _cache_name(p) if cache else None
    if cached is not None and cached.is_file():
        try:
            net = DlibResNet()
            net.load_state_dict(torch.load(cached, map_location="cpu", weights_only=True))
            return net.eval()
        except Exception:  # noqa: BLE001 - a torn or stale cache file: convert again
            pass
    net = DlibResNet.from_dlib_file(p)
    if cached is not None:
        try:
            cached.parent.mkdir(parents=True, exist_ok=True)
            tmp = cached.with_name(f".{cached.name}.{os.getpid()}.tmp")
            torch.save(net.state_dict(), tmp)
            os.replace(tmp, cached)
        except OSError:
            pass
    return net
