"""`minie5 serve`: the real server in a subprocess, called with the official `openai` client and raw HTTP.

Embeddings are compared with Model.encode of the same texts and prefix (the
in-process API, itself checked against transformers in test_parity.py); the
error cases are sent as raw bytes, so that what the server answers to a
malformed request is what is tested, not what a client library lets through.

One server (module-scoped) serves most tests; a second one, started with
--no-truncate --prefix query, also serves the load-test smoke test and is
stopped with SIGTERM by the last test.
"""
from __future__ import annotations

import base64
import http.client
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import run_cli
from helpers import load_script

openai = pytest.importorskip("openai")
# slow: the real server in subprocesses. The references embed texts over 512 tokens on purpose:
# Model.encode's warning about it is expected.
pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::minie5.TruncationWarning")]

REPO = Path(__file__).resolve().parent.parent
API_KEY = "test-key-8"
MAX_INPUTS = 8
MAX_REQUEST_TOKENS = 2000
MAX_BODY_BYTES = 100_000
CLIENT_TIMEOUT = 3  # seconds (--timeout): how long the server waits for a silent client
STRICT_MAX_CONNECTIONS = 8
TEXTS = [
    "Photosynthesis turns sunlight, water and carbon dioxide into sugar and oxygen.",
    "Der Rhein fließt von den Alpen bis zur Nordsee.",
    "東京は日本の首都です。",
    "how much protein should a female eat",
    "",
]


# ---------------------------------------------------------------- running a server
def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A `python -m minie5 serve` subprocess on a free loopback port, its stderr in a file."""

    def __init__(self, e5_dir, tmp_dir: Path, *flags: str, env: dict | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        # the id the server lists (docs/serving.md): the model directory's name, symbolic links resolved;
        # "e5-small" in CI, whatever MINIE5_E5_SMALL_DIR points at elsewhere
        self.model_id = Path(e5_dir).resolve().name
        self.stderr_path = tmp_dir / f"server-{self.port}.err"
        self._stderr = open(self.stderr_path, "wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "minie5", "serve", "--model", str(e5_dir), "--port", str(self.port), *flags],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=self._stderr,
            env={**os.environ, "PYTHONPATH": str(REPO), **(env or {})})
        self.health_before_ready = set()  # statuses /health gave before 200
        self.wait_healthy()

    def wait_healthy(self, timeout: float = 180) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}: {self.stderr()}")
            try:
                status, _, _ = request(self, "GET", "/health", auth=False)
                if status == 200:
                    return
                self.health_before_ready.add(status)
            except OSError:  # the port is not open yet
                pass
            time.sleep(0.1)
        raise AssertionError(f"server not healthy after {timeout}s: {self.stderr()}")

    def stderr(self) -> str:
        return self.stderr_path.read_text(encoding="utf-8", errors="replace")

    def client(self, api_key: str = API_KEY):
        return openai.OpenAI(base_url=self.url + "/v1", api_key=api_key, max_retries=0, timeout=120)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._stderr.close()
        return self.proc.returncode


def request(server: Server, method: str, path: str, body=None, headers: dict | None = None,
            auth: bool = True) -> tuple[int, dict, dict]:
    """One raw HTTP request -> (status, parsed JSON body, headers)."""
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=120)
    try:
        data = body if isinstance(body, bytes) or body is None else json.dumps(body).encode()
        all_headers = {"Authorization": f"Bearer {API_KEY}"} if auth else {}
        all_headers.update(headers or {})
        conn.request(method, path, body=data, headers=all_headers)
        response = conn.getresponse()
        raw = response.read()
        return response.status, json.loads(raw) if raw else {}, dict(response.getheaders())
    finally:
        conn.close()


def raw_exchange(server: Server, data: bytes, wait: float = 10) -> bytes:
    """Send bytes as they are; return everything the server sends back until it closes."""
    with socket.create_connection(("127.0.0.1", server.port), timeout=wait) as s:
        s.sendall(data)
        chunks = []
        while True:
            chunk = s.recv(65536)
            if not chunk:
                return b"".join(chunks)
            chunks.append(chunk)


def parse_raw_response(raw: bytes) -> tuple[int, dict]:
    head, _, body = raw.partition(b"\r\n\r\n")
    return int(head.split()[1]), json.loads(body)


@pytest.fixture(scope="module")
def server(e5_dir, tmp_path_factory):
    # the API key comes from the environment here, the flag elsewhere
    s = Server(e5_dir, tmp_path_factory.mktemp("server"), "--max-inputs", str(MAX_INPUTS), "--max-request-tokens",
               str(MAX_REQUEST_TOKENS), "--max-body-bytes", str(MAX_BODY_BYTES), "--timeout", str(CLIENT_TIMEOUT),
               env={"MINIE5_API_KEY": API_KEY})
    yield s
    assert s.stop() == 0, s.stderr()


@pytest.fixture(scope="module")
def strict_server(e5_dir, tmp_path_factory):
    s = Server(e5_dir, tmp_path_factory.mktemp("strict"), "--no-truncate", "--prefix", "query",
               "--api-key", API_KEY, "--max-connections", str(STRICT_MAX_CONNECTIONS))
    yield s
    assert s.stop() == 0, s.stderr()


def cosines(a, b) -> np.ndarray:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return (a * b).sum(-1) / (np.linalg.norm(a, axis=-1) * np.linalg.norm(b, axis=-1))


def vectors(response) -> np.ndarray:
    """An openai CreateEmbeddingResponse -> [n, dim], after checking the rows come in index order."""
    assert [d.index for d in response.data] == list(range(len(response.data)))
    return np.array([d.embedding for d in response.data], dtype=np.float32)


def token_count(model, text: str, prefix: str = "") -> int:
    return len(model.tokenizer.encode([prefix + text])[0][0])


def long_text(words: int) -> str:
    return " ".join(f"word{i} mot{i}" for i in range(words))


# ---------------------------------------------------------------- the command line
def test_serve_on_a_taken_port_is_an_error(e5_dir):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = run_cli("serve", "--model", e5_dir, "--port", port, env={"PYTHONPATH": str(REPO)})
    assert f"minie5: error: cannot listen on 127.0.0.1:{port}: Address already in use" in result.error_line()


def test_serve_usage_errors():
    result = run_cli("serve", "--port", "70000", env={"PYTHONPATH": str(REPO)})
    assert result.returncode == 2 and "expected a port number 0-65535, got '70000'" in result.stderr


# ---------------------------------------------------------------- the openai client
def test_health_and_models(server):
    status, body, _ = request(server, "GET", "/health", auth=False)
    assert (status, body["status"]) == (200, "ok")
    assert server.health_before_ready == {503}  # the port opens before the model is loaded: 503 meanwhile
    models = server.client().models.list()
    ids = [m.id for m in models.data]
    assert ids == [server.model_id, server.model_id + "-query", server.model_id + "-passage"]


def test_float_embeddings_equal_encode_with_passage_prefix(server, e5_model):
    response = server.client().embeddings.create(model=server.model_id, input=TEXTS, encoding_format="float",
                                                 extra_body={"input_type": "passage"})
    expected = e5_model.encode(TEXTS, prefix="passage")
    got = vectors(response)
    assert got.shape == expected.shape == (len(TEXTS), 384)
    assert cosines(got, expected).min() >= 0.99999
    assert response.object == "list" and response.model == server.model_id
    assert all(d.object == "embedding" for d in response.data)
    tokens = sum(token_count(e5_model, t, "passage: ") for t in TEXTS)
    assert response.usage.prompt_tokens == response.usage.total_tokens == tokens


def test_base64_is_the_clients_default_and_decodes_to_the_same_vectors(server, e5_model):
    # model name with "query" in it: the "query: " prefix
    response = server.client().embeddings.create(model=server.model_id + "-query", input=TEXTS)
    assert cosines(vectors(response), e5_model.encode_queries(TEXTS)).min() >= 0.99999
    # the wire format itself: little-endian float32, base64
    status, body, _ = request(server, "POST", "/v1/embeddings",
                              {"model": server.model_id, "input": TEXTS[:2], "encoding_format": "base64"})
    assert status == 200
    rows = [np.frombuffer(base64.b64decode(d["embedding"]), dtype="<f4") for d in body["data"]]
    assert cosines(np.stack(rows), e5_model.encode(TEXTS[:2])).min() >= 0.99999


def test_one_string_and_input_type_none(server, e5_model):
    client = server.client()
    response = client.embeddings.create(model=server.model_id + "-passage", input=TEXTS[1],
                                        extra_body={"input_type": "none"})  # input_type wins over the name
    assert len(response.data) == 1
    assert cosines(vectors(response), e5_model.encode([TEXTS[1]])).min() >= 0.99999
    assert response.usage.total_tokens == token_count(e5_model, TEXTS[1])


def test_token_id_inputs_equal_their_texts(server, e5_model):
    """Token arrays hold a text's ids without special tokens (as from add_special_tokens=False)."""
    from tokenizers import Tokenizer
    raw = Tokenizer.from_file(str(e5_model.model_dir / "tokenizer.json"))  # an independent tokenization
    texts = TEXTS[:4]
    ids = [raw.encode(t, add_special_tokens=False).ids for t in texts]
    client = server.client()
    response = client.embeddings.create(model=server.model_id + "-query", input=ids, encoding_format="float")
    assert cosines(vectors(response), e5_model.encode_queries(texts)).min() >= 0.99999
    one = client.embeddings.create(model=server.model_id, input=ids[1])  # one list of ints: one text
    assert len(one.data) == 1
    assert cosines(vectors(one), e5_model.encode([texts[1]])).min() >= 0.99999
    assert one.usage.total_tokens == len(ids[1]) + 2  # <s> and </s>


def test_dimensions_equal_to_the_model_dim_is_accepted(server, e5_model):
    response = server.client().embeddings.create(model=server.model_id, input=["hello"], dimensions=384)
    assert vectors(response).shape == (1, 384)


def test_long_text_is_truncated_like_encode(server, e5_model):
    text = long_text(400)  # far over 512 tokens
    expected = e5_model.encode([text, "short"])
    response = server.client().embeddings.create(model=server.model_id, input=[text, "short"])
    assert cosines(vectors(response), expected).min() >= 0.99999
    assert response.usage.total_tokens == 512 + token_count(e5_model, "short")
    ids = e5_model.tokenizer.backend.encode(text, add_special_tokens=False).ids  # all of them, over 512
    tokens = server.client().embeddings.create(model=server.model_id, input=[ids], encoding_format="float")
    assert cosines(vectors(tokens), expected[:1]).min() >= 0.99999


def test_encode_ids_equals_encode(e5_model):
    texts = TEXTS + [long_text(60)]
    ids, _ = e5_model.tokenizer.encode(texts)
    np.testing.assert_allclose(e5_model.encode_ids(ids), e5_model.encode(texts), atol=1e-6)
    with pytest.raises(ValueError, match=r"ids\[1\] holds 250037"):
        e5_model.encode_ids([[0, 2], [0, 250037, 2]])
    with pytest.raises(ValueError, match=r"ids\[0\] has 0 tokens"):
        e5_model.encode_ids([[]])
    with pytest.raises(TypeError, match=r"ids\[0\] is str"):
        e5_model.encode_ids(["hello"])


# ---------------------------------------------------------------- concurrency
def test_concurrent_requests_get_their_own_rows(server, e5_model):
    """16 threads at once: each response equals the same request sent alone (rows are not mixed up)."""
    words = TEXTS[0].split() + TEXTS[1].split()
    requests = [[" ".join(words[(i + j) % len(words):][:3 + (5 * i + j) % 20]) + f" #{i}.{j}"
                 for j in range(1 + i % 4)] for i in range(16)]
    client = server.client()
    alone = [vectors(client.embeddings.create(model=server.model_id, input=texts)) for texts in requests]
    shared_before = health(server)["batches_shared"]
    results, errors = [None] * len(requests), []
    barrier = threading.Barrier(len(requests))

    def send(i):
        try:
            barrier.wait()
            results[i] = vectors(client.embeddings.create(model=server.model_id, input=requests[i]))
        except Exception as e:  # reported below
            errors.append(e)

    threads = [threading.Thread(target=send, args=(i,)) for i in range(len(requests))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    for i, texts in enumerate(requests):
        assert results[i].shape == (len(texts), 384)
        np.testing.assert_allclose(results[i], alone[i], atol=2e-5, err_msg=f"request {i}")
    assert health(server)["batches_shared"] > shared_before  # some batch did hold rows of several requests


def health(server) -> dict:
    status, body, _ = request(server, "GET", "/health", auth=False)
    assert status == 200
    return body


# ---------------------------------------------------------------- errors, as raw HTTP
BAD_BODIES = {
    "malformed JSON": (b'{"input": ["a"', "not valid JSON", None),
    "body not an object": ([1, 2], "must be a JSON object", None),
    "input missing": ({"model": "e5-small"}, "'input' is required", "input"),
    "input a number": ({"input": 3}, "'input' is a number", "input"),
    "input of mixed types": ({"input": ["a", 2]}, "input[1] is a number", "input"),
    "token lists mixed with text": ({"input": [[1, 2], "a"]}, "input[1] is not a list of integer token ids",
                                    "input"),
    "empty token list": ({"input": [[5, 6], []]}, "input[1] is an empty list of token ids", "input"),
    "token id outside the vocabulary": ({"input": [[5, 250037]]}, "token id 250037", "input"),
    "boolean token id": ({"input": [[5, True]]}, "input[0] is not a list of integer token ids", "input"),
    "empty input list": ({"input": []}, "empty list", "input"),
    "too many inputs": ({"input": ["a"] * (MAX_INPUTS + 1)}, f"at most {MAX_INPUTS} per request", "input"),
    "over the token budget": ({"input": [long_text(400)] * 4}, f"at most {MAX_REQUEST_TOKENS} per request",
                              "input"),
    "model not a string": ({"input": "a", "model": 5}, "'model' is a number", "model"),
    "unknown encoding_format": ({"input": "a", "encoding_format": "int8"}, "'encoding_format' is 'int8'",
                                "encoding_format"),
    "wrong dimensions": ({"input": "a", "dimensions": 128}, "384 dimensions", "dimensions"),
    "unknown input_type": ({"input": "a", "input_type": "question"}, "'input_type' is 'question'", "input_type"),
    "unknown field": ({"input": "a", "temperature": 0}, "unrecognized request argument: 'temperature'",
                      "temperature"),
    "lone surrogate": (b'{"input": ["ok", "\\ud800"]}', "input[1] has a lone surrogate", "input"),
    "deep nesting": (b"[" * 100_000 + b"]" * 100_000, None, None),  # over the body limit: 413
    "nesting under the size limit": (b'{"input": ' + b"[" * 20_000 + b"]" * 20_000 + b"}", "not valid JSON", None),
}


def assert_openai_error(body: dict, status: int, expected_status: int) -> dict:
    assert status == expected_status, body
    assert set(body) == {"error"} and set(body["error"]) == {"message", "type", "param", "code"}, body
    assert isinstance(body["error"]["message"], str) and body["error"]["message"]
    return body["error"]


@pytest.mark.parametrize("case", list(BAD_BODIES))
def test_bad_request_bodies(server, case):
    body, message, param = BAD_BODIES[case]
    status, answer, _ = request(server, "POST", "/v1/embeddings", body)
    if message is None:
        assert_openai_error(answer, status, 413)
        return
    error = assert_openai_error(answer, status, 400)
    assert message in error["message"] and error["param"] == param and error["type"] == "invalid_request_error"


def test_openai_client_raises_bad_request(server):
    with pytest.raises(openai.BadRequestError, match="384 dimensions"):
        server.client().embeddings.create(model=server.model_id, input=["a"], dimensions=100)


@pytest.mark.parametrize("method, path, status, allow", [
    ("GET", "/v1/embedding", 404, None), ("POST", "/v2/embeddings", 404, None), ("GET", "/", 404, None),
    ("GET", "/v1/embeddings", 405, "POST"), ("DELETE", "/v1/embeddings", 405, "POST"),
    ("POST", "/health", 405, "GET"), ("POST", "/v1/models", 405, "GET"),
])
def test_unknown_routes_and_wrong_methods(server, method, path, status, allow):
    code, body, headers = request(server, method, path, {"input": "a"} if method == "POST" else None)
    assert_openai_error(body, code, status)
    assert headers.get("Allow") == allow


def test_head_gets_405_without_a_body(server):
    conn = http.client.HTTPConnection("127.0.0.1", server.port, timeout=30)
    try:
        conn.request("HEAD", "/health")
        response = conn.getresponse()
        assert (response.status, response.read(), response.getheader("Allow")) == (405, b"", "GET")
        conn.request("GET", "/health")  # the same connection: no stray body bytes in the way
        assert conn.getresponse().status == 200
    finally:
        conn.close()


def test_api_key(server):
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": f"Basic {API_KEY}"},
                    {"Authorization": "Bearer"}):
        status, body, response_headers = request(server, "POST", "/v1/embeddings", {"input": "a"}, headers,
                                                 auth=False)
        assert assert_openai_error(body, status, 401)["code"] == "invalid_api_key"
    with pytest.raises(openai.AuthenticationError):
        server.client(api_key="wrong").embeddings.create(model=server.model_id, input="a")
    assert request(server, "GET", "/v1/models", auth=False)[0] == 401
    assert request(server, "GET", "/health", auth=False)[0] == 200  # health needs no key


def test_body_size_and_content_length(server):
    too_big = (f"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_KEY}\r\n"
               f"Content-Length: {MAX_BODY_BYTES + 1}\r\n\r\n").encode()
    status, body = parse_raw_response(raw_exchange(server, too_big))  # answered without reading the body
    assert assert_openai_error(body, status, 413)["code"] == "request_too_large"
    missing = f"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_KEY}\r\n\r\n".encode()
    status, body = parse_raw_response(raw_exchange(server, missing))
    assert_openai_error(body, status, 411)
    chunked = (f"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_KEY}\r\n"
               f"Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n").encode()
    status, body = parse_raw_response(raw_exchange(server, chunked))
    assert_openai_error(body, status, 411)
    for length in ("-5", "ten", "1e3"):
        invalid = (f"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_KEY}\r\n"
                   f"Content-Length: {length}\r\n\r\n").encode()
        status, body = parse_raw_response(raw_exchange(server, invalid))
        assert assert_openai_error(body, status, 400)["code"] == "invalid_content_length"


@pytest.mark.parametrize("data, expected", [
    (b"NOT HTTP AT ALL\r\n\r\n", 400),
    (b"GET / extra HTTP/1.1\r\n\r\n", 400),
    (b"GET /health HTTP/1.1\r\nX-Long: " + b"a" * 70_000 + b"\r\n\r\n", 431),
    (b"BREW /v1/embeddings HTTP/1.1\r\n\r\n", 501),
])
def test_malformed_http_gets_json_error(server, data, expected):
    status, body = parse_raw_response(raw_exchange(server, data))
    assert_openai_error(body, status, expected)


def test_slow_clients_do_not_stall_others(server, e5_model):
    """A client that sends half a request holds only its own connection, and is dropped after --timeout."""
    header_only = socket.create_connection(("127.0.0.1", server.port))
    header_only.sendall(b"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\n")  # headers never finished
    short_body = socket.create_connection(("127.0.0.1", server.port))
    short_body.sendall(f"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_KEY}\r\n"
                       f"Content-Length: 100\r\n\r\n{{\"input\":".encode())  # 9 of 100 bytes
    try:
        started = time.monotonic()
        response = server.client().embeddings.create(model=server.model_id, input=["still served"])
        assert time.monotonic() - started < CLIENT_TIMEOUT  # not behind the stalled clients
        assert cosines(vectors(response), e5_model.encode(["still served"])).min() >= 0.99999
        for s in (header_only, short_body):
            s.settimeout(CLIENT_TIMEOUT + 10)
            answer = b"".join(iter(lambda: s.recv(65536), b""))  # until the server closes the connection
            if s is short_body:  # the body did not arrive in time: 408, or a plain close
                assert answer == b"" or parse_raw_response(answer)[0] in (400, 408), answer
        assert time.monotonic() - started < CLIENT_TIMEOUT + 8
    finally:
        header_only.close()
        short_body.close()
    assert health(server)["status"] == "ok"


def test_request_log_lines(server):
    server.client().embeddings.create(model=server.model_id, input=["log me", "and me"])
    request(server, "GET", "/nowhere")
    time.sleep(0.2)
    lines = server.stderr().splitlines()
    posts = [line for line in lines if " POST /v1/embeddings 200 inputs=2 " in line]
    assert posts, lines[-10:]
    fields = posts[-1].split()
    assert fields[0] == "minie5:" and fields[-1].endswith("ms") and float(fields[-1][:-2]) > 0
    assert fields[-2].startswith("tokens=") and int(fields[-2][7:]) > 4
    assert any(" GET /nowhere 404 " in line for line in lines)


def test_batcher_errors_become_500_and_503():
    """In process, with test_batcher's stand-in model: a batch the model fails on is a 500 for its
    requests (the server goes on); rows sent after the batcher stopped are a 503."""
    from types import SimpleNamespace

    from minie5.cli.batcher import Batcher
    from minie5.cli.server import EmbeddingHTTPServer, ServerSettings
    from test_batcher import FakeModel

    http_server = EmbeddingHTTPServer(ServerSettings(port=0), log=lambda line: None)
    model = FakeModel(fail_on=66)
    http_server.model = model
    http_server.tokenize = lambda embedding_request: embedding_request.inputs  # token id inputs as they are
    http_server.batcher = Batcher(model, max_batch_tokens=8, max_wait=0.0)
    http_server.batcher.start([[0, 1]])
    http_server.batcher.wait_ready()
    http_server.state = "ready"
    thread = threading.Thread(target=http_server.serve_forever, daemon=True)
    thread.start()
    local = SimpleNamespace(port=http_server.server_address[1])
    try:
        status, body, _ = request(local, "POST", "/v1/embeddings", {"input": [[66, 1]]}, auth=False)
        assert status == 500 and body["error"]["type"] == "server_error"
        assert body["error"]["message"] == "the model failed on this batch: RuntimeError: boom"
        status, body, _ = request(local, "POST", "/v1/embeddings", {"input": [[5, 5, 5]]}, auth=False)
        assert status == 200 and body["data"][0]["embedding"] == [5.0, 3.0]
        http_server.batcher.stop()
        status, body, _ = request(local, "POST", "/v1/embeddings", {"input": [[5, 5]]}, auth=False)
        assert status == 503 and body["error"]["code"] == "shutting_down"
    finally:
        http_server.shutdown()
        http_server.batcher.stop()
        http_server.server_close()
        thread.join(10)


# ---------------------------------------------------------------- flags
def test_server_default_prefix_and_no_truncate(strict_server, e5_model):
    client = strict_server.client()
    response = client.embeddings.create(model=strict_server.model_id, input=TEXTS)  # --prefix query
    assert cosines(vectors(response), e5_model.encode_queries(TEXTS)).min() >= 0.99999
    plain = client.embeddings.create(model=strict_server.model_id, input=TEXTS, extra_body={"input_type": "none"})
    assert cosines(vectors(plain), e5_model.encode(TEXTS)).min() >= 0.99999
    status, body, _ = request(strict_server, "POST", "/v1/embeddings", {"input": ["short", long_text(400)]})
    error = assert_openai_error(body, status, 400)
    assert "input[1] is longer than the model's 512 tokens" in error["message"]
    assert error["code"] == "context_length_exceeded" and "--no-truncate" in error["message"]
    status, body, _ = request(strict_server, "POST", "/v1/embeddings", {"input": [[5] * 600]})
    assert "input[0] has 600 tokens" in assert_openai_error(body, status, 400)["message"]
    # exactly at the limit is fine: 507 ids + "query:" (3 ids) + <s> </s> = 512
    response = client.embeddings.create(model=strict_server.model_id, input=[[2566] * 507])
    assert response.usage.total_tokens == 512


# ---------------------------------------------------------------- scripts/load_test.py
def test_load_test_script_smoke(strict_server, e5_dir, e5_model, tmp_path, capsys):
    """A few seconds, a few clients, against a running server: the plumbing, not the figures."""
    load_test = load_script("load_test.py")
    figures = load_test.main(["--url", strict_server.url, "--api-key", API_KEY, "--model", str(e5_dir),
                              "--seconds", "1", "--clients", "3", "--texts", "8", "--max-requests", "12",
                              "--json", str(tmp_path / "figures.json")], model=e5_model)
    assert figures["errors"] == 0, figures["error_examples"]
    assert 0 < figures["requests"] <= 12 and figures["clients"] == 3
    assert figures["texts_per_s"] > 0 and figures["encode_texts_per_s"] > 0 and figures["batches"] > 0
    assert figures["ratio"] == pytest.approx(figures["texts_per_s"] / figures["encode_texts_per_s"])
    assert figures["p50_ms"] <= figures["p99_ms"]
    assert 3 <= figures["tokens_per_text_min"] and figures["tokens_per_text_max"] < 512
    assert "served / encode" in capsys.readouterr().out
    assert json.loads((tmp_path / "figures.json").read_text())["requests"] == figures["requests"]
    with pytest.raises(SystemExit):  # loopback only
        load_test.parse_args(["--url", "http://example.com:8000"])


def test_connections_over_the_limit_are_refused_with_503(strict_server):
    idle = []
    try:
        refused = None
        for _ in range(2 * STRICT_MAX_CONNECTIONS):  # some slots may hold earlier keep-alive connections
            s = socket.create_connection(("127.0.0.1", strict_server.port), timeout=5)
            idle.append(s)
            s.settimeout(0.3)
            try:
                answer = s.recv(65536)
            except TimeoutError:  # accepted: it has a thread and waits for a request
                continue
            refused = answer + b"".join(iter(lambda: s.recv(65536), b""))
            break
        assert refused is not None, "no connection was refused"
        status, body = parse_raw_response(refused)
        assert assert_openai_error(body, status, 503)["code"] == "too_many_connections"
    finally:
        for s in idle:
            s.close()
    time.sleep(0.5)  # the threads see their connections closed
    assert request(strict_server, "GET", "/health")[0] == 200


# ---------------------------------------------------------------- shutdown (last: it stops strict_server)
def test_sigterm_finishes_the_request_in_flight(strict_server, e5_model):
    """SIGTERM while a request's body is still arriving: the request is answered, then the server exits 0."""
    s = strict_server
    body = json.dumps({"input": TEXTS, "input_type": "passage"}).encode()
    conn = socket.create_connection(("127.0.0.1", s.port), timeout=60)
    try:
        conn.sendall(f"POST /v1/embeddings HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {API_KEY}\r\n"
                     f"Content-Length: {len(body)}\r\n\r\n".encode() + body[:10])
        time.sleep(1.0)  # the server has read the headers: the request is in flight
        s.proc.send_signal(signal.SIGTERM)
        time.sleep(0.5)
        conn.sendall(body[10:])
        answer = b"".join(iter(lambda: conn.recv(65536), b""))  # "Connection: close" while draining
    finally:
        conn.close()
    status, response = parse_raw_response(answer)
    assert status == 200
    got = np.array([d["embedding"] for d in response["data"]], dtype=np.float32)
    assert cosines(got, e5_model.encode_passages(TEXTS)).min() >= 0.99999
    assert s.proc.wait(timeout=60) == 0
    stderr = s.stderr()
    assert "stopping: finishing the requests in flight" in stderr and "minie5: stopped" in stderr
    assert stderr.index("stopping") < stderr.rindex("POST /v1/embeddings 200")
    with pytest.raises(OSError):  # the port is closed
        socket.create_connection(("127.0.0.1", s.port), timeout=5).close()
