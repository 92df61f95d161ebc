"""qnnlab: train, analyse and run quantized neural networks."""

__version__ = "0.1.0"
