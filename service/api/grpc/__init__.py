"""The Open Inference Protocol's gRPC service (``inference.GRPCInferenceService``, KServe and
Triton), with Triton's ``ModelStreamInfer`` for sequences, and ``grpc.health.v1``.

It runs in the HTTP server's process and event loop (grpc.aio), on the same data plane:
same batcher, sessions, API keys, limits and metrics. ``codec`` turns protobuf into the
transport-neutral :class:`~service.api.protocol.v2_codec.InferRequest` and back, ``status`` maps
domain errors to gRPC status codes, ``servicer`` serves the RPCs, ``streaming`` serves
``ModelStreamInfer``, and ``server`` starts, drains and stops it all.
"""
