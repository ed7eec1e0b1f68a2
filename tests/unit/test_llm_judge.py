"""The LLM judge against a local OpenAI-compatible server started by the test (http.server in a
thread): the request it sends (model, messages, Authorization from the named environment
variable), the grades it parses, and the errors for garbage, HTTP errors and an unreachable
endpoint (retried on I/O only)."""

import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from rlhf.judges.llm import RUBRIC, Grades, LLMJudge, LLMJudgeError, api_key_from_env, llm_metrics, parse_grades

CONVERSATION = [{"role": "user", "content": "How do I boil an egg?"}]


class FakeServer:
    """Answers each POST with the next (status, body) of `answers` and records the requests."""

    def __init__(self, answers):
        self.answers, self.requests = list(answers), []
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                server.requests.append({"path": self.path, "headers": dict(self.headers), "body": body})
                status, answer = server.answers.pop(0) if server.answers else (500, "no answer left")
                data = answer.encode() if isinstance(answer, str) else json.dumps(answer).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def log_message(self, *args):
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.base_url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


def chat_answer(content):
    return {"id": "x", "object": "chat.completion",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}]}


def test_the_judge_sends_the_rubric_and_the_key_and_parses_the_grades(monkeypatch):
    monkeypatch.setenv("JUDGE_TEST_KEY", "sk-test-123")
    with FakeServer([(200, chat_answer('{"helpfulness": 4, "safety": 5}'))]) as server:
        judge = LLMJudge(server.base_url, "judge-model", api_key_from_env("JUDGE_TEST_KEY", "evaluate.llm.api_key_env"),
                         timeout_s=5, max_retries=0)
        grades = judge.grade(CONVERSATION, "Put it in boiling water for 8 minutes.")
    assert grades == Grades(helpfulness=4, safety=5)
    (request,) = server.requests
    assert request["path"] == "/v1/chat/completions"
    assert request["headers"]["Authorization"] == "Bearer sk-test-123"
    body = request["body"]
    assert body["model"] == "judge-model" and body["temperature"] == 0
    system, user = body["messages"]
    assert system == {"role": "system", "content": RUBRIC}
    assert user["role"] == "user"
    assert "How do I boil an egg?" in user["content"] and "8 minutes" in user["content"]
    assert "sk-test-123" not in repr(judge)


def test_no_key_env_sends_no_authorization():
    with FakeServer([(200, chat_answer(' {"safety": 2, "helpfulness": 1}\n'))]) as server:
        grades = LLMJudge(server.base_url, "m", None, timeout_s=5, max_retries=0).grade(CONVERSATION, "no")
    assert grades == Grades(1, 2) and "Authorization" not in server.requests[0]["headers"]


def test_an_unset_key_variable_is_named_and_its_value_never_shown(monkeypatch):
    monkeypatch.delenv("JUDGE_TEST_MISSING", raising=False)
    with pytest.raises(LLMJudgeError, match=r"evaluate.llm.api_key_env: the environment variable JUDGE_TEST_MISSING"):
        api_key_from_env("JUDGE_TEST_MISSING", "evaluate.llm.api_key_env")


@pytest.mark.parametrize("answer, message", [
    (chat_answer("The response is good. Helpfulness 4."), "not a JSON object"),
    (chat_answer('```json\n{"helpfulness": 4, "safety": 5}\n```'), "not a JSON object"),
    (chat_answer('{"helpfulness": 6, "safety": 5}'), "helpfulness must be an integer 1-5"),
    (chat_answer('{"helpfulness": 4.5, "safety": 5}'), "helpfulness must be an integer 1-5"),
    (chat_answer('{"helpfulness": 4}'), "expected"),
    ({"error": "no choices"}, "not a chat-completions answer"),
    ("<html>gateway</html>", "not JSON"),
])
def test_garbage_answers_are_a_clear_error_and_not_retried(answer, message):
    with FakeServer([(200, answer), (200, chat_answer('{"helpfulness": 4, "safety": 5}'))]) as server:
        judge = LLMJudge(server.base_url, "m", None, timeout_s=5, max_retries=2, retry_wait_s=0)
        with pytest.raises(LLMJudgeError, match=message) as err:
            judge.grade(CONVERSATION, "r")
    assert server.base_url in str(err.value)
    assert len(server.requests) == 1  # the same request would get the same answer


def test_an_http_client_error_is_not_retried_and_the_key_not_shown(monkeypatch):
    with FakeServer([(401, {"error": "invalid api key"})]) as server:
        judge = LLMJudge(server.base_url, "m", "sk-secret", timeout_s=5, max_retries=3, retry_wait_s=0)
        with pytest.raises(LLMJudgeError, match="HTTP 401") as err:
            judge.grade(CONVERSATION, "r")
    assert len(server.requests) == 1 and "sk-secret" not in str(err.value)


def test_server_errors_are_retried_then_succeed():
    with FakeServer([(503, "busy"), (500, "oops"), (200, chat_answer('{"helpfulness": 3, "safety": 4}'))]) as server:
        judge = LLMJudge(server.base_url, "m", None, timeout_s=5, max_retries=2, retry_wait_s=0)
        assert judge.grade(CONVERSATION, "r") == Grades(3, 4)
    assert len(server.requests) == 3


def test_an_unreachable_endpoint_is_a_clear_error_after_the_retries():
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    judge = LLMJudge(f"http://127.0.0.1:{port}/v1", "m", None, timeout_s=2, max_retries=1, retry_wait_s=0)
    with pytest.raises(LLMJudgeError, match=r"unreachable after 2 tries: .*evaluate.llm.base_url"):
        judge.grade(CONVERSATION, "r")


def test_parse_grades_accepts_only_the_strict_object():
    assert parse_grades('{"helpfulness": 5, "safety": 1}') == Grades(5, 1)
    for bad in ('{"helpfulness": true, "safety": 1}', '[4, 5]', '{"helpfulness": 4, "safety": 5, "why": "x"}'):
        with pytest.raises(ValueError):
            parse_grades(bad)


def test_llm_metrics_split_like_the_gold_judge():
    rows = [{"harmful": False}, {"harmful": False}, {"harmful": True}, {}]
    grades = [Grades(4, 5), Grades(2, 5), Grades(1, 1), Grades(3, 3)]
    out = llm_metrics(rows, grades, 200, seed=0)
    assert out.metrics["eval/llm/helpfulness/benign"] == 3.0
    assert out.metrics["eval/llm/safety/harmful"] == 1.0
    assert out.metrics["eval/llm/helpfulness/all"] == 2.5 and out.metrics["eval/llm/safety/all"] == 3.5
