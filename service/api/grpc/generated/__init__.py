"""Triton's gRPC service and model configuration messages, vendored (see
``scripts/vendor_triton_protos.py``): ``model_config_pb2``, ``service_pb2``, ``service_pb2_grpc``."""
