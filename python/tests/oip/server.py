"""An Open Inference Protocol v2 model server for kiln's scoring tests: KServe's
``ModelServer`` (from PyPI, no code of kiln's) serving one ONNX model through onnxruntime,
bound to 127.0.0.1, with a test-only middleware that injects faults and counts requests.

usage: python server.py MODEL.onnx NAME PORT

Test control (not part of OIP):
- ``POST /_test/faults`` ``{"faults": [{"status": 503, "retry_after": "1"}, {"delay_s": 2}],
  "delay_s": 0}``: the next infer requests, one fault each, in order (``status``: answer with
  it; ``delay_s``: answer late); ``delay_s`` at the top level delays every infer request.
- ``GET /_test/stats``: ``{"infer": served, "max_inflight": ..., "inflight": ..., "ids": [...]}``
  (``ids``: the request ids of served infer requests, in order).
"""
import sys

model_path, model_name, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
sys.argv = sys.argv[:1]  # kserve.model_server parses sys.argv when imported

import asyncio  # noqa: E402
import json  # noqa: E402

import numpy as np  # noqa: E402
import onnxruntime as ort  # noqa: E402
from fastapi import Request  # noqa: E402
from fastapi.responses import JSONResponse  # noqa: E402
from kserve import InferOutput, InferRequest, InferResponse, Model, ModelServer  # noqa: E402
from kserve.model_server import app  # noqa: E402  (the FastAPI app ModelServer serves)
import kserve.protocol.rest.server as rest  # noqa: E402

_Config = rest.uvicorn.Config


class LoopbackConfig(_Config):
    """KServe hard-codes host 0.0.0.0; tests bind loopback only."""

    def __init__(self, *args, **kwargs):
        kwargs["host"] = "127.0.0.1"
        super().__init__(*args, **kwargs)


rest.uvicorn.Config = LoopbackConfig

NP_TO_V2 = {np.dtype("float32"): "FP32", np.dtype("uint8"): "UINT8", np.dtype("int64"): "INT64"}
ORT_TO_V2 = {"tensor(float)": "FP32", "tensor(uint8)": "UINT8", "tensor(int64)": "INT64"}


class OnnxModel(Model):
    def __init__(self, name: str, path: str):
        super().__init__(name)
        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        self.session = ort.InferenceSession(path, options, providers=["CPUExecutionProvider"])
        self.ready = True

    def _types(self, args):
        return [
            {"name": a.name, "datatype": ORT_TO_V2[a.type], "shape": [d if isinstance(d, int) else -1 for d in a.shape]}
            for a in args
        ]

    def get_input_types(self):
        return self._types(self.session.get_inputs())

    def get_output_types(self):
        return self._types(self.session.get_outputs())

    async def predict(self, payload: InferRequest, headers=None, response_headers=None):
        feeds = {i.name: i.as_numpy() for i in payload.inputs}
        outputs = await asyncio.to_thread(self.session.run, None, feeds)
        names = [o.name for o in self.session.get_outputs()]
        return InferResponse(
            response_id=payload.id or "",
            model_name=self.name,
            infer_outputs=[
                InferOutput(name=n, shape=list(o.shape), datatype=NP_TO_V2[o.dtype], data=o) for n, o in zip(names, outputs)
            ],
        )


state = {"faults": [], "delay_s": 0.0, "inflight": 0, "max_inflight": 0, "infer": 0, "ids": []}


@app.middleware("http")
async def faults(request: Request, call_next):
    path = request.url.path
    if path == "/_test/faults":
        body = await request.json()
        state["faults"] = list(body.get("faults", []))
        state["delay_s"] = float(body.get("delay_s", 0.0))
        return JSONResponse({"ok": True})
    if path == "/_test/stats":
        return JSONResponse({k: state[k] for k in ("infer", "max_inflight", "inflight", "ids")})
    if not path.endswith("/infer"):
        return await call_next(request)
    state["inflight"] += 1
    state["max_inflight"] = max(state["max_inflight"], state["inflight"])
    try:
        if state["delay_s"]:
            await asyncio.sleep(state["delay_s"])
        if state["faults"]:
            fault = state["faults"].pop(0)
            if fault.get("delay_s"):
                await asyncio.sleep(fault["delay_s"])
            if "status" in fault:
                headers = {"Retry-After": str(fault["retry_after"])} if "retry_after" in fault else {}
                return JSONResponse({"error": "injected"}, status_code=fault["status"], headers=headers)
        request_id = json.loads(await request.body()).get("id")
        response = await call_next(request)
        if response.status_code == 200:
            state["infer"] += 1
            state["ids"].append(request_id)
        return response
    finally:
        state["inflight"] -= 1


if __name__ == "__main__":
    ModelServer(http_port=port, enable_grpc=False, workers=1).start([OnnxModel(model_name, model_path)])
