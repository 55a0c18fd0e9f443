"""What a request means, whatever carries it: the Open Inference Protocol's inference
(:mod:`.inference`), its JSON and binary bodies (:mod:`.v2_codec`), the checked decoding of
JSON numbers (:mod:`.decode`), the one JSON encoder (:mod:`.json`), the documents about the
server and its models (:mod:`.documents`: metadata, :mod:`.model_config`, :mod:`.statistics`)
and the repository extension's parameters (:mod:`.repository`). REST, WebSocket and gRPC
all use these; nothing here knows HTTP or gRPC."""
