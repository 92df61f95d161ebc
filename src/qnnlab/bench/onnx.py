"""The float model deployed with ONNX Runtime: float32, and static int8 (weights int8 per output
channel, activations uint8 per tensor from a calibration pass, QDQ format, so ORT runs the int8
convolution and GEMM kernels: VNNI where the CPU has it). This is the int8 a user would deploy
instead of a binary network; torch's dynamic int8 leaves convolutions in float. Where OpenVINO is
installed, the same two ONNX files also run in OpenVINO's CPU plugin (which executes the QDQ
model's quantized layers in int8, and the float one in float32, its precision hint pinned).

Needs the ``bench`` extra (``pip install 'qnnlab[bench]'``: onnxruntime, onnx and openvino)."""

from __future__ import annotations

import importlib.util
import logging
import multiprocessing
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import torch

INSTALL = "the ONNX Runtime baselines need onnxruntime and onnx: pip install 'qnnlab[bench]'"


def available() -> bool:
    try:
        import onnx  # noqa: F401
        import onnxruntime  # noqa: F401
    except ImportError:
        return False
    return True


def sessions(
    model: torch.nn.Module, calibration: torch.Tensor, threads: int, folder: Path
) -> dict[str, Callable[[torch.Tensor], object]]:
    """{"ort-float32": run, "ort-int8-static": run}, each ``run(x)`` returning the logits as numpy;
    the two ONNX files stay in ``folder`` as ``float.onnx`` and ``int8.onnx``."""
    if not available():
        raise ValueError(INSTALL)
    import onnxruntime as ort
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Batches(CalibrationDataReader):
        def __init__(self) -> None:
            self.items = iter([{"x": calibration[i : i + 16].numpy()} for i in range(0, len(calibration), 16)])

        def get_next(self):
            return next(self.items, None)

    options = ort.SessionOptions()
    options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    # idle threads do not spin: timed in alternation with other models, a spinning pool would take
    # their cores (each model is then timed as it runs alone in a process that also does other work)
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    runs = {}
    with tempfile.TemporaryDirectory() as tmp:
        prepared = Path(tmp) / "prepared.onnx"
        float_path, int8_path = folder / "float.onnx", folder / "int8.onnx"
        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)  # the quantizer logs its advice on the root logger
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                torch.onnx.export(
                    model.eval(),
                    (calibration[:1],),
                    str(float_path),
                    input_names=["x"],
                    output_names=["logits"],
                    dynamic_axes={"x": {0: "batch"}, "logits": {0: "batch"}},
                    opset_version=17,
                    dynamo=False,
                )
                quant_pre_process(str(float_path), str(prepared))  # shapes inferred, graph folded, as ORT advises
                quantize_static(
                    str(prepared),
                    str(int8_path),
                    Batches(),
                    quant_format=QuantFormat.QDQ,
                    per_channel=True,
                    activation_type=QuantType.QUInt8,
                    weight_type=QuantType.QInt8,
                )
        finally:
            root.setLevel(level)
        for name, path in (("ort-float32", float_path), ("ort-int8-static", int8_path)):
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            runs[name] = lambda x, s=session: s.run(None, {"x": x.numpy()})[0]
    return runs


def openvino_available() -> bool:
    return importlib.util.find_spec("openvino") is not None


def openvino_ms(folder: Path, x: torch.Tensor, threads: int, repeats: int) -> dict[str, float]:
    """Median ms of OpenVINO's CPU plugin on ``folder``'s float.onnx and int8.onnx, called back to
    back in a process of its own: after each call its (TBB) workers spin for a while, which slowed
    whatever this process timed next (the packed CNN at batch 100 by half), so it cannot take part
    in the interleaved rounds. {} without OpenVINO."""
    if not openvino_available():
        return {}
    with multiprocessing.get_context("spawn").Pool(1) as pool:
        return pool.apply(_openvino_medians, (str(folder), x.numpy(), threads, repeats))


def _openvino_medians(folder: str, x, threads: int, repeats: int) -> dict[str, float]:
    import openvino

    from qnnlab.timing import median_ms

    core = openvino.Core()
    config = {"INFERENCE_NUM_THREADS": threads, "PERFORMANCE_HINT": "LATENCY", "INFERENCE_PRECISION_HINT": "f32"}
    found = {}
    for name, file in (("openvino-float32", "float.onnx"), ("openvino-int8", "int8.onnx")):
        request = core.compile_model(str(Path(folder) / file), "CPU", config).create_infer_request()
        found[name] = median_ms(lambda r=request: r.infer([x]), repeats, warmup=3)
    return found


def openvino_outputs(folder: Path, x: torch.Tensor) -> dict[str, object]:
    """The logits OpenVINO computes from ``folder``'s two files (for tests), in this process."""
    import openvino

    core = openvino.Core()
    return {
        name: core.compile_model(str(folder / file), "CPU", {"INFERENCE_PRECISION_HINT": "f32"})
        .create_infer_request()
        .infer([x.numpy()])[0]
        for name, file in (("openvino-float32", "float.onnx"), ("openvino-int8", "int8.onnx"))
    }
