"""A peer server for `serve_peers.py`: KServe's own Python model server (PyPI `kserve`)
serving an ONNX file on ONNX Runtime through the Open Inference Protocol (KServe v2 REST).

Run it with a Python that has `kserve` installed (it pins psutil<6, so keep it in its own
virtual environment, e.g. `results/kserve-venv`; see serve_peers.py):

    python benchmarks/kserve_peer.py MODEL.onnx --name cnn --port 8090 --threads 1

The model follows KServe's documented custom-model pattern: a `kserve.Model` whose
`predict` takes an `InferRequest` and returns an `InferResponse`.
"""

from __future__ import annotations

import argparse

import kserve
import onnxruntime as ort
from kserve import InferOutput, InferRequest, InferResponse

_DATATYPE = {"tensor(float)": "FP32", "tensor(int64)": "INT64", "tensor(int32)": "INT32"}


class OnnxModel(kserve.Model):
    def __init__(self, name: str, path: str, threads: int) -> None:
        super().__init__(name)
        self.path, self.threads = path, threads
        self.load()

    def load(self) -> bool:
        so = ort.SessionOptions()
        so.intra_op_num_threads, so.inter_op_num_threads = self.threads, 1
        self.session = ort.InferenceSession(self.path, so, providers=["CPUExecutionProvider"])
        self.ready = True
        return self.ready

    def predict(self, payload: InferRequest, headers: dict[str, str] | None = None,
                response_headers: dict[str, str] | None = None) -> InferResponse:
        feeds = {i.name: i.as_numpy() for i in payload.inputs}
        outputs = []
        for meta, value in zip(self.session.get_outputs(), self.session.run(None, feeds),
                               strict=True):
            out = InferOutput(meta.name, list(value.shape), _DATATYPE[meta.type])
            out.set_data_from_numpy(value, binary_data=False)
            outputs.append(out)
        return InferResponse(response_id=payload.id or "", model_name=self.name,
                             infer_outputs=outputs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("model")
    parser.add_argument("--name", required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--grpc-port", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    server = kserve.ModelServer(http_port=args.port, grpc_port=args.grpc_port or args.port + 1,
                                enable_grpc=False, workers=1)
    server.start([OnnxModel(args.name, args.model, args.threads)])


if __name__ == "__main__":
    main()
