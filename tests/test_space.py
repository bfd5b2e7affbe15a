"""The Gradio Space, launched for real on 127.0.0.1 with the tiny model: called through gradio_client, and
driven in headless Chromium (Debian's package) through Playwright."""

import importlib.util
import os
import shutil
from pathlib import Path

import pytest

from conftest import REPO
from xinstruct.chat import ChatSession, ChatSettings
from xinstruct.inference.server import free_port

ARTIFACTS = Path(os.environ.get("XINSTRUCT_TEST_ARTIFACTS", REPO / "test-artifacts"))
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


def load_app_module():
    spec = importlib.util.spec_from_file_location("space_app", REPO / "space" / "app.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


class CapturingEngine:
    """The real tiny engine; remembers every prompt it is asked to stream."""

    def __init__(self, engine):
        self.engine = engine
        self.prompts = []
        self.fail_with: Exception | None = None  # set to make the next generation fail

    def stream(self, prompt, params):
        self.prompts.append(prompt)
        if self.fail_with is not None:
            error, self.fail_with = self.fail_with, None
            raise error
        yield from self.engine.stream(prompt, params)


@pytest.fixture(scope="module")
def space(tiny_engine):
    app = load_app_module()
    engine = CapturingEngine(tiny_engine)
    session = ChatSession(engine, ChatSettings(max_input_chars=200, context_tokens=512, seed=0))
    demo = app.build_app(session, "local model tiny")
    port = free_port()
    demo.launch(server_name="127.0.0.1", server_port=port, prevent_thread_lock=True, quiet=True, show_error=True)
    yield f"http://127.0.0.1:{port}/", engine
    demo.close()


@pytest.fixture(scope="module")
def client(space):
    from gradio_client import Client

    return Client(space[0], verbose=False)


def test_cross_lingual_streams_and_sends_the_official_prompt(space, client):
    _, engine = space
    job = client.submit("Give three tips for staying healthy.", "Swahili", False, 1.0, 1.0, 32,
                        api_name="/cross_lingual")  # seeded sampling
    final = job.result()
    partial = job.outputs()
    assert len(partial) > 1, "the answer should stream in several pieces"
    assert partial[-1] == final and final and all(b.startswith(a) for a, b in zip(partial, partial[1:]))
    assert engine.prompts[-1] == (
        "Below is an instruction that describes a task. Write a response that appropriately completes the request."
        "\n\n### Instruction:\nGive three tips for staying healthy. Answer in Swahili. \n\n### Response:"
    )
    client.predict("Explain rain.", "Tamil", True, 0.0, 0.9, 16, api_name="/cross_lingual")
    assert engine.prompts[-1].endswith("Explain rain. Answer in Tamil and the style of an AI assistant. "
                                       "\n\n### Response:")


def test_zero_shot_sends_the_instruction_as_typed(space, client):
    _, engine = space
    answer = client.predict("Toa vidokezo vitatu vya kuwa na afya njema.", 0.0, 0.9, 16, api_name="/zero_shot")
    assert isinstance(answer, str) and answer
    assert engine.prompts[-1].endswith("### Instruction:\nToa vidokezo vitatu vya kuwa na afya njema. "
                                       "\n\n### Response:")


def test_over_long_input_gets_the_cap_message(space, client):
    from gradio_client.exceptions import AppError

    _, engine = space
    before = len(engine.prompts)
    with pytest.raises(AppError, match="250 characters long; this demo accepts at most 200"):
        client.predict("x" * 250, "Swahili", False, 0.7, 0.9, 16, api_name="/cross_lingual")
    assert len(engine.prompts) == before  # nothing reached the model


def test_generation_errors_are_shown_as_text_without_a_traceback(space, client):
    from gradio_client.exceptions import AppError

    _, engine = space
    engine.fail_with = RuntimeError("the server at http://gpu-1:8080 answered 503")
    with pytest.raises(AppError) as caught:
        client.predict("Hello", "Swahili", False, 0.0, 0.9, 16, api_name="/cross_lingual")
    assert str(caught.value) == "Generation failed: the server at http://gpu-1:8080 answered 503"
    assert "Traceback" not in str(caught.value)


@pytest.mark.skipif(not Path(CHROMIUM).exists(),
                    reason=f"Chromium not installed at {CHROMIUM} (apt-get install chromium)")
def test_browser_chat_in_headless_chromium(space):
    from playwright.sync_api import expect, sync_playwright

    url, engine = space
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    shot = ARTIFACTS / "space-cross-lingual.png"
    before = len(engine.prompts)
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"])
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1100})
            page.goto(url)
            box = page.locator("#cross-lingual-input textarea")
            box.fill("Give three tips for staying healthy.")
            box.press("Enter")
            bot = page.locator(".message.bot, [data-testid='bot']").last
            expect(bot).to_be_visible(timeout=60_000)
            expect(bot).not_to_have_text("", timeout=60_000)
            page.wait_for_function("() => !document.querySelector('.generating')", timeout=60_000)
            page.screenshot(path=str(shot), full_page=True)
            text = bot.inner_text()
        finally:
            browser.close()
    assert len(engine.prompts) == before + 1 and engine.prompts[-1].endswith("Answer in Swahili. \n\n### Response:")
    assert text.strip() and shot.stat().st_size > 10_000


def test_space_metadata_matches_the_pinned_gradio():
    import tomllib

    from huggingface_hub import SpaceCard

    card = SpaceCard.load(REPO / "space" / "README.md").data
    pins = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["optional-dependencies"]["space"]
    assert pins == [f"gradio=={card.sdk_version}"]
    assert (card.sdk == "gradio" and card.app_file == "app.py" and card.license and card.models and card.datasets
            and card.tags)
    requirements = (REPO / "space" / "requirements.txt").read_text()
    lines = [line for line in requirements.splitlines() if line.strip() and not line.startswith("#")]
    assert not any(line.startswith("gradio") for line in lines)  # the Space's gradio comes from sdk_version


def test_push_space_uploads_a_runnable_space(hub, tmp_path, capsys):
    import subprocess
    import sys

    from fake_hub import SENTINEL

    from xinstruct.cli import main
    from xinstruct.publish import build_space_folder

    assert main(["push-space", "--repo", "someone/x-instruction-chat"]) == 0
    files = hub.files("someone/x-instruction-chat")
    assert {"app.py", "README.md", "requirements.txt", "xinstruct/chat.py", "xinstruct/prompts.py"} <= set(files)
    assert not any("__pycache__" in name for name in files)
    assert hub.repos["someone/x-instruction-chat"].repo_type == "space"
    assert main(["push-space", "--repo", "someone/x-instruction-chat"]) == 0
    assert "unchanged (no commit)" in capsys.readouterr().out
    assert SENTINEL not in capsys.readouterr().out
    # the uploaded folder imports its own copy of the package (as on the Space, from the app's folder)
    folder = build_space_folder(tmp_path / "space")
    check = subprocess.run([sys.executable, "-I", "-c",
                            "import sys; sys.path.insert(0, '.'); import app, xinstruct; print(xinstruct.__file__)"],
                           cwd=folder, capture_output=True, text=True)
    assert check.returncode == 0, check.stderr
    assert check.stdout.strip().startswith(str(folder))


def test_push_space_deploys_the_arena_configuration(hub, capsys):
    from fake_hub import SENTINEL
    from huggingface_hub import DatasetCard

    from xinstruct.cli import main

    args = ["push-space", "--repo", "someone/x-instruction-arena", "--candidate", "x-instruction=someone/xi-final",
            "--baseline", "base=google/gemma-3-270m", "--votes-repo", "someone/arena-votes", "--votes-every", "2"]
    assert main(args) == 0
    assert hub.repos["someone/x-instruction-arena"].variables == {
        "XINSTRUCT_ARENA_CANDIDATE": "x-instruction=someone/xi-final", "XINSTRUCT_ARENA_BASELINE":
        "base=google/gemma-3-270m", "XINSTRUCT_MODEL": "someone/xi-final",
        "XINSTRUCT_VOTES_REPO": "someone/arena-votes", "XINSTRUCT_VOTES_EVERY": "2.0"}
    votes = hub.repos["someone/arena-votes"]
    assert votes.repo_type == "dataset"
    card = DatasetCard(hub.files("someone/arena-votes")["README.md"].decode())
    assert "No votes yet." in card.text and card.data.configs[0]["data_files"][0]["path"] == "votes/*.jsonl"
    out = capsys.readouterr()
    assert "HF_TOKEN secret with write access to someone/arena-votes" in out.out and SENTINEL not in out.out + out.err


@pytest.mark.parametrize("args, message", [
    (["--candidate", "a=x/y"], "needs both --candidate and --baseline"),
    (["--candidate", "a=runs/default/final/model", "--baseline", "b=x/y"], "is a local path"),
    (["--candidate", "a=x/y", "--baseline", "b=./base-model"], "is a local path"),
    (["--candidate", "m=x/y", "--baseline", "m=x/z"], "Both backends are named 'm'"),
    (["--votes-repo", "x/votes"], "--votes-repo is for the arena"),
])
def test_push_space_refuses_an_arena_it_cannot_run(hub, capsys, args, message):
    from xinstruct.cli import main

    assert main(["push-space", "--repo", "someone/arena", *args]) == 2
    assert message in capsys.readouterr().err and "someone/arena" not in hub.repos  # refused before any upload
