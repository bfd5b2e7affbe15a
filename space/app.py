"""X-Instruction chat: cross-lingual and zero-shot, streaming token by token.

Backend from the environment (see ``xinstruct.chat.session_from_env``): ``XINSTRUCT_ENDPOINT`` (a TGI / vLLM
URL; token from ``HF_TOKEN``, never shown) or ``XINSTRUCT_MODEL`` (Hub id or local path); by default the final
model of the last local run, else Gemma-3-270M offline. Run locally with ``make space``.
"""

from __future__ import annotations

import logging
import os

import gradio as gr

from xinstruct.chat import ChatSession, InputTooLong, session_from_env
from xinstruct.languages import PAPER_LANGUAGES

logger = logging.getLogger("xinstruct.space")

LANGUAGES = [lang.name for lang in PAPER_LANGUAGES]
DATASET_URL = os.environ.get("XINSTRUCT_DATASET_URL", "https://huggingface.co/datasets?search=x-instruction")
MODELS_URL = os.environ.get("XINSTRUCT_MODELS_URL", "https://huggingface.co/models?search=X-Instruction")

ABOUT = """
**X-Instruction** turns native web text in low-resource languages into cross-lingual instruction data: a
model trained on a small seed writes an *English instruction* for each native text, which becomes the
*response*; a self-trained evaluator rates and filters the pairs over several rounds, and clustering keeps
them diverse. A model tuned on that data answers English instructions in the language you ask for
(**cross-lingual**) and, zero-shot, instructions written in that language itself (**zero-shot**).

What the model receives: in *cross-lingual* mode, the official prompt
`Below is an instruction ... ### Instruction:\\n{your message} Answer in {Language}. \\n\\n### Response:`
(or its "... and the style of an AI assistant." variant); in *zero-shot* mode the same frame without
"Answer in {Language}.". Earlier turns are folded into the instruction ("Earlier in this conversation: ...").
"""

DEFAULTS = (0.7, 0.9, 256)  # temperature, top_p, max new tokens
CROSS_EXAMPLES = [
    ["Give three tips for staying healthy.", "Swahili", False, *DEFAULTS],
    ["Explain why the sky is blue in simple words.", "Indonesian", True, *DEFAULTS],
    ["Write a short poem about the monsoon rain.", "Bengali", False, *DEFAULTS],
    ["What should I pack for a weekend trip to the mountains?", "Turkish", False, *DEFAULTS],
]
ZERO_SHOT_EXAMPLES = [
    ["Toa vidokezo vitatu vya kuwa na afya njema.", *DEFAULTS],
    ["Jelaskan mengapa langit berwarna biru dengan kata-kata sederhana.", *DEFAULTS],
    ["மழைக்காலம் பற்றி ஒரு சிறு கவிதை எழுதுங்கள்.", *DEFAULTS],
    ["Kerro lyhyesti, miksi sauna on tärkeä suomalaisille.", *DEFAULTS],
]


def _history(history: list) -> list[tuple[str, str]]:
    """Gradio's message history as (user, assistant) pairs."""
    pairs, user = [], None
    for item in history or []:
        role, content = (item["role"], item["content"]) if isinstance(item, dict) else (None, item)
        if isinstance(content, list):  # gradio 6 may give content parts
            content = " ".join(part.get("text", "") for part in content if isinstance(part, dict))
        if role == "user":
            user = content
        elif role == "assistant" and user is not None:
            pairs.append((user, content))
            user = None
    return pairs


def build_app(session: ChatSession, backend: str = "") -> gr.Blocks:
    """The two-tab chat app over ``session``."""

    def respond(mode: str, message: str, history: list, language: str, assistant_style: bool,
                temperature: float, top_p: float, max_new_tokens: int):
        try:
            yield from session.reply(mode, message, language, assistant_style, _history(history),
                                     temperature, top_p, int(max_new_tokens))
        except InputTooLong as error:
            raise gr.Error(str(error)) from None
        except Exception as error:  # noqa: BLE001 - shown to the user without a traceback
            logger.exception("generation failed")
            raise gr.Error(f"Generation failed: {error}", print_exception=False) from None

    def cross_lingual(message, history, language, assistant_style, temperature, top_p, max_new_tokens):
        yield from respond("cross-lingual", message, history, language, assistant_style, temperature, top_p, max_new_tokens)

    def zero_shot(message, history, temperature, top_p, max_new_tokens):
        yield from respond("zero-shot", message, history, "", False, temperature, top_p, max_new_tokens)

    limits = session.settings
    with gr.Blocks(title="X-Instruction chat") as demo:
        gr.Markdown("# X-Instruction: cross-lingual and zero-shot chat")
        gr.Markdown(ABOUT + f"\n\nDataset: [{DATASET_URL}]({DATASET_URL}) · Models: [{MODELS_URL}]({MODELS_URL})"
                    + (f" · Backend: {backend}" if backend else ""))

        def sliders():
            temperature, top_p, max_new = DEFAULTS
            return [gr.Slider(0.0, 1.5, value=temperature, step=0.05, label="temperature (0 = greedy)"),
                    gr.Slider(0.1, 1.0, value=top_p, step=0.05, label="top_p"),
                    gr.Slider(16, 1024, value=max_new, step=16, label="max new tokens")]

        with gr.Tab("Cross-lingual"):
            gr.Markdown("Write in **English**, pick the language of the answer.")
            language = gr.Dropdown(LANGUAGES, value="Swahili", label="answer in", allow_custom_value=True)
            assistant = gr.Checkbox(False, label="assistant style ('... and the style of an AI assistant.')")
            gr.ChatInterface(
                cross_lingual, additional_inputs=[language, assistant, *sliders()], examples=CROSS_EXAMPLES,
                api_name="cross_lingual", concurrency_limit=limits.concurrency_limit, cache_examples=False,
                textbox=gr.Textbox(placeholder=f"An English instruction (up to {limits.max_input_chars} characters)",
                                   max_lines=8, elem_id="cross-lingual-input"),
            )
        with gr.Tab("Zero-shot"):
            gr.Markdown("Write the instruction **in the target language** itself.")
            gr.ChatInterface(
                zero_shot, additional_inputs=sliders(), examples=ZERO_SHOT_EXAMPLES, api_name="zero_shot",
                concurrency_limit=limits.concurrency_limit, cache_examples=False,
                textbox=gr.Textbox(placeholder="An instruction in your language", max_lines=8, elem_id="zero-shot-input"),
            )
    demo.queue(max_size=limits.queue_size, default_concurrency_limit=limits.concurrency_limit)
    return demo


if __name__ == "__main__":
    logging.basicConfig(level=logging.INFO)
    chat_session, description = session_from_env()
    build_app(chat_session, description).launch(
        server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"), show_error=True
    )
