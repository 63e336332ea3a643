"""`attngan serve`: the web page and JSON API on a local port."""

from __future__ import annotations

NAME = "serve"
HELP = "serve the web page and JSON API (POST /api/v1/generate) for a model"


def add_arguments(p) -> None:
    p.add_argument("--model", default=None, help="model folder or bundled model name (synthbirds-128, synthbirds-tiny; default: the first bundled)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default: loopback only; 0.0.0.0 exposes it to the network)")
    p.add_argument("--port", type=int, default=8000, help="port (default: 8000; 0 picks a free one)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--max-batch", type=int, default=8,
                   help="most images generated in one call when requests arrive together (1 = no batching; "
                        "one request's own samples always run together)")
    p.add_argument("--queue", type=int, default=64,
                   help="most requests waiting; beyond it the server answers 503 with Retry-After")
    p.add_argument("--captioner", default=None,
                   help="captioner folder or bundled name shown under each image as \"I think it's ...\" "
                        "(default: the bundled synthbirds-captioner when installed)")
    p.add_argument("--no-captioner", action="store_true", help="no captions under the images")
    p.add_argument("--batch-wait-ms", type=float, default=5.0,
                   help="how long a batch waits for more requests to join it (default: 5)")


def _listen(host: str, port: int):
    """Bind the socket ourselves so a busy port is one clear error, not a uvicorn exit."""
    import socket

    from attngan.errors import AttnGANError

    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise AttnGANError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def _json_400_protocol():
    """uvicorn's HTTP/1.1 protocol, with its own answer to a request it cannot parse (a malformed
    Content-Length, a broken request line) in the JSON shape of every other API error,
    {"error": ...}, instead of plain text."""
    import json

    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class JSONErrorH11Protocol(H11Protocol):
        def send_400_response(self, msg: str) -> None:
            body = json.dumps({"error": msg}).encode("utf-8")
            headers = [(b"content-type", b"application/json"), (b"connection", b"close"),
                       (b"content-length", str(len(body)).encode())]
            for event in (h11.Response(status_code=400, headers=headers, reason=b"Bad Request"),
                          h11.Data(data=body), h11.EndOfMessage()):
                self.transport.write(self.conn.send(event))
            self.transport.close()

    return JSONErrorH11Protocol


def run(args) -> int:
    from attngan.errors import AttnGANError

    if not 0 <= args.port <= 65535:
        raise AttnGANError(f"--port must be between 0 and 65535, got {args.port}")
    if args.max_batch < 1:
        raise AttnGANError(f"--max-batch must be at least 1, got {args.max_batch}")
    if args.queue < 1:
        raise AttnGANError(f"--queue must be at least 1, got {args.queue}")
    if args.batch_wait_ms < 0:
        raise AttnGANError(f"--batch-wait-ms must be >= 0, got {args.batch_wait_ms}")
    try:
        import uvicorn

        from attngan.serve.app import create_app
    except ModuleNotFoundError as e:
        raise AttnGANError(f"attngan serve needs {e.name}: pip install 'attngan[serve]'") from None
    from attngan.pipeline import AttnGANPipeline

    sock = _listen(args.host, args.port)
    try:
        pipe = AttnGANPipeline.from_pretrained(args.model, device=args.device)
        captioner = None
        if not args.no_captioner:
            from attngan.captioner import Captioner, bundled_captioner_names

            if args.captioner is not None or bundled_captioner_names():
                captioner = Captioner.from_pretrained(args.captioner, device=args.device)
        app = create_app(pipe, max_batch=args.max_batch, queue_size=args.queue,
                         batch_wait_ms=args.batch_wait_ms, captioner=captioner)
        host, port = sock.getsockname()[:2]
        shown = f"[{host}]" if ":" in host else host
        print(f"attngan serve: model '{pipe.config.name}' on {pipe.device}; "
              f"open http://{shown}:{port}/  (Ctrl+C stops)", flush=True)
        if args.host not in ("127.0.0.1", "localhost", "::1"):
            print("attngan serve: note: listening beyond loopback; there is no authentication", flush=True)
        config = uvicorn.Config(app, log_level="info", access_log=False, timeout_graceful_shutdown=5,
                                http=_json_400_protocol())
        try:
            uvicorn.Server(config).run(sockets=[sock])
        except KeyboardInterrupt:  # uvicorn re-raises the Ctrl+C it handled: a normal stop
            pass
    finally:
        sock.close()
    return 0
