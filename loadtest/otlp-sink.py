"""An OTLP/gRPC receiver for benchmarks: accepts trace and metrics exports on 127.0.0.1:<port>,
counts what arrives (spans by service, metric exports) and keeps nothing else. On SIGTERM or
SIGINT it prints one JSON line with the counts and exits.

    python loadtest/otlp-sink.py 4317

It uses the `opentelemetry-proto` messages and grpcio (deploy/local/requirements.txt), not an
OpenTelemetry SDK: the services' exporters are checked against an independent receiver.
"""
import json
import signal
import sys
import threading
import time
from collections import Counter
from concurrent import futures

import grpc
from opentelemetry.proto.collector.metrics.v1 import metrics_service_pb2, metrics_service_pb2_grpc
from opentelemetry.proto.collector.trace.v1 import trace_service_pb2, trace_service_pb2_grpc


def main():
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 4317
    spans, exports, lock = Counter(), Counter(), threading.Lock()

    def service_of(resource):
        for kv in resource.attributes:
            if kv.key == "service.name":
                return kv.value.string_value
        return "?"

    class Traces(trace_service_pb2_grpc.TraceServiceServicer):
        def Export(self, request, context):
            with lock:
                exports["traces"] += 1
                for rs in request.resource_spans:
                    spans[service_of(rs.resource)] += sum(len(ss.spans) for ss in rs.scope_spans)
            return trace_service_pb2.ExportTraceServiceResponse()

    class Metrics(metrics_service_pb2_grpc.MetricsServiceServicer):
        def Export(self, request, context):
            with lock:
                exports["metrics"] += 1
            return metrics_service_pb2.ExportMetricsServiceResponse()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=4),
                         options=[("grpc.max_receive_message_length", 64 << 20)])
    trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Traces(), server)
    metrics_service_pb2_grpc.add_MetricsServiceServicer_to_server(Metrics(), server)
    if server.add_insecure_port(f"127.0.0.1:{port}") == 0:
        sys.exit(f"otlp-sink: cannot listen on 127.0.0.1:{port}")
    server.start()
    started = time.monotonic()
    done = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: done.set())
    print(f"otlp-sink listening on 127.0.0.1:{port}", file=sys.stderr, flush=True)
    done.wait()
    server.stop(1)
    with lock:
        print(json.dumps({"seconds": round(time.monotonic() - started, 1), "spans": dict(spans),
                          "exports": dict(exports)}), flush=True)


if __name__ == "__main__":
    main()
