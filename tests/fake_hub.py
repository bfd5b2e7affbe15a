"""An in-process fake of the Hugging Face Hub HTTP API, enough for create_repo, branches, tags, refs,
tree listing, paths-info, preupload and NDJSON commits (regular uploads), file downloads (``resolve`` with
HEAD and byte ranges), so ``load_dataset`` and ``from_pretrained`` read a pushed revision back, and Space variables.
Wired into huggingface_hub with ``set_client_factory`` and an ``httpx.MockTransport``; no network. For another
process (a Space started as a subprocess), :meth:`FakeHub.serve` answers the same API over HTTP on 127.0.0.1
(``HF_ENDPOINT`` points there)."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote

import pytest
from huggingface_hub import set_client_factory
from huggingface_hub.utils import httpx
from huggingface_hub.utils._http import default_client_factory

SENTINEL = "hf_SENTINELtokenDONOTLEAK1234567890"


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob " + str(len(data)).encode() + b"\0" + data).hexdigest()


@dataclass
class Repo:
    repo_type: str
    url: str = ""
    branches: dict[str, str] = field(default_factory=dict)  # name -> commit id
    tags: dict[str, str] = field(default_factory=dict)
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)  # commit id -> files
    variables: dict[str, str] = field(default_factory=dict)  # a Space's variables


class FakeHub:
    """State of the fake Hub plus a request log (method, path, headers, body) for assertions."""

    def __init__(self, token: str):
        self.token = token
        self.repos: dict[str, Repo] = {}
        self.requests: list[tuple[str, str, dict[str, str], bytes]] = []
        self.validated = 0  # README front matters validated

    # -- helpers -----------------------------------------------------------------------------------
    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        repo = self.repos[repo_id]
        commit = repo.branches.get(revision) or repo.tags.get(revision) or revision
        return repo.commits[commit]

    def _new_commit(self, repo: Repo, files: dict[str, bytes], parent: str | None) -> str:
        listing = sorted((k, git_blob_sha1(v)) for k, v in files.items())
        oid = hashlib.sha1(json.dumps([parent, listing]).encode()).hexdigest()
        repo.commits[oid] = files
        return oid

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handle)

    def serve(self) -> tuple[str, ThreadingHTTPServer]:
        """Answer the API over HTTP on 127.0.0.1 (for other processes); returns the base URL and the server."""
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _answer(self):
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                request = httpx.Request(self.command, f"http://{self.headers.get('host')}{self.path}",
                                        headers=dict(self.headers), content=body)
                response = fake.handle(request)
                data = response.content
                self.send_response(response.status_code)
                for key, value in response.headers.items():
                    if key.lower() not in ("content-length", "transfer-encoding", "connection"):
                        self.send_header(key, value)
                self.send_header("content-length", response.headers.get("content-length", str(len(data))))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_POST = do_HEAD = do_PUT = do_DELETE = _answer

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        return f"http://127.0.0.1:{server.server_address[1]}", server

    # -- routing -----------------------------------------------------------------------------------
    def handle(self, request: httpx.Request) -> httpx.Response:
        body = request.read()
        self.requests.append((request.method, request.url.path, dict(request.headers), body))
        if request.headers.get("authorization") != f"Bearer {self.token}":
            return httpx.Response(401, json={"error": "Invalid credentials"})
        path = unquote(request.url.path)
        resolve = re.match(r"^/(?:(datasets|spaces)/)?([^/]+/[^/]+)/resolve/([^/]+)/(.+)$", path)
        if resolve:
            return self.download(request, (resolve.group(1) or "models")[:-1], *resolve.group(2, 3, 4))
        if path == "/api/repos/create" and request.method == "POST":
            return self.create_repo(json.loads(body))
        if path == "/api/validate-yaml" and request.method == "POST":
            return self.validate_yaml(json.loads(body)["content"])
        actions = "refs|branch|tag|preupload|commit|tree|revision|paths-info|variables"
        info = re.match(r"^/api/(models|datasets|spaces)/([^/]+/[^/]+)$", path)
        if info:  # repo info without a revision: that of main
            path = f"{path}/revision/main"
        m = re.match(rf"^/api/(models|datasets|spaces)/([^/]+/[^/]+)/({actions})(?:/(.*))?$", path)
        if not m:
            return httpx.Response(404, json={"error": f"fake hub: no route for {request.method} {path}"})
        repo_type, repo_id, action, rest = m.group(1)[:-1], m.group(2), m.group(3), m.group(4) or ""
        repo = self.repos.get(repo_id)
        if repo is None or repo.repo_type != repo_type:
            return httpx.Response(404, json={"error": "Repository not found"},
                                  headers={"X-Error-Code": "RepoNotFound"})
        if action == "variables" and request.method == "POST":
            payload = json.loads(body)
            repo.variables[payload["key"]] = payload["value"]
            return httpx.Response(200, json={k: {"value": v} for k, v in repo.variables.items()})
        if action == "refs":
            ref = lambda kind, name, oid: {"name": name, "ref": f"refs/{kind}/{name}", "targetCommit": oid}  # noqa: E731
            return httpx.Response(200, json={
                "branches": [ref("heads", n, o) for n, o in repo.branches.items()],
                "tags": [ref("tags", n, o) for n, o in repo.tags.items()], "converts": [], "pullRequests": []})
        if action == "branch" and request.method == "POST":
            if rest in repo.branches:
                return httpx.Response(409, json={"error": "Branch already exists"})
            start = json.loads(body or b"{}").get("startingPoint") or "main"
            repo.branches[rest] = repo.branches.get(start) or repo.tags.get(start) or start
            return httpx.Response(200, json={})
        if action == "tag" and request.method == "POST":
            payload = json.loads(body)
            if payload["tag"] in repo.tags:
                return httpx.Response(409, json={"error": "Tag already exists"})
            repo.tags[payload["tag"]] = repo.branches.get(rest) or rest
            return httpx.Response(200, json={})
        if action == "tree":
            revision, _, folder = rest.partition("/")
            recursive = request.url.params.get("recursive", "false").lower() == "true"
            return httpx.Response(200, json=self.tree(repo_id, revision, folder, recursive))
        if action == "paths-info":
            files = self.files(repo_id, rest)
            asked = json.loads(body).get("paths", []) if body.startswith(b"{") else \
                [unquote(v) for k, v in (kv.split("=", 1) for kv in body.decode().split("&") if kv) if k == "paths"]
            entries = [self._entry(p, files) for p in asked]
            return httpx.Response(200, json=[e for e in entries if e is not None])
        if action == "preupload":
            files = self.files(repo_id, rest)
            out = [{"path": f["path"], "uploadMode": "regular", "shouldIgnore": False,
                    "oid": git_blob_sha1(files[f["path"]]) if f["path"] in files else None}
                   for f in json.loads(body)["files"]]
            return httpx.Response(200, json={"files": out, "commitOid": repo.branches.get(rest)})
        if action == "commit":
            return self.commit(repo, rest, body)
        if action == "revision":
            commit = repo.branches.get(rest) or repo.tags.get(rest) or rest
            files = repo.commits.get(commit)
            if files is None:
                return httpx.Response(404, json={"error": "Revision not found"},
                                      headers={"X-Error-Code": "RevisionNotFound"})
            return httpx.Response(200, json={"id": repo_id, "sha": commit, "private": False,
                                             "siblings": [{"rfilename": p} for p in sorted(files)]})
        return httpx.Response(404, json={"error": "fake hub: unsupported"})

    def _entry(self, path: str, files: dict[str, bytes]) -> dict | None:
        if path in files:
            return {"type": "file", "path": path, "size": len(files[path]), "oid": git_blob_sha1(files[path])}
        if any(p.startswith(path.rstrip("/") + "/") for p in files) or path in ("", "."):
            return {"type": "directory", "path": path, "oid": hashlib.sha1(path.encode()).hexdigest()}
        return None

    def tree(self, repo_id: str, revision: str, folder: str, recursive: bool) -> list[dict]:
        """Entries under ``folder``: its files and sub-folders (all levels when ``recursive``)."""
        files = self.files(repo_id, revision)
        prefix = folder.strip("/") + "/" if folder.strip("/") else ""
        paths: set[str] = set()
        for p in files:
            if not p.startswith(prefix):
                continue
            parts = p[len(prefix):].split("/")
            depth = len(parts) if recursive else 1
            for n in range(1, min(depth, len(parts)) + 1):
                paths.add(prefix + "/".join(parts[:n]))
        return [self._entry(p, files) for p in sorted(paths)]

    def download(self, request: httpx.Request, repo_type: str, repo_id: str, revision: str, path: str):
        """``GET``/``HEAD`` of ``/<repo>/resolve/<revision>/<path>``, with the headers huggingface_hub reads and byte
        ranges (``HfFileSystem`` reads Parquet files in ranges)."""
        repo = self.repos.get(repo_id)
        if repo is None or repo.repo_type != repo_type:
            return httpx.Response(404, headers={"X-Error-Code": "RepoNotFound"})
        commit = repo.branches.get(revision) or repo.tags.get(revision) or revision
        files = repo.commits.get(commit)
        if files is None:
            return httpx.Response(404, headers={"X-Error-Code": "RevisionNotFound"})
        if path not in files:
            return httpx.Response(404, headers={"X-Error-Code": "EntryNotFound", "X-Repo-Commit": commit})
        data = files[path]
        headers = {"X-Repo-Commit": commit, "ETag": f'"{git_blob_sha1(data)}"', "Content-Length": str(len(data))}
        if request.method == "HEAD":
            return httpx.Response(200, headers=headers)
        ranged = re.match(r"bytes=(\d+)-(\d*)", request.headers.get("range", ""))
        if ranged:
            start, end = int(ranged.group(1)), int(ranged.group(2) or len(data) - 1)
            part = data[start:end + 1]
            return httpx.Response(206, content=part, headers={**headers, "Content-Length": str(len(part)),
                                                            "Content-Range": f"bytes {start}-{end}/{len(data)}"})
        return httpx.Response(200, content=data, headers=headers)

    def validate_yaml(self, content: str) -> httpx.Response:
        """Like the Hub: the README's front matter must be a YAML mapping."""
        import yaml

        if not content.startswith("---\n"):
            return httpx.Response(200, json={"warnings": [{"message": "empty metadata"}]})
        try:
            meta = yaml.safe_load(content.split("---\n", 2)[1])
        except yaml.YAMLError as e:
            return httpx.Response(400, json={"errors": [{"message": str(e)}]})
        if not isinstance(meta, dict):
            return httpx.Response(400, json={"errors": [{"message": "metadata is not a mapping"}]})
        self.validated += 1
        return httpx.Response(200, json={"warnings": []})

    def create_repo(self, payload: dict) -> httpx.Response:
        repo_id = f"{payload['organization']}/{payload['name']}" if payload.get("organization") else payload["name"]
        repo_type = payload.get("type", "model")
        url = f"https://huggingface.co/{'' if repo_type == 'model' else repo_type + 's/'}{repo_id}"
        if repo_id in self.repos:
            return httpx.Response(409, json={"error": "You already created this repo", "url": url})
        repo = Repo(repo_type, url)
        repo.branches["main"] = self._new_commit(repo, {".gitattributes": b"*.parquet filter=lfs\n"}, None)
        self.repos[repo_id] = repo
        return httpx.Response(200, json={"url": url, "name": repo_id})

    def commit(self, repo: Repo, branch: str, body: bytes) -> httpx.Response:
        parent = repo.branches[branch]
        files = dict(repo.commits[parent])
        summary = ""
        for line in body.decode().splitlines():
            item = json.loads(line)
            if item["key"] == "header":
                summary = item["value"]["summary"]
            elif item["key"] == "file":
                files[item["value"]["path"]] = base64.b64decode(item["value"]["content"])
            elif item["key"] == "deletedFile":
                files.pop(item["value"]["path"], None)
            else:
                return httpx.Response(400, json={"error": f"fake hub: unsupported commit item {item['key']}"})
        oid = self._new_commit(repo, files, parent)
        repo.branches[branch] = oid
        return httpx.Response(200, json={"commitOid": oid, "commitUrl": f"{repo.url}/commit/{oid}", "success": True,
                                         "summary": summary})


@pytest.fixture
def hub(monkeypatch, tmp_path):
    """A fresh :class:`FakeHub` wired into huggingface_hub; ``HF_TOKEN`` is the sentinel token."""
    fake = FakeHub(SENTINEL)
    monkeypatch.setenv("HF_TOKEN", SENTINEL)
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    set_client_factory(lambda: httpx.Client(transport=fake.transport()))
    yield fake
    set_client_factory(default_client_factory)
