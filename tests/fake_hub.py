"""A Hugging Face hub on localhost, just enough of it for huggingface_hub to list a repo
(``model_info``) and download its files (``hf_hub_download``): the download path runs for
real, offline, into a temporary cache."""

from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import unquote, urlparse

COMMIT = "feedfacecafebeef0123456789abcdef01234567"
CHUNK = 64 * 1024


class FakeHub:
    """Serves ``repos`` ({repo: {file name: bytes}}) at one commit; ``downloads`` counts the
    file bodies sent."""

    def __init__(self, repos: dict[str, dict[str, bytes]]):
        self.repos = repos
        self.downloads = 0
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:  # quiet
                return None

            def do_HEAD(self) -> None:
                hub._file(self, body=False)

            def do_GET(self) -> None:
                path = urlparse(self.path).path
                if path.startswith("/api/models/"):
                    hub._info(self, path)
                else:
                    hub._file(self, body=True)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def __enter__(self) -> FakeHub:
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.server.shutdown()
        self.server.server_close()

    def _repo(self, parts: list[str]) -> tuple[str, dict[str, bytes]] | None:
        repo = "/".join(parts[:2])
        return (repo, self.repos[repo]) if repo in self.repos else None

    def _info(self, handler: BaseHTTPRequestHandler, path: str) -> None:
        found = self._repo(path.removeprefix("/api/models/").split("/"))
        if found is None:
            handler.send_response(404)
            handler.send_header("X-Error-Code", "RepoNotFound")
            handler.end_headers()
            return
        repo, files = found
        body = json.dumps(
            {
                "id": repo,
                "modelId": repo,
                "sha": COMMIT,
                "private": False,
                "siblings": [{"rfilename": n, "size": len(data)} for n, data in files.items()],
            }
        ).encode()
        handler.send_response(200)
        handler.send_header("Content-Type", "application/json")
        handler.send_header("Content-Length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def _file(self, handler: BaseHTTPRequestHandler, body: bool) -> None:
        parts = unquote(urlparse(handler.path).path).strip("/").split("/")
        found = self._repo(parts)
        name = "/".join(parts[4:]) if len(parts) > 4 and parts[2] == "resolve" else ""
        if found is None or name not in found[1]:
            handler.send_response(404)
            handler.send_header("X-Error-Code", "EntryNotFound")
            handler.end_headers()
            return
        data = found[1][name]
        handler.send_response(200)
        handler.send_header("X-Repo-Commit", COMMIT)
        handler.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        if body:
            self.downloads += 1
            for start in range(0, len(data), CHUNK):
                handler.wfile.write(data[start : start + CHUNK])
