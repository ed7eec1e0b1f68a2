"""`rlhf.chat_session` and `rlhf chat`: scripted conversations with a tiny GPT-2 on the project's
tokenizer (HH layout) and a tiny ChatML Llama with pad == eos (its own template)."""

import pytest
import torch
from typer.testing import CliRunner

from flows.cli import app
from rlhf.chat import encode_prompt
from rlhf.chat_session import ChatError, ChatSession, load_chat_model, run_chat
from rlhf.generation import generate
from rlhf.train.models import build_gpt2, load_tokenizer
from rlhf.train.toy import make_toy_world
from tests.chatml import save_tiny_chat_llama

FERN = "How do I water a fern?"


@pytest.fixture(scope="module")
def dirs(tmp_path_factory):
    root = tmp_path_factory.mktemp("chat")
    paths = make_toy_world(root / "world", n_sft=16, n_pref=16)
    tok = load_tokenizer(paths.tokenizer)
    gpt2 = root / "gpt2"
    build_gpt2(tok, n_layer=1, n_head=2, n_embd=32, n_positions=64, seed=0).save_pretrained(gpt2)
    tok.save_pretrained(gpt2)
    return {"gpt2": gpt2, "llama": save_tiny_chat_llama(root / "llama"), "world": root / "world"}


@pytest.fixture(scope="module", params=["gpt2", "llama"])
def loaded(request, dirs):
    return load_chat_model(dirs[request.param])


def spy_prompts(monkeypatch, model) -> list[list[int]]:
    """Record the input ids of every `model.generate` call."""
    seen: list[list[int]] = []
    real = model.generate

    def spy(*args, **kwargs):
        seen.append(kwargs["input_ids"][0].tolist())
        return real(*args, **kwargs)

    monkeypatch.setattr(model, "generate", spy)
    return seen


def scripted(lines):
    """A `read` that answers the given lines, then raises EOFError (Ctrl-D)."""
    queue = list(lines)

    def read(prompt: str) -> str:
        if not queue:
            raise EOFError
        return queue.pop(0)

    return read


def test_first_reply_is_the_pipelines_tempered_sample(loaded):
    model, tok = loaded
    for temperature, seed in ((0.9, 3), (1.3, 4), (0.0, None)):
        session = ChatSession(model, tok, temperature=temperature, max_new_tokens=12, seed=seed, system="Be kind.")
        got = session.reply(FERN, write=lambda _: None)
        conversation = [{"role": "system", "content": "Be kind."}, {"role": "user", "content": FERN}]
        want = generate(model, tok, [conversation], max_new_tokens=12, temperature=temperature, seed=seed)
        assert got == want.texts[0]
    # the seed matters: another one samples another reply
    a = ChatSession(model, tok, temperature=1.0, max_new_tokens=12, seed=5).reply(FERN, write=lambda _: None)
    b = ChatSession(model, tok, temperature=1.0, max_new_tokens=12, seed=6).reply(FERN, write=lambda _: None)
    assert a != b


def test_streamed_text_is_the_reply_and_the_second_prompt_holds_the_first_exchange(loaded, monkeypatch):
    model, tok = loaded
    prompts = spy_prompts(monkeypatch, model)
    session = ChatSession(model, tok, temperature=1.0, max_new_tokens=10, seed=0)
    chunks: list[str] = []
    first = session.reply(FERN, write=chunks.append)
    assert len(chunks) > 1 and "".join(chunks) == first  # streamed piece by piece, nothing lost
    chunks.clear()
    second = session.reply("And a cactus?", write=chunks.append)
    assert "".join(chunks) == second
    history = [{"role": "user", "content": FERN}, {"role": "assistant", "content": first},
               {"role": "user", "content": "And a cactus?"}]
    assert prompts == [encode_prompt(tok, history[:1]), encode_prompt(tok, history)]
    assert "cactus" in tok.decode(prompts[1]) and FERN in tok.decode(prompts[1])
    assert session.messages == history + [{"role": "assistant", "content": second}]


def test_reset_forgets_the_history_but_keeps_the_system_prompt(loaded, monkeypatch):
    model, tok = loaded
    prompts = spy_prompts(monkeypatch, model)
    session = ChatSession(model, tok, max_new_tokens=6, seed=1, system="Be brief.")
    out: list[str] = []
    replies = run_chat(session, scripted([FERN, "/reset", "hi", "/exit", "never read"]), out.append)
    assert replies == 2 and "[conversation cleared]\n" in out
    system = {"role": "system", "content": "Be brief."}
    assert prompts[1] == encode_prompt(tok, [system, {"role": "user", "content": "hi"}])
    assert session.messages[0] == {"role": "user", "content": "hi"} and len(session.messages) == 2


def test_eof_and_commands_end_or_answer_cleanly(dirs):
    model, tok = load_chat_model(dirs["gpt2"])
    session = ChatSession(model, tok, max_new_tokens=4, seed=0)
    out: list[str] = []
    assert run_chat(session, scripted(["", "/help", "/nope"]), out.append) == 0  # Ctrl-D after them
    text = "".join(out)
    assert "[unknown command /nope]" in text and text.count("/reset: forget the conversation") == 2
    assert session.messages == []


def test_old_turns_are_dropped_to_fit_the_context(dirs, monkeypatch):
    model, tok = load_chat_model(dirs["gpt2"])  # 64 positions
    prompts = spy_prompts(monkeypatch, model)
    session = ChatSession(model, tok, max_new_tokens=24, seed=0, system="Be kind.")
    notices: list[str] = []
    turns = [f"Where should I put a rose number {i}?" for i in range(6)]
    for turn in turns:
        session.reply(turn, write=lambda _: None, notice=notices.append)
    assert all(len(p) <= 64 - 24 for p in prompts)
    assert any("dropped the oldest" in n for n in notices)
    kept = session.messages
    assert kept[-2]["content"] == turns[-1] and kept[0]["role"] == "user"
    assert [m["role"] for m in kept] == ["user", "assistant"] * (len(kept) // 2)
    assert turns[0] not in [m["content"] for m in kept]  # the oldest went first
    assert "Be kind." in tok.decode(prompts[-1])  # the system prompt stays
    # a message that cannot fit even alone is refused, not sent
    before = list(session.messages)
    assert session.reply("rose " * 60, write=lambda _: None, notice=notices.append) is None
    assert "shorten it" in notices[-1] and session.messages == before and len(prompts) == len(turns)


def test_ctrl_c_stops_the_reply_not_the_chat(dirs):
    model, tok = load_chat_model(dirs["llama"])
    session = ChatSession(model, tok, temperature=1.0, max_new_tokens=30, seed=2)
    shown: list[str] = []

    def write(text: str) -> None:
        if len(shown) == 2:
            raise KeyboardInterrupt
        shown.append(text)

    notices: list[str] = []
    partial = session.reply(FERN, write=write, notice=notices.append)
    assert notices == ["\n[reply stopped]\n"] and partial == "".join(shown)
    full = ChatSession(model, tok, temperature=1.0, max_new_tokens=30, seed=2).reply(FERN, write=lambda _: None)
    assert full.startswith(partial) and len(full) > len(partial)
    assert session.messages[-1] == {"role": "assistant", "content": partial}
    assert session.reply("hi", write=lambda _: None) is not None and len(session.messages) == 4


def test_seeded_sessions_repeat_and_leave_the_global_rng_alone(dirs):
    model, tok = load_chat_model(dirs["gpt2"])
    state = torch.get_rng_state()
    runs = []
    for _ in range(2):
        session = ChatSession(model, tok, temperature=1.0, max_new_tokens=8, seed=7)
        runs.append([session.reply(t, write=lambda _: None) for t in (FERN, "hi", "thanks")])
    assert runs[0] == runs[1] and len(set(runs[0])) > 1
    assert torch.equal(torch.get_rng_state(), state)


def test_settings_that_cannot_work_are_refused(dirs):
    model, tok = load_chat_model(dirs["gpt2"])
    with pytest.raises(ChatError, match="--max-new-tokens=64 must be between 1 and 63"):
        ChatSession(model, tok, max_new_tokens=64)
    with pytest.raises(ChatError, match="--top-p"):
        ChatSession(model, tok, top_p=0.0)


def test_cli_chat(dirs, tmp_path):
    runner = CliRunner()
    missing = runner.invoke(app, ["chat", str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "no such model directory" in missing.output
    assert "Traceback" not in missing.output
    no_tok = runner.invoke(app, ["chat", str(dirs["world"])])
    assert no_tok.exit_code == 2 and "no tokenizer here" in no_tok.output

    done = runner.invoke(app, ["chat", str(dirs["gpt2"]), "--seed", "3", "--max-new-tokens", "8",
                               "--temperature", "0.9"], input=f"{FERN}\n/exit\n")
    assert done.exit_code == 0, done.output
    model, tok = load_chat_model(dirs["gpt2"])
    want = generate(model, tok, [FERN], max_new_tokens=8, temperature=0.9, seed=3).texts[0]
    assert f"> {want}\n" in done.output and "Chatting in the HH layout" in done.output
