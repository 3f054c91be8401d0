#!/usr/bin/env python3
"""A foreign gRPC peer for the integration tests, built on Python grpcio.

  grpc_peer.py server            serve test.Echo on 127.0.0.1:<free port>; prints the port
  grpc_peer.py client HOST:PORT  call Unary (OK and NOT_FOUND) and Stream; prints JSON

Messages are raw bytes (no protobuf schema), so no code generation is needed.
"""
import json
import sys
from concurrent import futures

import grpc

OPTIONS = [("grpc.enable_http_proxy", 0)]


def serve():
    def unary(request, context):
        if request == b"missing":
            context.abort(grpc.StatusCode.NOT_FOUND, "no such order")
        return b"echo:" + request

    def stream(request, context):
        for i in range(3):
            yield b"%d:%s" % (i, request)

    handler = grpc.method_handlers_generic_handler(
        "test.Echo",
        {
            "Unary": grpc.unary_unary_rpc_method_handler(unary),
            "Stream": grpc.unary_stream_rpc_method_handler(stream),
        },
    )
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4), options=OPTIONS)
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    print(port, flush=True)
    # Ends when the test closes our stdin.
    sys.stdin.read()
    server.stop(0)


def client(target):
    out = {}
    with grpc.insecure_channel(target, options=OPTIONS) as channel:
        unary = channel.unary_unary("/test.Echo/Unary")
        out["ok"] = unary(b"hello", timeout=10).decode()
        try:
            unary(b"missing", timeout=10)
            out["not_found"] = None
        except grpc.RpcError as e:
            out["not_found"] = [e.code().name, e.details()]
        stream = channel.unary_stream("/test.Echo/Stream")
        out["stream"] = [m.decode() for m in stream(b"x", timeout=10)]
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    if sys.argv[1:2] == ["server"]:
        serve()
    elif sys.argv[1:2] == ["client"] and len(sys.argv) == 3:
        client(sys.argv[2])
    else:
        sys.exit(__doc__)
