"""Every quantized layer implements one protocol: its quantized parameters and activations."""

import pytest
import torch

from qnnlab import quant
from qnnlab.nn import DropConnectLinear, QuantConv2d, QuantGRU, QuantizedModule, QuantLinear, QuantLSTM

LAYERS = [
    lambda: QuantLinear(5, 3, weight_quantizer="sign", input_quantizer="sign"),
    lambda: QuantConv2d(2, 4, 3, weight_quantizer="ternary", input_quantizer="dorefa:bits=2"),
    lambda: DropConnectLinear(5, 3, p=0.5, weight_quantizer="sign"),
    lambda: QuantLSTM(4, 6, num_layers=2, weight_quantizer="sign", state_quantizer="sign"),
    lambda: QuantGRU(4, 6, weight_quantizer="int:bits=2"),
]


@pytest.mark.parametrize("make", LAYERS)
def test_each_layer_names_its_quantized_parameters_and_activations(make):
    layer = make()
    assert isinstance(layer, QuantizedModule)
    quantizers = layer.weight_quantizers_by_name()
    params = dict(layer.named_parameters())
    assert quantizers and set(quantizers) <= set(params)
    for name, tensor in layer.quantized_weights().items():
        assert torch.equal(tensor, quantizers[name](params[name]))
    assert all(isinstance(q, quant.Quantizer) for q in layer.activation_quantizers().values())
    first = next(iter(quantizers))
    layer.set_weight_quantizer(first, quant.get("float"))
    assert torch.equal(layer.quantized_weights()[first], params[first])
    with pytest.raises(KeyError, match="nope"):
        layer.set_weight_quantizer("nope", quant.get("float"))
