"""HTTP: the REST routes (:mod:`.v1`, :mod:`.v2`, :mod:`.repository`, :mod:`.health`,
:mod:`.docs`), WebSocket streaming (:mod:`.websocket`), the hot routes' mechanism
(:mod:`.hot`) and the front that serves them below ASGI (:mod:`.front`), and what only HTTP
has: its error replies (:mod:`.errors`), middleware and access log (:mod:`.middleware`),
the REST wire types (:mod:`.wire`) and JSON responses (:mod:`.responses`)."""
