"""`minie5 serve`: an OpenAI-compatible embeddings endpoint over HTTP.

    POST /v1/embeddings   {"input": ..., "model": ..., "encoding_format": "float" | "base64", ...}
    GET  /v1/models       the served model, and its -query / -passage names
    GET  /health          200 {"status": "ok"} once the model is loaded and warmed up, else 503

Code written for OpenAI's embeddings API, and the `openai` client, work by
pointing their base URL at http://HOST:PORT/v1.

How a request flows, in its connection's thread:

    read the body (bounded) -> parse_embedding_request -> InputTokenizer (prompt added, truncated)
    -> Batcher.embed(ids): wait while batcher.py's worker embeds the rows with other requests' -> JSON

Tokenizing here, not in the worker, answers a request's errors before it is
queued and gives the batcher each row's token count.

Lifecycle: the port opens at once; /health and every /v1 route answer 503
until the model is loaded and has embedded a warm-up batch (so the first
request is not slow). SIGTERM or SIGINT stop accepting connections, let the
requests in flight finish (up to a grace period), then exit.

The server is the standard library's ThreadingHTTPServer (no new dependency):
one thread per connection, at most max_connections, each socket with a
timeout, so a slow client only holds its own thread.
"""
from __future__ import annotations

import base64
import hmac
import json
import signal
import sys
import threading
import time
import traceback
from dataclasses import dataclass
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import urlsplit

from .batcher import Batcher, BatchFailed, BatcherStopped
from ..errors import InputError, json_type
from ..tokenizer import first_lone_surrogate

ENCODING_FORMATS = ("float", "base64")
INPUT_TYPES = ("query", "passage", "none")  # input_type values; "none": texts as given
REQUEST_FIELDS = ("input", "model", "encoding_format", "dimensions", "user", "input_type")
ROUTES = {"/v1/embeddings": "POST", "/v1/models": "GET", "/health": "GET"}  # path -> its one method
INPUT_FORMS = "a string, a list of strings, a list of token ids, or a list of lists of token ids"


@dataclass(frozen=True)
class ServerSettings:
    """What `minie5 serve` was started with; these defaults are the command line's."""
    host: str = "127.0.0.1"
    port: int = 8000
    model_name: str = "multilingual-e5-small"  # the id /v1/models lists
    prefix: str | None = None  # the prompt when a request names none: "query", "passage" or None
    truncate: bool = True  # texts over max_length: keep their first tokens (True) or answer 400 (False)
    api_key: str | None = None  # when set, /v1 routes need "Authorization: Bearer <api_key>"
    max_inputs: int = 2048  # inputs per request
    max_request_tokens: int = 32768  # tokens per request, special tokens and prefix included
    max_batch_tokens: int = 4096  # tokens per forward pass of the worker
    max_wait: float = 0.005  # seconds the worker waits for more rows before running a part-full batch
    max_body_bytes: int = 8 * 1024 * 1024  # request body size
    client_timeout: float = 30.0  # seconds a client's socket may stay silent (and a body may take to arrive)
    max_connections: int = 64  # open connections (one thread each); more are answered 503 and closed
    grace: float = 30.0  # seconds in-flight requests get to finish after SIGTERM / SIGINT


class ApiError(Exception):
    """An error answered to the client as OpenAI's error JSON with an HTTP status."""

    def __init__(self, status: int, message: str, param: str | None = None, code: str | None = None,
                 kind: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param
        self.code = code
        self.kind = kind or ("server_error" if status >= 500 else "invalid_request_error")

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


def bad_request(message: str, param: str | None = None, code: str | None = None) -> ApiError:
    return ApiError(400, message, param=param, code=code)


# ---------------------------------------------------------------- the request body
@dataclass
class EmbeddingRequest:
    """A checked POST /v1/embeddings body."""
    inputs: list  # list of str, or list of token id lists
    is_tokens: bool  # True: inputs are token id lists
    model: str
    encoding_format: str
    prompt_name: str | None  # "query", "passage" or None (the model's default: e5 adds nothing)


def is_token_id(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_inputs(value, max_inputs: int) -> tuple[list, bool]:
    """The `input` field -> (inputs, is_tokens); the error names the first input at fault."""
    if isinstance(value, str):
        return [value], False
    if not isinstance(value, list):
        raise bad_request(f"'input' is {json_type(value, article=True)}; it must be {INPUT_FORMS}", param="input")
    if not value:
        raise bad_request("'input' is an empty list; give at least one input", param="input")
    if all(is_token_id(x) for x in value):
        inputs, is_tokens = [value], True  # one text as token ids
    elif isinstance(value[0], list):
        for i, row in enumerate(value):
            if not isinstance(row, list) or not all(is_token_id(x) for x in row):
                raise bad_request(f"input[{i}] is not a list of integer token ids (input[0] is, so every item "
                                  f"must be)", param="input")
            if not row:
                raise bad_request(f"input[{i}] is an empty list of token ids", param="input")
        inputs, is_tokens = value, True
    else:
        for i, text in enumerate(value):
            if not isinstance(text, str):
                raise bad_request(f"input[{i}] is {json_type(text, article=True)}; 'input' must be {INPUT_FORMS}",
                                  param="input")
        inputs, is_tokens = value, False
    if len(inputs) > max_inputs:
        raise bad_request(f"'input' has {len(inputs)} items; at most {max_inputs} per request",
                          param="input", code="too_many_inputs")
    return inputs, is_tokens


def prompt_from_model_name(model: str) -> str | None:
    """"e5-small-query" -> "query", "...passage..." -> "passage", else None."""
    lowered = model.lower()
    for name in ("query", "passage"):
        if name in lowered:
            return name
    return None


def parse_embedding_request(body, settings: ServerSettings, dimension: int) -> EmbeddingRequest:
    """A parsed JSON body -> EmbeddingRequest, or ApiError(400) naming the field at fault."""
    if not isinstance(body, dict):
        raise bad_request(f"the request body is {json_type(body, article=True)}; it must be a JSON object")
    unknown = [name for name in body if name not in REQUEST_FIELDS]
    if unknown:
        raise bad_request(f"unrecognized request argument: {unknown[0]!r} (known: {', '.join(REQUEST_FIELDS)})",
                          param=unknown[0])
    if "input" not in body:
        raise bad_request("'input' is required", param="input")
    inputs, is_tokens = parse_inputs(body["input"], settings.max_inputs)
    model = body.get("model", settings.model_name)
    if not isinstance(model, str):
        raise bad_request(f"'model' is {json_type(model, article=True)}; it must be a string", param="model")
    encoding_format = body.get("encoding_format") or "float"
    if encoding_format not in ENCODING_FORMATS:
        raise bad_request(f"'encoding_format' is {encoding_format!r}; it must be 'float' or 'base64'",
                          param="encoding_format")
    dimensions = body.get("dimensions")
    if dimensions is not None and (not is_token_id(dimensions) or dimensions != dimension):
        raise bad_request(f"'dimensions' is {dimensions!r}; this model's embeddings have {dimension} dimensions "
                          f"and cannot be shortened", param="dimensions")
    if body.get("user") is not None and not isinstance(body["user"], str):
        raise bad_request(f"'user' is {json_type(body['user'], article=True)}; it must be a string", param="user")
    input_type = body.get("input_type")
    if input_type is not None and input_type not in INPUT_TYPES:
        raise bad_request(f"'input_type' is {input_type!r}; it must be one of {', '.join(INPUT_TYPES)}",
                          param="input_type")
    if input_type is not None:
        prompt_name = None if input_type == "none" else input_type
    else:
        prompt_name = prompt_from_model_name(model) or settings.prefix
    return EmbeddingRequest(inputs=inputs, is_tokens=is_tokens, model=model, encoding_format=encoding_format,
                            prompt_name=prompt_name)


# ---------------------------------------------------------------- inputs -> token ids
class InputTokenizer:
    """Inputs -> the model's token id lists, prompt added, truncated (or refused) at max_length.

    Texts go through the model's tokenizer as "<prompt><text>", exactly as
    Model.encode(texts, prefix=...) does. Token-id inputs are a text's ids
    without special tokens (what the tokenizer gives with
    add_special_tokens=False, as OpenAI's token arrays hold no special tokens):
    the prompt's ids and <s> ... </s> are put around them. SentencePiece and
    WordPiece tokenize words independently, so this gives the same ids as the
    text itself.
    """

    def __init__(self, model, truncate: bool):
        self.tokenizer = model.tokenizer
        self.config = model.config
        self.max_length = model.tokenizer.max_length
        self.truncate = truncate
        self._prompt_ids = {}  # prompt name -> ids of the prompt's pieces, no special tokens

    def prompt_text(self, prompt_name: str | None) -> str:
        return self.config.prompt(prompt_name)

    def prompt_ids(self, prompt_name: str | None) -> list:
        """The ids of the prompt's pieces: what a token-id input is put after, inside <s> ... </s>."""
        if prompt_name not in self._prompt_ids:
            ids = self.tokenizer.content_ids([self.prompt_text(prompt_name)])[0]
            self._prompt_ids[prompt_name] = ids  # a benign race: every thread computes the same list
        return self._prompt_ids[prompt_name]

    def texts(self, texts: list, prompt_name: str | None) -> list:
        for i, text in enumerate(texts):
            position = first_lone_surrogate(text)
            if position is not None:
                raise bad_request(f"input[{i}] has a lone surrogate at character {position}: it is not valid "
                                  f"Unicode text", param="input")
        prompt = self.prompt_text(prompt_name)
        prompted = [prompt + t for t in texts] if prompt else list(texts)
        contents = self.tokenizer.content_ids(prompted, self.max_length)
        if not self.truncate:
            room = self.tokenizer.room(self.max_length)  # pieces of text that fit
            first = next((i for i, content in enumerate(contents) if len(content) > room), None)
            if first is not None:
                raise bad_request(f"input[{first}] is longer than the model's {self.max_length} tokens (prefix "
                                  f"and special tokens included); shorten it (this server was started with "
                                  f"--no-truncate)", param="input", code="context_length_exceeded")
        return [self.tokenizer.truncate(content, self.max_length) for content in contents]

    def token_ids(self, rows: list, prompt_name: str | None) -> list:
        vocab = self.config.vocab_size
        prompt = self.prompt_ids(prompt_name)
        room = self.tokenizer.room(self.max_length) - len(prompt)  # text tokens that fit
        out = []
        for i, row in enumerate(rows):
            bad = next((t for t in row if not 0 <= t < vocab), None)
            if bad is not None:
                raise bad_request(f"input[{i}] holds token id {bad}, outside the vocabulary [0, {vocab})",
                                  param="input")
            if len(row) > room and not self.truncate:
                raise bad_request(f"input[{i}] has {len(row)} tokens; at most {room} fit in the model's "
                                  f"{self.max_length} (prefix and special tokens included; this server was "
                                  f"started with --no-truncate)", param="input", code="context_length_exceeded")
            out.append(self.tokenizer.truncate(prompt + list(row), self.max_length))
        return out

    def __call__(self, request: EmbeddingRequest) -> list:
        if request.is_tokens:
            return self.token_ids(request.inputs, request.prompt_name)
        return self.texts(request.inputs, request.prompt_name)


# ---------------------------------------------------------------- HTTP
class EmbeddingHTTPServer(ThreadingHTTPServer):
    """ThreadingHTTPServer plus what every request thread shares: settings, model, batcher, state."""

    daemon_threads = True  # idle keep-alive connections do not hold up the exit; in-flight requests are awaited
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, settings: ServerSettings, log=None):
        self.settings = settings
        self.state = "loading"  # -> "ready" -> "draining"
        self.model = None
        self.tokenize: InputTokenizer | None = None
        self.batcher: Batcher | None = None
        self._log = log or (lambda line: print(line, file=sys.stderr, flush=True))
        self._log_lock = threading.Lock()
        self._in_flight = 0
        self._in_flight_cond = threading.Condition()
        self._connections = 0  # open connections, each with its thread
        self._connections_lock = threading.Lock()
        super().__init__((settings.host, settings.port), RequestHandler)

    def process_request(self, request, client_address) -> None:
        """Start a thread for the connection, or answer 503 at once when max_connections are open."""
        with self._connections_lock:
            refuse = self._connections >= self.settings.max_connections
            if not refuse:
                self._connections += 1
        if refuse:
            self.refuse(request, client_address)
            return
        try:
            super().process_request(request, client_address)
        except BaseException:
            self.connection_closed()
            raise

    def process_request_thread(self, request, client_address) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            self.connection_closed()

    def connection_closed(self) -> None:
        with self._connections_lock:
            self._connections -= 1

    def refuse(self, request, client_address) -> None:
        limit = self.settings.max_connections
        body = json.dumps(ApiError(503, f"too many open connections (at most {limit}); retry shortly",
                                   code="too_many_connections").body()).encode()
        head = (f"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: {len(body)}"
                f"\r\nRetry-After: 1\r\nConnection: close\r\n\r\n").encode()
        try:
            request.settimeout(1.0)
            request.sendall(head + body)
        except OSError:
            pass
        finally:
            self.shutdown_request(request)
        self.log(f"{client_address[0]} refused: {limit} connections open")

    def log(self, line: str) -> None:
        with self._log_lock:
            self._log(f"minie5: {line}")

    def request_started(self) -> None:
        with self._in_flight_cond:
            self._in_flight += 1

    def request_finished(self) -> None:
        with self._in_flight_cond:
            self._in_flight -= 1
            self._in_flight_cond.notify_all()

    def wait_idle(self, timeout: float) -> int:
        """Wait until no request is in flight (at most timeout s); return how many still are."""
        deadline = time.monotonic() + timeout
        with self._in_flight_cond:
            while self._in_flight and time.monotonic() < deadline:
                self._in_flight_cond.wait(max(0.0, deadline - time.monotonic()))
            return self._in_flight


class RequestHandler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive: every response has a Content-Length
    server_version = "minie5"
    server: EmbeddingHTTPServer

    def setup(self) -> None:
        self.timeout = self.server.settings.client_timeout  # applied to the socket by StreamRequestHandler
        super().setup()

    def do_GET(self):
        self.dispatch()

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = do_HEAD = do_GET  # wrong methods: 405

    # -------------------------------------------------- one request
    def dispatch(self) -> None:
        started = time.monotonic()
        self.body_read = False
        self.figures = {"inputs": "-", "tokens": "-"}  # for the log line
        self.server.request_started()
        status = 499  # the client went away or stalled: nothing could be answered
        try:
            status = self.respond_or_error()
        except (ConnectionError, TimeoutError):
            self.close_connection = True
        finally:
            self.server.request_finished()
            elapsed = (time.monotonic() - started) * 1000
            path = "".join(c if c.isprintable() else "?" for c in self.path[:200])
            self.server.log(f"{self.client_address[0]} {self.command} {path} {status} "
                            f"inputs={self.figures['inputs']} tokens={self.figures['tokens']} {elapsed:.1f}ms")

    def respond_or_error(self) -> int:
        """Answer the request; any error becomes OpenAI's error JSON. Returns the status sent."""
        try:
            return self.respond()
        except ApiError as e:
            return self.send_error_json(e)
        except (ConnectionError, TimeoutError):
            raise
        except Exception as e:  # a bug: answer 500, keep serving
            traceback.print_exc(file=sys.stderr)
            return self.send_error_json(ApiError(500, f"internal error: {type(e).__name__}"))

    def respond(self) -> int:
        path = urlsplit(self.path).path
        if path not in ROUTES:
            raise ApiError(404, f"unknown route {self.command} {path}; this server has "
                                f"{', '.join(f'{m} {p}' for p, m in ROUTES.items())}", code="unknown_url")
        if self.command != ROUTES[path]:
            raise ApiError(405, f"{path} accepts {ROUTES[path]}, not {self.command}", code="method_not_allowed")
        if path == "/health":
            return self.health()
        self.check_api_key()
        if self.server.state != "ready":
            raise ApiError(503, "the model is still loading; retry when /health answers 200"
                           if self.server.state == "loading" else "the server is shutting down",
                           code=self.server.state)
        if path == "/v1/models":
            return self.send_json(200, self.models())
        return self.embeddings()

    def health(self) -> int:
        """200 {"status": "ok", ...batching counts} when ready; 503 {"status": "loading" | "draining"}."""
        state, batcher = self.server.state, self.server.batcher
        if state != "ready":
            return self.send_json(503, {"status": state})
        return self.send_json(200, {"status": "ok", "model": self.server.settings.model_name,
                                    "batches": batcher.batches, "batches_shared": batcher.batches_shared,
                                    "rows": batcher.rows})

    def models(self) -> dict:
        name = self.server.settings.model_name
        return {"object": "list", "data": [{"id": model_id, "object": "model", "created": 0, "owned_by": "minie5"}
                                           for model_id in (name, f"{name}-query", f"{name}-passage")]}

    def check_api_key(self) -> None:
        expected = self.server.settings.api_key
        if not expected:
            return
        header = self.headers.get("Authorization", "")
        scheme, _, given = header.partition(" ")
        if scheme.lower() != "bearer" or not given.strip():
            raise ApiError(401, "missing API key: send 'Authorization: Bearer <key>'", code="invalid_api_key")
        if not hmac.compare_digest(given.strip().encode("utf-8", "surrogateescape"), expected.encode("utf-8")):
            raise ApiError(401, "incorrect API key", code="invalid_api_key")

    def embeddings(self) -> int:
        body = self.read_json_body()
        request = parse_embedding_request(body, self.server.settings, self.server.model.config.hidden_size)
        self.figures["inputs"] = len(request.inputs)
        ids = self.server.tokenize(request)
        tokens = sum(len(row) for row in ids)
        self.figures["tokens"] = tokens
        limit = self.server.settings.max_request_tokens
        if tokens > limit:
            raise bad_request(f"the request has {tokens} tokens; at most {limit} per request (split it into "
                              f"several requests)", param="input", code="too_many_tokens")
        try:
            vectors = self.server.batcher.embed(ids)
        except BatcherStopped:
            raise ApiError(503, "the server is shutting down", code="shutting_down") from None
        except BatchFailed as e:
            raise ApiError(500, str(e)) from None
        if request.encoding_format == "base64":
            encoded = [base64.b64encode(v.astype("<f4").tobytes()).decode("ascii") for v in vectors]
        else:
            encoded = [v.tolist() for v in vectors]
        return self.send_json(200, {
            "object": "list",
            "data": [{"object": "embedding", "index": i, "embedding": e} for i, e in enumerate(encoded)],
            "model": request.model,
            "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
        })

    def read_json_body(self):
        """The request body parsed as JSON: its size bounded, its arrival within client_timeout."""
        settings = self.server.settings
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            raise ApiError(411, "chunked request bodies are not accepted; send a Content-Length",
                           code="length_required")
        length = self.headers.get("Content-Length")
        if length is None:
            raise ApiError(411, "a Content-Length header is required", code="length_required")
        if not length.strip().isdigit():
            raise bad_request(f"invalid Content-Length {length[:40]!r}", code="invalid_content_length")
        length = int(length)
        if length > settings.max_body_bytes:
            raise ApiError(413, f"the request body has {length} bytes; at most {settings.max_body_bytes}",
                           code="request_too_large")
        body = self.read_exactly(length, deadline=time.monotonic() + settings.client_timeout)
        self.body_read = True
        try:
            return json.loads(body)
        except (ValueError, RecursionError) as e:  # JSONDecodeError, bad UTF-8, too deep, too many digits
            raise bad_request(f"the request body is not valid JSON: {str(e)[:200]}", code="invalid_json") from None

    def read_exactly(self, length: int, deadline: float) -> bytes:
        chunks, received = [], 0
        while received < length:
            if time.monotonic() > deadline:
                raise ApiError(408, "the request body took too long to arrive", code="timeout")
            chunk = self.rfile.read1(min(65536, length - received))
            if not chunk:
                raise bad_request(f"the request body ended after {received} of {length} bytes "
                                  f"(Content-Length)", code="incomplete_body")
            chunks.append(chunk)
            received += len(chunk)
        return b"".join(chunks)

    # -------------------------------------------------- responses
    def send_json(self, status: int, payload: dict, headers: dict | None = None) -> int:
        data = json.dumps(payload, separators=(",", ":")).encode("utf-8")
        if status >= 400 and self.command in ("POST", "PUT", "PATCH") and not self.body_read:
            self.close_connection = True  # an unread body would be taken for the next request
        if self.server.state == "draining":
            self.close_connection = True
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)
        self.wfile.flush()
        return status

    def send_error_json(self, error: ApiError) -> int:
        headers = {}
        if error.status == 405:
            headers["Allow"] = ROUTES[urlsplit(self.path).path]
        if error.status == 401:
            headers["WWW-Authenticate"] = "Bearer"
        return self.send_json(error.status, error.body(), headers)

    def send_error(self, code, message=None, explain=None):
        """http.server's own errors (bad request line, header too long, unknown method) as OpenAI JSON."""
        self.close_connection = True
        if self.request_version == "HTTP/0.9":  # an unparsable request line: answer with a status line anyway
            self.request_version = "HTTP/1.0"
        try:
            phrase = HTTPStatus(code).phrase
        except ValueError:
            phrase = ""
        self.log_message("%s %s", code, message or phrase)
        error = ApiError(code, message or phrase, code=phrase.lower().replace(" ", "_") or None)
        self.body_read = True
        self.send_json(code, error.body())

    def log_request(self, code="-", size="-"):
        pass  # dispatch() logs one line per request, with more in it

    def log_message(self, format, *args):
        self.server.log(f"{self.client_address[0]} " + (format % args))


# ---------------------------------------------------------------- lifecycle
def warm_up_ids(model) -> list:
    """A short text and a full-length one, embedded together before the first request: Numba's kernels
    are loaded (compiled, if its cache is cold) and the encoder's buffers sized."""
    short = model.tokenizer.encode(["warm up"])[0][0]
    filler = short[1:-1] * model.tokenizer.max_length
    full = short[:1] + filler[:model.tokenizer.max_length - 2] + short[-1:]
    return [short, full]


def serve(settings: ServerSettings, load_model, log=None) -> int:
    """Run the server until SIGTERM / SIGINT: open the port, load and warm up the model, serve, drain."""
    try:
        server = EmbeddingHTTPServer(settings, log=log)
    except OSError as e:  # the port is taken, the address is not this machine's...
        raise InputError(f"cannot listen on {settings.host}:{settings.port}: {e.strerror or e}") from None
    host, port = server.server_address[:2]
    thread = threading.Thread(target=server.serve_forever, name="minie5-http", daemon=True)
    thread.start()
    server.log(f"listening on http://{host}:{port} (/health answers 503 until the model is ready)")
    try:
        started = time.monotonic()
        model = load_model()
        server.model = model
        server.tokenize = InputTokenizer(model, settings.truncate)
        server.batcher = Batcher(model, settings.max_batch_tokens, settings.max_wait)
        server.batcher.start(warm_up_ids(model))
        server.batcher.wait_ready()
        stop = threading.Event()
        previous = {sig: signal.signal(sig, lambda signum, frame: stop.set())
                    for sig in (signal.SIGTERM, signal.SIGINT)}
        server.state = "ready"
        server.log(f"ready in {time.monotonic() - started:.1f}s: {settings.model_name} on "
                   f"http://{host}:{port}/v1 ({model.config.hidden_size} dimensions)")
        try:
            while not stop.wait(0.5):
                pass
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)
        server.state = "draining"
        server.log("stopping: finishing the requests in flight")
        server.shutdown()  # no new connections
        left = server.wait_idle(settings.grace)
        server.log("stopped" if not left else f"stopped with {left} requests unfinished after {settings.grace}s")
        return 0
    finally:
        server.state = "draining"
        server.shutdown()
        if server.batcher is not None:
            server.batcher.stop()
        server.server_close()
