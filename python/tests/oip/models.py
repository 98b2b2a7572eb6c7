"""ONNX test models built with ``onnx.helper`` (no model hub): an MLP, a small CNN (float32
and uint8 input) and a 1-D convolutional audio model over log-mel frames. Weights are seeded
normals scaled by 1/sqrt(fan_in), so outputs are well-conditioned."""
from __future__ import annotations

from pathlib import Path
from typing import Sequence, Union

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

Dim = Union[int, str]


def _init(name: str, array: np.ndarray) -> onnx.TensorProto:
    return numpy_helper.from_array(array.astype(np.float32), name)


def _save(graph: onnx.GraphProto, path: Path) -> Path:
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="kiln-tests")
    model.ir_version = 8  # loadable by tract and every onnxruntime since 1.14
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, str(path))
    return path


def mlp(path: Path, input_shape: Sequence[Dim], hidden: Sequence[int] = (64, 32), classes: int = 10, seed: int = 0) -> Path:
    """Flatten -> (Gemm -> Relu)* -> Gemm -> Softmax; output ``probs`` (batch, classes)."""
    rng = np.random.default_rng(seed)
    width = int(np.prod([d for d in input_shape[1:]]))
    nodes = [helper.make_node("Flatten", ["input"], ["x0"], axis=1)]
    inits = []
    dims = [width, *hidden, classes]
    x = "x0"
    for i in range(len(dims) - 1):
        inits += [
            _init(f"W{i}", rng.standard_normal((dims[i + 1], dims[i])) / np.sqrt(dims[i])),
            _init(f"B{i}", rng.standard_normal(dims[i + 1]) * 0.1),
        ]
        nodes.append(helper.make_node("Gemm", [x, f"W{i}", f"B{i}"], [f"g{i}"], transB=1))
        if i < len(dims) - 2:
            nodes.append(helper.make_node("Relu", [f"g{i}"], [f"r{i}"]))
            x = f"r{i}"
    nodes.append(helper.make_node("Softmax", [f"g{len(dims) - 2}"], ["probs"], axis=1))
    graph = helper.make_graph(
        nodes,
        "mlp",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, list(input_shape))],
        [helper.make_tensor_value_info("probs", TensorProto.FLOAT, ["batch", classes])],
        inits,
    )
    return _save(graph, path)


def cnn(path: Path, size: int = 224, uint8: bool = False, seed: int = 1) -> Path:
    """(batch, 3, size, size) -> 3 x (Conv 3x3 -> Relu [-> MaxPool]) -> GAP -> Gemm; outputs
    ``logits`` (batch, 10) and ``features`` (batch, 64). With ``uint8`` the input is uint8 and
    the graph scales it by 1/255 itself."""
    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    x = "input"
    if uint8:
        nodes += [
            helper.make_node("Cast", ["input"], ["xf"], to=TensorProto.FLOAT),
            helper.make_node("Mul", ["xf", "scale"], ["xs"]),
        ]
        inits.append(_init("scale", np.array(1 / 255.0)))
        x = "xs"
    chans, strides = [3, 16, 32, 64], [2, 2, 1]
    for i in range(3):
        inits += [
            _init(f"CW{i}", rng.standard_normal((chans[i + 1], chans[i], 3, 3)) / np.sqrt(chans[i] * 9)),
            _init(f"CB{i}", rng.standard_normal(chans[i + 1]) * 0.1),
        ]
        nodes.append(
            helper.make_node(
                "Conv", [x, f"CW{i}", f"CB{i}"], [f"c{i}"], kernel_shape=[3, 3], strides=[strides[i]] * 2, pads=[1, 1, 1, 1]
            )
        )
        nodes.append(helper.make_node("Relu", [f"c{i}"], [f"r{i}"]))
        x = f"r{i}"
        if i < 2:
            nodes.append(helper.make_node("MaxPool", [x], [f"p{i}"], kernel_shape=[2, 2], strides=[2, 2]))
            x = f"p{i}"
    nodes += [
        helper.make_node("GlobalAveragePool", [x], ["gap"]),
        helper.make_node("Flatten", ["gap"], ["features"], axis=1),
    ]
    inits += [_init("FW", rng.standard_normal((10, 64)) / 8), _init("FB", rng.standard_normal(10) * 0.1)]
    nodes.append(helper.make_node("Gemm", ["features", "FW", "FB"], ["logits"], transB=1))
    graph = helper.make_graph(
        nodes,
        "cnn",
        [helper.make_tensor_value_info("input", TensorProto.UINT8 if uint8 else TensorProto.FLOAT, ["batch", 3, size, size])],
        [
            helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 10]),
            helper.make_tensor_value_info("features", TensorProto.FLOAT, ["batch", 64]),
        ],
        inits,
    )
    return _save(graph, path)


def audio(path: Path, n_mels: int = 80, seed: int = 2) -> Path:
    """Log-mel (batch, n_mels, frames) -> Conv1d over time -> Relu -> mean over time ->
    Gemm -> Sigmoid: ``scores`` (batch, 5) (multi-label tagging)."""
    rng = np.random.default_rng(seed)
    inits = [
        _init("KW", rng.standard_normal((32, n_mels, 3)) / np.sqrt(n_mels * 3)),
        _init("KB", rng.standard_normal(32) * 0.1),
        _init("scale", np.array(1 / 80.0)),
        _init("OW", rng.standard_normal((5, 32)) / np.sqrt(32)),
        _init("OB", rng.standard_normal(5) * 0.1),
    ]
    nodes = [
        # power_to_db values are in [-80, 0] dB: scale to about [-1, 0].
        helper.make_node("Mul", ["input", "scale"], ["xs"]),
        helper.make_node("Conv", ["xs", "KW", "KB"], ["c"], kernel_shape=[3], pads=[1, 1]),
        helper.make_node("Relu", ["c"], ["r"]),
        helper.make_node("ReduceMean", ["r"], ["m"], axes=[2], keepdims=0),
        helper.make_node("Gemm", ["m", "OW", "OB"], ["o"], transB=1),
        helper.make_node("Sigmoid", ["o"], ["scores"]),
    ]
    graph = helper.make_graph(
        nodes,
        "audio",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, ["batch", n_mels, "frames"])],
        [helper.make_tensor_value_info("scores", TensorProto.FLOAT, ["batch", 5])],
        inits,
    )
    return _save(graph, path)
