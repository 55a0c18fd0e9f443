"""Offline model pipeline: data, the torch LSTM, training, ONNX export and verification."""
