"""Quantized layers that drop into an ordinary PyTorch model."""

from qnnlab.nn.batchnorm import ShiftBatchNorm1d, ShiftBatchNorm2d
from qnnlab.nn.conv import QuantConv2d
from qnnlab.nn.convert import quantize_model
from qnnlab.nn.linear import DropConnectLinear, QuantLinear
from qnnlab.nn.loss import SquaredHingeLoss
from qnnlab.nn.maxout import Maxout
from qnnlab.nn.quantized import QuantizedLayer, QuantizedModule
from qnnlab.nn.residual import ResidualSum
from qnnlab.nn.rnn import QuantGRU, QuantLSTM, QuantRNNBase
from qnnlab.nn.shifts import RPReLU

__all__ = [
    "DropConnectLinear",
    "Maxout",
    "QuantConv2d",
    "QuantGRU",
    "QuantLSTM",
    "QuantLinear",
    "QuantRNNBase",
    "QuantizedLayer",
    "QuantizedModule",
    "RPReLU",
    "ResidualSum",
    "ShiftBatchNorm1d",
    "ShiftBatchNorm2d",
    "SquaredHingeLoss",
    "quantize_model",
]
