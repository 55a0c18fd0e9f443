"""The descriptor pool of the vendored Triton protos: the service's own, not protobuf's
default pool, so that another copy of the ``inference.*`` messages in the same process
(tritonclient's, KServe's) does not clash with these."""

from google.protobuf import descriptor_pool

POOL = descriptor_pool.DescriptorPool()
