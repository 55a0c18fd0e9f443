"""Where the protobuf modules come from: the ones generated from Triton's ``grpc_service.proto``
and ``model_config.proto``, vendored in :mod:`service.api.grpc.generated` (by
``scripts/vendor_triton_protos.py``, from the ``tritonclient`` wheel; a test holds the copy to
it) with a descriptor pool of their own.

Triton's service is a superset of KServe's ``grpc_predict_v2.proto`` (same package
``inference``, same service name, same field numbers), so KServe clients speak to it too. The
service's own pool means a process that imports the service and tritonclient (or KServe's
modules) holds both copies of the ``inference.*`` messages without a clash. See docs/clients.md.
"""

from __future__ import annotations

from service.api.grpc.generated import model_config_pb2, service_pb2, service_pb2_grpc

__all__ = ["model_config_pb2", "service_pb2", "service_pb2_grpc"]
