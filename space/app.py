"""X-Instruction chat: cross-lingual and zero-shot, streaming token by token, and a blind pairwise arena.

Chat backend from the environment (see ``xinstruct.chat.session_from_env``): ``XINSTRUCT_ENDPOINT`` (a TGI / vLLM
URL; token from ``HF_TOKEN``, never shown) or ``XINSTRUCT_MODEL`` (Hub id or local path); by default the final
model of the last local run, else Gemma-3-270M offline. Arena backends and votes: see
``xinstruct.arena.arena_from_env`` and ``xinstruct.vote_store.store_from_env``. Run locally with ``make space``.
"""

from __future__ import annotations

import hashlib
import logging
import os
import random
import threading

import gradio as gr

from xinstruct import languages
from xinstruct.arena import Arena, ArenaError, arena_from_env, language_code
from xinstruct.chat import ChatSession, InputTooLong, session_from_env, source_from_env
from xinstruct.errors import DataError
from xinstruct.evaluation.questions import paired_questions
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


ARENA_ABOUT = """
**Judge two answers, blind.** Pick your language, draw a question (or write your own) and get two answers, **A**
and **B**, from two different models; which model is A changes at random every time. Say which answer is better
(or that they tie, or that both are bad), and whether each is in your language. The model names are shown after
your vote. Votes are saved as data for research: the instruction, both answers, your verdict and a random session
id, nothing about you.
"""
VERDICT_BUTTONS = (("A", "A is better"), ("B", "B is better"), ("tie", "Tie"), ("both_bad", "Both are bad"))
LANGUAGE_CHECK = {"yes": True, "no": False, "not sure": None}
DRAWS = random.Random()  # its own generator: engines reseed the global one before every generation


def session_id(request: gr.Request | None) -> str:
    """A voter's anonymous id: a hash of Gradio's random session hash (no personal data)."""
    raw = getattr(request, "session_hash", None) or "anonymous"
    return hashlib.sha256(raw.encode()).hexdigest()[:16]


def arena_tab(arena: Arena | None, problem: str, questions: str, language_names: list[str] | None = None) -> None:
    """The *Arena* tab: two anonymous answers streamed side by side, a vote, then the names.

    Long because it lays the tab out and wires its events; the matchups, refusals and vote rows are
    :class:`xinstruct.arena.Arena`'s. Model names reach the page only in the message after a vote.
    """
    with gr.Tab("Arena"):
        gr.Markdown(ARENA_ABOUT)
        if arena is None:
            gr.Markdown(problem, elem_id="arena-status")
            return
        pair_id, drawn = gr.State(None), gr.State((None, ""))
        with gr.Row():
            choices = language_names or LANGUAGES
            language = gr.Dropdown(choices, value=choices[0] if language_names else "Swahili", label="language",
                                   elem_id="arena-language")
            mode = gr.Radio(["cross-lingual", "zero-shot"], value="cross-lingual", label="mode",
                            info="cross-lingual: an English instruction, answers in your language; zero-shot: the "
                                 "instruction in your language", elem_id="arena-mode")
        hint = f"Draw a question or write one (at most {arena.max_input_chars} characters)"
        instruction = gr.Textbox(label="instruction", lines=3, max_lines=8, elem_id="arena-instruction",
                                 placeholder=hint)
        with gr.Row():
            draw = gr.Button("Draw a question", elem_id="arena-draw")
            go = gr.Button("Get two answers", variant="primary", elem_id="arena-go")
        with gr.Row():
            answers = [gr.Textbox(label=f"Answer {side}", lines=8, max_lines=20, interactive=False,
                                  elem_id=f"arena-answer-{side.lower()}") for side in ("A", "B")]
        with gr.Row():
            checks = [gr.Radio(list(LANGUAGE_CHECK), value="not sure", label=f"Is answer {side} in that language?",
                               elem_id=f"arena-lang-{side.lower()}") for side in ("A", "B")]
        with gr.Row():
            buttons = [gr.Button(label, interactive=False, elem_id=f"arena-vote-{key.replace('_', '-').lower()}")
                       for key, label in VERDICT_BUTTONS]
        status = gr.Markdown(elem_id="arena-status")

        def draw_question(language_name, mode_name):
            """A random question of the set in the voter's language: English (cross-lingual) or its own version."""
            try:
                question = DRAWS.choice(paired_questions(questions, language_code(language_name)))
            except (ArenaError, DataError) as error:
                return gr.update(), (None, ""), f"{error} Write an instruction instead."
            text = question["english"] if mode_name == "cross-lingual" else question["text"]
            return text, (str(question["question_id"]), text), ""

        def get_answers(text, language_name, mode_name, drawn_question, request: gr.Request):
            off = [gr.update(interactive=False)] * len(buttons)
            qid, drawn_text = drawn_question or (None, "")
            try:
                pair = arena.new_pair(session_id(request), language_name, mode_name, text,
                                      qid if (text or "").strip() == drawn_text.strip() else None)
            except ArenaError as error:
                yield None, "", "", "not sure", "not sure", str(error), *off
                return
            yield pair.pair_id, "", "", "not sure", "not sure", "Both models are answering...", *off
            for state in arena.answers(pair):
                shown = [state.errors[side] or state.answers[side] for side in ("A", "B")]
                message = "Both models are answering..."
                if all(state.finished.values()) and not state.ready:
                    message = " ".join(e for e in state.errors.values() if e) + " This pair cannot be judged."
                elif state.ready:
                    message = "Both answers are complete: which is better?"
                yield (state.pair_id, *shown, gr.update(), gr.update(), message,
                       *[gr.update(interactive=state.ready)] * len(buttons))

        def cast(verdict, pair, check_a, check_b, request: gr.Request):
            try:
                row = arena.vote(pair, session_id(request), verdict, LANGUAGE_CHECK.get(check_a),
                                 LANGUAGE_CHECK.get(check_b))
            except ArenaError as error:
                return (str(error), *[gr.update()] * len(buttons))
            except Exception as error:  # noqa: BLE001 - a vote that could not be saved is said, not lost silently
                logger.exception("vote not saved")
                return (f"Your vote could not be saved ({error}); please vote again.", *[gr.update()] * len(buttons))
            return (f"Thank you, your vote is saved. **A** was **{row['model_a']}**, **B** was **{row['model_b']}**. "
                    "Draw or write a new instruction to vote again.", *[gr.update(interactive=False)] * len(buttons))

        def vote_with(verdict):
            def vote(pair, check_a, check_b, request: gr.Request):
                return cast(verdict, pair, check_a, check_b, request)
            return vote

        draw.click(draw_question, [language, mode], [instruction, drawn, status], api_name="arena_draw")
        go.click(get_answers, [instruction, language, mode, drawn],
                 [pair_id, *answers, *checks, status, *buttons], api_name="arena_answers")
        for (key, _), button in zip(VERDICT_BUTTONS, buttons):
            button.click(vote_with(key), [pair_id, *checks], [status, *buttons],
                         api_name=f"arena_vote_{key.lower()}")


def build_app(session: ChatSession, backend: str = "", arena: Arena | None = None, arena_problem: str = "",
              questions: str = "builtin", arena_languages: list[str] | None = None) -> gr.Blocks:
    """The chat tabs over ``session`` and, with ``arena``, the arena tab (``arena_problem`` says why there is none;
    ``arena_languages``: the names voters choose from, the first preselected; default the ten paper languages)."""

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
        yield from respond("cross-lingual", message, history, language, assistant_style, temperature, top_p,
                           max_new_tokens)

    def zero_shot(message, history, temperature, top_p, max_new_tokens):
        yield from respond("zero-shot", message, history, "", False, temperature, top_p, max_new_tokens)

    limits = session.settings
    with gr.Blocks(title="X-Instruction chat") as demo:
        gr.Markdown("# X-Instruction: cross-lingual and zero-shot chat, and a blind arena")
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
                textbox=gr.Textbox(placeholder="An instruction in your language", max_lines=8,
                                   elem_id="zero-shot-input"),
            )
        if arena is not None or arena_problem:
            arena_tab(arena, arena_problem, questions, arena_languages)
    demo.queue(max_size=limits.queue_size, default_concurrency_limit=limits.concurrency_limit)
    return demo


def main() -> None:
    """Serve the app as the environment configures it (chat backend, arena backends, vote store)."""
    from xinstruct.vote_store import store_from_env

    logging.basicConfig(level=logging.INFO)
    chat_session, description = session_from_env()
    store = store_from_env()
    arena, about = arena_from_env(store.append, shared={source_from_env(): chat_session})
    logger.info("arena: %s; votes in %s%s", about if arena else "off", store.folder,
                f", pushed to {store.repo_id}" if store.repo_id else " (local only)")
    if arena is not None:
        threading.Thread(target=arena.warm, daemon=True).start()
    codes = [c.strip() for c in os.environ.get("XINSTRUCT_ARENA_LANGUAGES", "").split(",") if c.strip()]
    demo = build_app(chat_session, description, arena, "" if arena else about,
                     os.environ.get("XINSTRUCT_ARENA_QUESTIONS", "builtin"),
                     [languages.get(code).name for code in codes] or None)
    demo.launch(server_name=os.environ.get("GRADIO_SERVER_NAME", "127.0.0.1"), show_error=True)


if __name__ == "__main__":
    main()
