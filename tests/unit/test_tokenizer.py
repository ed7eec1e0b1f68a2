import json

from transformers import AutoTokenizer

from rlhf.chat import ASSISTANT, encode_prompt, encode_response, prompt_text, split_hh_dialogue
from rlhf.config.tokenizer import TokenizerConfig
from rlhf.paths import Paths
from rlhf.stages.tokenizer import run_tokenizer
from rlhf.tokenizer import train_tokenizer

TEXTS = [
    prompt_text("How do I water a cactus?") + " Water it lightly once a month. Thank you for asking.",
    prompt_text("Explain rainbows.") + " Sunlight splits into colours inside raindrops.",
] * 20


def test_special_tokens_distinct_and_template_matches_chat_helpers():
    tok = train_tokenizer(TEXTS, vocab_size=400, min_frequency=1)
    assert len({tok.pad_token_id, tok.bos_token_id, tok.eos_token_id}) == 3
    msgs = [{"role": "user", "content": "How do I water a cactus?"}]
    rendered = tok.apply_chat_template(msgs, tokenize=False, add_generation_prompt=True)
    assert rendered == tok.bos_token + prompt_text("How do I water a cactus?")
    full = tok.apply_chat_template(
        msgs + [{"role": "assistant", "content": "Water it lightly."}], tokenize=False
    )
    ids = encode_prompt(tok, "How do I water a cactus?") + encode_response(tok, "How do I water a cactus?", "Water it lightly.")
    assert tok.decode(ids) == full


def test_hh_dialogue_prompt_kept_as_is():
    text = "\n\nHuman: hi\n\nAssistant: hello\n\nHuman: how?\n\nAssistant: like this"
    prompt, response = split_hh_dialogue(text)
    assert response == "like this"
    assert prompt_text(prompt.strip()) == prompt + ASSISTANT


def test_run_tokenizer_saves_loadable_directory(tmp_path):
    paths = Paths(tmp_path)
    paths.data.mkdir(parents=True)
    rows = [{"prompt": f"How do I water plant {i}?", "response": "Water it lightly once a month."} for i in range(30)]
    for f in (paths.sft_train, paths.sft_heldout):
        f.write_text("\n".join(json.dumps(r) for r in rows))
    paths.pref_train.write_text(json.dumps({"prompt": "p", "chosen": "a yes", "rejected": "b no"}))
    paths.rl_prompts.write_text(json.dumps({"prompt": "How do I water a fern?"}))
    out = run_tokenizer(TokenizerConfig(vocab_size=400, min_frequency=1), paths)
    tok = AutoTokenizer.from_pretrained(paths.tokenizer)
    assert tok.pad_token == "<|pad|>" and tok.eos_token == "<|eos|>" and tok.bos_token == "<|bos|>"
    assert tok.chat_template is not None
    assert out.metrics["tokenizer/chars_per_token_heldout"] > 1.0
