"""Where the protobuf modules come from: the ones generated from Triton's ``grpc_service.proto``
and ``model_config.proto`` that ``tritonclient[grpc]`` ships (pinned in constraints.txt).

Triton's service is a superset of KServe's ``grpc_predict_v2.proto`` (same package
``inference``, same service name, same field numbers), so KServe clients speak to it too.
Using the client's own generated modules means the server and the reference client share
one descriptor set: nothing to generate at build time, nothing generated to keep in this
repository, and no second definition of the ``inference.*`` messages in a process that
imports both. See docs/clients.md.
"""

from __future__ import annotations

from tritonclient.grpc import model_config_pb2, service_pb2, service_pb2_grpc

__all__ = ["model_config_pb2", "service_pb2", "service_pb2_grpc"]
