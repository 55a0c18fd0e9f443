"""A stateful LSTM inference service: sessions keep each stream's (h, C) on the server."""
