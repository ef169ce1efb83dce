"""A loopback stand-in for the Hugging Face Hub: the endpoints huggingface_hub's downloads call.

    GET  /api/models/{repo}/revision/{rev}     repo info (resolved commit)
    GET  /api/models/{repo}/tree/{rev}[/path]  file listing
    HEAD /{repo}/resolve/{rev}/{path}          file metadata (ETag, size, commit)
    GET  /{repo}/resolve/{rev}/{path}          file content, with Range

Failure knobs for the tests: ``cut`` (path -> how many GETs are cut off mid-file),
``stall`` (paths whose GET sends half the file and then hangs), and a request log.
"""
from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlsplit


class FakeHub:
    def __init__(self, repo: str, folder: Path, revision: str = "main"):
        self.repo, self.revision = repo, revision
        self.files = {p.relative_to(folder).as_posix(): p.read_bytes()
                      for p in sorted(folder.rglob("*")) if p.is_file()}
        self.sha = hashlib.sha1(b"".join(hashlib.sha1(d).digest() for d in self.files.values())).hexdigest()
        self.cut: dict[str, int] = {}
        self.stall: set[str] = set()
        self.release = threading.Event()                          # ends every stall
        self.requests: list[tuple[str, str, str | None]] = []    # (method, path, Range)
        self._lock = threading.Lock()
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def do_HEAD(self):
                hub.handle(self, head=True)

            def do_GET(self):
                hub.handle(self, head=False)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}"

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()

    # ------------------------------------------------------------------ requests
    def _json(self, h, body, status=200):
        data = json.dumps(body).encode()
        h.send_response(status)
        h.send_header("Content-Type", "application/json")
        h.send_header("Content-Length", str(len(data)))
        if status >= 400:
            h.send_header("X-Error-Code", body.get("code", ""))
            h.send_header("X-Error-Message", body.get("error", ""))
        h.end_headers()
        h.wfile.write(data)

    def _known_revision(self, rev: str) -> bool:
        return rev in (self.revision, self.sha)

    def handle(self, h: BaseHTTPRequestHandler, head: bool) -> None:
        path = unquote(urlsplit(h.path).path)
        with self._lock:
            self.requests.append(("HEAD" if head else "GET", path, h.headers.get("Range")))
        api = f"/api/models/{self.repo}/"
        resolve = f"/{self.repo}/resolve/"
        if path.startswith(api + "revision/"):
            rev = path[len(api + "revision/"):]
            if not self._known_revision(rev):
                return self._json(h, {"error": "Invalid rev id", "code": "RevisionNotFound"}, 404)
            return self._json(h, {"id": self.repo, "modelId": self.repo, "sha": self.sha, "private": False,
                                  "siblings": [{"rfilename": f} for f in self.files]})
        if path.startswith(api + "tree/"):
            rev = path[len(api + "tree/"):].split("/", 1)[0]
            if not self._known_revision(rev):
                return self._json(h, {"error": "Invalid rev id", "code": "RevisionNotFound"}, 404)
            entries = [self._entry(f, d) for f, d in self.files.items()]
            folders = sorted({f.rsplit("/", 1)[0] for f in self.files if "/" in f})
            entries += [{"type": "directory", "oid": "0" * 40, "size": 0, "path": d} for d in folders]
            return self._json(h, entries)
        if path.startswith(resolve):
            rev, _, name = path[len(resolve):].partition("/")
            if not self._known_revision(rev):
                return self._json(h, {"error": "Invalid rev id", "code": "RevisionNotFound"}, 404)
            if name not in self.files:
                return self._json(h, {"error": "Entry not found", "code": "EntryNotFound"}, 404)
            return self._file(h, name, head)
        return self._json(h, {"error": "Repository not found", "code": "RepoNotFound"}, 404)

    def _file(self, h: BaseHTTPRequestHandler, name: str, head: bool) -> None:
        data = self.files[name]
        start = 0
        rng = h.headers.get("Range")
        if rng and rng.startswith("bytes="):
            start = int(rng[6:].split("-")[0] or 0)
        body = data[start:]
        h.send_response(206 if start else 200)
        h.send_header("Content-Type", "application/octet-stream")
        h.send_header("Content-Length", str(len(body)))
        h.send_header("Accept-Ranges", "bytes")
        h.send_header("ETag", f'"{hashlib.sha256(data).hexdigest()}"')
        h.send_header("X-Repo-Commit", self.sha)
        if start:
            h.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        h.end_headers()
        if head:
            return
        with self._lock:
            cut = self.cut.get(name, 0)
            if cut:
                self.cut[name] = cut - 1
        if cut or name in self.stall:
            h.wfile.write(body[:len(body) // 2])
            h.wfile.flush()
            if name in self.stall:
                self.release.wait(600)
            h.close_connection = True
            h.connection.shutdown(2)
            return
        h.wfile.write(body)

    @staticmethod
    def _entry(path: str, data: bytes) -> dict:
        """A tree entry as the Hub lists it: binary files are LFS (content sha256), text a git blob."""
        def blob(b: bytes) -> str:
            return hashlib.sha1(b"blob %d\0" % len(b) + b).hexdigest()
        if path.endswith((".json", ".md", ".txt")):
            return {"type": "file", "oid": blob(data), "size": len(data), "path": path}
        sha = hashlib.sha256(data).hexdigest()
        pointer = f"version https://git-lfs.github.com/spec/v1\noid sha256:{sha}\nsize {len(data)}\n".encode()
        return {"type": "file", "oid": blob(pointer), "size": len(data), "path": path,
                "lfs": {"oid": sha, "size": len(data), "pointerSize": len(pointer)}}

    def ranges(self, name: str) -> list[str]:
        """Range headers of the GETs of one file, in order (None: from the start)."""
        return [r for m, p, r in self.requests if m == "GET" and p.endswith("/" + name)]
