"""`attngan serve`: the web page and JSON API on a local port."""

from __future__ import annotations

NAME = "serve"
HELP = "serve the web page and JSON API (POST /api/v1/generate) for one model or several"

# Served when no --model is given (those installed), the first the default: a bird model and a
# scene model, between which the page and the API choose.
DEFAULT_MODELS = ("synthbirds-128", "synthscenes-128")


def add_arguments(p) -> None:
    p.add_argument("--model", action="append", default=None,
                   help="model folder or bundled model name (synthbirds-128, synthbirds-tiny, synthscenes-128); "
                        "repeat it to serve several, the first being the default (default: synthbirds-128 "
                        "and synthscenes-128, those installed)")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on (default: loopback only; 0.0.0.0 exposes it to the network)")
    p.add_argument("--port", type=int, default=8000, help="port (default: 8000; 0 picks a free one)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    p.add_argument("--max-batch", type=int, default=8,
                   help="most images generated in one call when requests arrive together (1 = no batching; "
                        "one request's own samples always run together)")
    p.add_argument("--queue", type=int, default=64,
                   help="most requests waiting; beyond it the server answers 503 with Retry-After")
    p.add_argument("--captioner", action="append", default=None,
                   help="captioner folder or bundled name whose reading of each image of the models of its "
                        "data set is shown under it as \"I think it's ...\"; repeat it for several data sets "
                        "(default: synthbirds-captioner for bird models, synthscenes-captioner for scene "
                        "models, when installed)")
    p.add_argument("--no-captioner", action="store_true", help="no captions under the images")
    p.add_argument("--batch-wait-ms", type=float, default=5.0,
                   help="how long a batch waits for more requests to join it, 0 to 1000 (default: 5)")
    p.add_argument("--read-timeout", type=float, default=10.0,
                   help="seconds a client has to send a whole request, headers and body; slower "
                        "connections are closed (default: 10)")
    p.add_argument("--max-connections", type=int, default=None,
                   help="open connections at most; more are closed at once (default: the open-file "
                        "limit less a reserve, at most 1024)")


# Files the server itself keeps open beyond its connections (the listening socket, the model's
# files while loading, the log, torch's and the thread pool's own): connections stay below the
# open-file limit by this much, so a flood of idle connections never makes accept() fail.
FD_RESERVE = 64
# asyncio accepts up to the listen backlog's count of connections in one go before any of them
# reaches the protocol that may close it: the cap leaves room for one such burst.
ACCEPT_BACKLOG = 64
MAX_CONNECTIONS = 1024
MAX_READ_TIMEOUT = 3600.0


def default_max_connections() -> int:
    import resource

    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return MAX_CONNECTIONS
    return max(1, min(MAX_CONNECTIONS, soft - FD_RESERVE - ACCEPT_BACKLOG))


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
    sock.listen(ACCEPT_BACKLOG)
    sock.set_inheritable(True)
    return sock


def _json_400_protocol(read_timeout: float = 10.0, max_connections: int = MAX_CONNECTIONS):
    """uvicorn's HTTP/1.1 protocol, with
    - its own answer to a request it cannot parse (a malformed Content-Length, a broken request
      line) in the JSON shape of every other API error, {"error": ...}, instead of plain text;
    - a read deadline: a connection must deliver each whole request (headers and body) within
      `read_timeout` seconds of opening or of its previous answer, else it is closed (uvicorn times
      out only idle keep-alive connections, so one that sends half a header line held its file
      descriptor for ever);
    - a cap on open connections: one beyond `max_connections` is closed as soon as it is accepted."""
    import json

    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class JSONErrorH11Protocol(H11Protocol):
        _read_deadline = None

        def connection_made(self, transport) -> None:
            super().connection_made(transport)
            if len(self.connections) > max_connections:
                self.connections.discard(self)
                transport.abort()
                return
            self._arm_read_deadline()

        def connection_lost(self, exc) -> None:
            self._disarm_read_deadline()
            super().connection_lost(exc)

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm_read_deadline()  # for the next request on this connection

        def _arm_read_deadline(self) -> None:
            self._disarm_read_deadline()
            self._read_deadline = self.loop.call_later(read_timeout, self._read_deadline_passed)

        def _disarm_read_deadline(self) -> None:
            if self._read_deadline is not None:
                self._read_deadline.cancel()
                self._read_deadline = None

        def _read_deadline_passed(self) -> None:
            self._read_deadline = None
            # IDLE: the request line and headers are not complete; SEND_BODY: the body is not.
            # Once the whole request is in, the app's own time is not limited here.
            if self.conn.their_state in (h11.IDLE, h11.SEND_BODY) and not self.transport.is_closing():
                self.transport.close()

        def send_400_response(self, msg: str) -> None:
            body = json.dumps({"error": msg}).encode("utf-8")
            headers = [(b"content-type", b"application/json"), (b"connection", b"close"),
                       (b"content-length", str(len(body)).encode())]
            for event in (h11.Response(status_code=400, headers=headers, reason=b"Bad Request"),
                          h11.Data(data=body), h11.EndOfMessage()):
                self.transport.write(self.conn.send(event))
            self.transport.close()

    return JSONErrorH11Protocol


def model_name(pipeline, given) -> str:
    """What the server calls a model: the bundled name it was given by, else its model card's name,
    else its config's."""
    from pathlib import Path

    from attngan.io import bundled_model_names

    if given is not None and given in bundled_model_names() and not Path(given).exists():
        return given
    card = (pipeline.source.meta.get("model_card") if pipeline.source is not None else None) or {}
    name = card.get("name") if isinstance(card, dict) else None
    return name if isinstance(name, str) and name else pipeline.config.name


def load_models(models: list[str] | None, captioners: list[str] | None, no_captioner: bool,
                device: str) -> dict:
    """{name: Served} of the models to serve (--model, or DEFAULT_MODELS), the default first, each
    with the captioner of its data set: one of `captioners` (--captioner), else the bundled one of
    CAPTIONERS when installed, else none and a note saying why."""
    from attngan.captioner import Captioner, bundled_captioner_names
    from attngan.errors import AttnGANError
    from attngan.io import bundled_model_names
    from attngan.pipeline import AttnGANPipeline
    from attngan.serve.app import CAPTIONERS, Served

    if not models:
        installed = bundled_model_names()
        models = [n for n in DEFAULT_MODELS if n in installed] or [None]
    pipes = {}
    for given in models:
        pipe = AttnGANPipeline.from_pretrained(given, device=device)
        name = model_name(pipe, given)
        if name in pipes:
            raise AttnGANError(f"two of the models to serve are called '{name}'; give each model once")
        pipes[name] = pipe
    if no_captioner:
        return {name: Served(pipe) for name, pipe in pipes.items()}
    datasets = {pipe.config.data.dataset for pipe in pipes.values()}
    readers = {}  # data set -> the captioner of its models
    for given in captioners or ():
        captioner = Captioner.from_pretrained(given, device=device)
        dataset = captioner.config.data.dataset
        if dataset in readers:
            raise AttnGANError(f"two captioners read {dataset} images; give one --captioner per data set")
        if dataset not in datasets:
            raise AttnGANError(f"--captioner {given} reads {dataset} images, and no model served is of "
                               f"that data set ({', '.join(sorted(datasets))})")
        readers[dataset] = captioner
    served = {}
    for name, pipe in pipes.items():
        dataset, note = pipe.config.data.dataset, None
        bundled = CAPTIONERS.get(dataset)
        if dataset not in readers and bundled in bundled_captioner_names():
            readers[dataset] = Captioner.from_pretrained(bundled, device=device)
        elif dataset not in readers:
            note = (f"{bundled} is not installed" if bundled else
                    f"no bundled captioner reads {dataset} images (--captioner gives one)")
        served[name] = Served(pipe, readers.get(dataset), note)
    return served


def run(args) -> int:
    from attngan.errors import AttnGANError

    if not 0 <= args.port <= 65535:
        raise AttnGANError(f"--port must be between 0 and 65535, got {args.port}")
    if args.max_batch < 1:
        raise AttnGANError(f"--max-batch must be at least 1, got {args.max_batch}")
    if args.queue < 1:
        raise AttnGANError(f"--queue must be at least 1, got {args.queue}")
    from attngan.serve.batching import MAX_WAIT_MS

    if not 0 <= args.batch_wait_ms <= MAX_WAIT_MS:  # NaN and inf fail too
        raise AttnGANError(f"--batch-wait-ms must be from 0 to {MAX_WAIT_MS:g}, got {args.batch_wait_ms}")
    if not 0 < args.read_timeout <= MAX_READ_TIMEOUT:
        raise AttnGANError(f"--read-timeout must be greater than 0 and at most {MAX_READ_TIMEOUT:g} "
                           f"seconds, got {args.read_timeout}")
    fd_bound = default_max_connections()
    max_connections = fd_bound if args.max_connections is None else args.max_connections
    if not 1 <= max_connections <= fd_bound:
        raise AttnGANError(f"--max-connections must be from 1 to {fd_bound} (the open-file limit less "
                           f"{FD_RESERVE + ACCEPT_BACKLOG}), got {max_connections}")
    try:
        import uvicorn

        from attngan.serve.app import create_app
    except ModuleNotFoundError as e:
        raise AttnGANError(f"attngan serve needs {e.name}: pip install 'attngan[serve]'") from None
    sock = _listen(args.host, args.port)
    try:
        models = load_models(args.model, args.captioner, args.no_captioner, args.device)
        app = create_app(models, max_batch=args.max_batch, queue_size=args.queue,
                         batch_wait_ms=args.batch_wait_ms)
        host, port = sock.getsockname()[:2]
        shown = f"[{host}]" if ":" in host else host
        default = next(iter(models.values())).pipeline
        names = ", ".join(f"'{n}'" for n in models)
        print(f"attngan serve: model{'s' if len(models) > 1 else ''} {names} on {default.device}; "
              f"open http://{shown}:{port}/  (Ctrl+C stops)", flush=True)
        for name, served in models.items():
            if served.note:
                print(f"attngan serve: note: no \"I think it's ...\" under {name}'s images: {served.note}",
                      flush=True)
        if args.host not in ("127.0.0.1", "localhost", "::1"):
            print("attngan serve: note: listening beyond loopback; there is no authentication", flush=True)
        config = uvicorn.Config(app, log_level="info", access_log=False, timeout_graceful_shutdown=5,
                                http=_json_400_protocol(args.read_timeout, max_connections),
                                timeout_keep_alive=min(5, args.read_timeout), backlog=ACCEPT_BACKLOG)
        try:
            uvicorn.Server(config).run(sockets=[sock])
        except KeyboardInterrupt:  # uvicorn re-raises the Ctrl+C it handled: a normal stop
            pass
    finally:
        sock.close()
    return 0
