"""Transports: native REST (v1), Open Inference Protocol v2, WebSocket. They call the data plane."""
