"""The reference the service is measured against: the simplest server one would write.

A plain FastAPI app, one onnxruntime call per request, no batching, no sessions: the
client sends the state (h0, c0) with every step and gets the new state back.
``python -m bench.naive_server --model-dir DIR --port P``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import onnxruntime as ort
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel


class Req(BaseModel):
    x: list[list[list[float]]]
    h0: list[list[list[float]]]
    c0: list[list[list[float]]]


def build(model_dir: Path) -> FastAPI:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(model_dir / "model.onnx"), opts, providers=["CPUExecutionProvider"])
    app = FastAPI()

    @app.post("/predict")
    async def predict(req: Req) -> dict:
        feeds = {k: np.asarray(getattr(req, k), np.float32) for k in ("x", "h0", "c0")}
        y, hn, cn = sess.run(None, feeds)  # on the event loop: the simplest (and, for small models, fastest) way
        return {"y": y.tolist(), "hn": hn.tolist(), "cn": cn.tolist()}

    @app.get("/health")
    async def health() -> dict:
        return {"ok": True}

    return app


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--model-dir", type=Path, required=True)
    p.add_argument("--port", type=int, default=8001)
    a = p.parse_args()
    uvicorn.run(build(a.model_dir), host="127.0.0.1", port=a.port, log_level="warning", access_log=False)


if __name__ == "__main__":
    main()
