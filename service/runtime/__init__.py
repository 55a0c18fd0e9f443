"""onnxruntime wrapper: model repository, providers, IO checks, warm-up. Imports no web framework."""
