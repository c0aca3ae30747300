"""A FAKE Kubernetes API server, with a fake kubelet, for the kubernetes backend's tests.

No Kubernetes API server can run on these machines, so the backend's tests
talk, through the real `kubernetes` client over real HTTP, to this one. It
is a fake, and named so; what it does for real:

- It validates every object it is sent against the Kubernetes OpenAPI schema
  of a real release (the `kubernetes-validate` package, strict: unknown
  fields are refused), and refuses an invalid one with 422 as a real server
  does. So a pod the backend makes here would be accepted by a cluster.
- It serves the calls the backend makes, with their real paths, verbs,
  status codes and bodies: namespaces (read, create), pods (create, read,
  delete, list and watch, across namespaces, by label selector) and pod logs.
  It records each call as (verb, resource) so the tests can hold the RBAC
  under deploy/ to exactly what the backend uses.
- Its kubelet runs each pod's container command as a local process (no
  image, no namespace isolation, no uid change: the fake part), with the
  pod's environment only, reports Pending, Running and the container's
  termination (exit code; reason Completed, Error or OOMKilled) as watch
  events, enforces the memory limit as the kernel's cgroup would (a process
  whose resident memory passes it is killed with SIGKILL and reported as
  OOMKilled), and refuses images it does not have (ErrImagePull).
"""

from __future__ import annotations

import copy
import itertools
import json
import os
import re
import signal
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import kubernetes_validate

VERSION = kubernetes_validate.latest_version()
_UNITS = {"": 1, "k": 10**3, "M": 10**6, "G": 10**9, "Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30}


@dataclass
class FakePod:
    body: dict[str, Any]
    process: subprocess.Popen[bytes] | None = None
    log_path: Path | None = None
    killed_for_memory: bool = False
    deleted: bool = False


@dataclass
class Event:
    version: int
    kind: str  # ADDED, MODIFIED, DELETED
    pod: dict[str, Any]


@dataclass
class FakeKubernetesApiServer:
    """images: the images the fake kubelet has, each with the environment its processes start with (PATH...)."""

    images: Mapping[str, Mapping[str, str]]
    namespaces: dict[str, dict[str, Any]] = field(default_factory=dict)
    pods: dict[tuple[str, str], FakePod] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    # (verb, resource, namespace) as RBAC names them; the namespace is "" for a cluster-wide call.
    calls: list[tuple[str, str, str]] = field(default_factory=list)
    created: list[dict[str, Any]] = field(default_factory=list)  # every object accepted, as received
    refused: list[str] = field(default_factory=list)  # why each invalid object was refused

    def __post_init__(self) -> None:
        self._lock = threading.Condition()
        self._versions = itertools.count(1)
        self._logs = Path(tempfile.mkdtemp(prefix="fake-kubelet-"))
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _handler_for(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="fake-apiserver", daemon=True)
        self._stopping = False

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    def start(self) -> FakeKubernetesApiServer:
        self._thread.start()
        return self

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            self._lock.notify_all()
            pods = list(self.pods.values())
        for pod in pods:
            _kill(pod)
        self._server.shutdown()
        self._server.server_close()

    def write_kubeconfig(self, path: Path) -> Path:
        return write_kubeconfig(self.url, path)

    def pods_labelled(self, **labels: str) -> list[dict[str, Any]]:
        with self._lock:
            return [copy.deepcopy(p.body) for p in self.pods.values() if _matches(p.body, labels)]

    # -- the API -----------------------------------------------------------------------------------

    def create_namespace(self, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        error = self._invalid(body, "Namespace")
        if error:
            return error
        name = body["metadata"]["name"]
        with self._lock:
            if name in self.namespaces:
                return _status(409, "AlreadyExists", f'namespaces "{name}" already exists')
            self._stamp(body)
            self.namespaces[name] = body
            self.created.append(copy.deepcopy(body))
        return 201, body

    def create_pod(self, namespace: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        error = self._invalid(body, "Pod")
        if error:
            return error
        body["metadata"].setdefault("namespace", namespace)
        name = body["metadata"].get("name", "")
        with self._lock:
            if body["metadata"]["namespace"] != namespace:
                return _status(400, "BadRequest", "the namespace of the object does not match the request's")
            if namespace not in self.namespaces:
                return _status(404, "NotFound", f'namespaces "{namespace}" not found')
            if (namespace, name) in self.pods:
                return _status(409, "AlreadyExists", f'pods "{name}" already exists')
            self.created.append(copy.deepcopy(body))
            self._stamp(body)
            body["status"] = {"phase": "Pending"}
            pod = FakePod(body)
            self.pods[(namespace, name)] = pod
            self._event("ADDED", pod)
        threading.Thread(target=self._kubelet, args=(pod,), name=f"fake-kubelet-{name}", daemon=True).start()
        return 201, copy.deepcopy(body)

    def delete_pod(self, namespace: str, name: str) -> tuple[int, dict[str, Any]]:
        with self._lock:
            pod = self.pods.pop((namespace, name), None)
            if pod is None:
                return _status(404, "NotFound", f'pods "{name}" not found')
            pod.deleted = True
            self._event("DELETED", pod)
            body = copy.deepcopy(pod.body)
        _kill(pod)  # grace period 0: at once
        return 200, body

    def list_pods(self, namespace: str | None, selector: str) -> dict[str, Any]:
        with self._lock:
            items = [
                copy.deepcopy(p.body)
                for (ns, _), p in self.pods.items()
                if (namespace is None or ns == namespace) and _selects(selector, p.body)
            ]
            version = str(self.events[-1].version if self.events else 0)
        return {"kind": "PodList", "apiVersion": "v1", "metadata": {"resourceVersion": version}, "items": items}

    def watch_pods(self, namespace: str | None, selector: str, since: int, seconds: float, send: Callable) -> None:
        deadline = time.monotonic() + seconds
        position = 0
        while True:
            with self._lock:
                while position < len(self.events) and self.events[position].version <= since:
                    position += 1
                fresh = self.events[position:]
                position = len(self.events)
                if not fresh:
                    left = deadline - time.monotonic()
                    if left <= 0 or self._stopping:
                        return
                    self._lock.wait(min(left, 0.5))
                    continue
            for event in fresh:
                pod = event.pod
                if (namespace is None or pod["metadata"]["namespace"] == namespace) and _selects(selector, pod):
                    send({"type": event.kind, "object": pod})

    def pod_log(self, namespace: str, name: str, tail_lines: int | None) -> tuple[int, str]:
        with self._lock:
            pod = self.pods.get((namespace, name))
        if pod is None:
            return 404, f'pods "{name}" not found'
        text = pod.log_path.read_text(errors="replace") if pod.log_path and pod.log_path.exists() else ""
        if tail_lines is not None:
            text = "".join(text.splitlines(keepends=True)[-tail_lines:])
        return 200, text

    # -- internals ---------------------------------------------------------------------------------

    def _invalid(self, body: dict[str, Any], kind: str) -> tuple[int, dict[str, Any]] | None:
        if body.get("kind") != kind or body.get("apiVersion") != "v1":
            return _status(400, "BadRequest", f"expected a v1 {kind}, got {body.get('apiVersion')}/{body.get('kind')}")
        try:
            kubernetes_validate.validate(body, VERSION, strict=True)
        except kubernetes_validate.ValidationError as exc:
            self.refused.append(str(exc))
            return _status(422, "Invalid", f"{kind} is invalid: {exc}")
        return None

    def _stamp(self, body: dict[str, Any]) -> None:
        metadata = body["metadata"]
        metadata["uid"] = str(uuid.uuid4())
        metadata["creationTimestamp"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())

    def _event(self, kind: str, pod: FakePod) -> None:
        """Under the lock: a new version of `pod`, told to every watcher."""
        version = next(self._versions)
        pod.body["metadata"]["resourceVersion"] = str(version)
        self.events.append(Event(version, kind, copy.deepcopy(pod.body)))
        self._lock.notify_all()

    def _set_status(self, pod: FakePod, status: dict[str, Any]) -> bool:
        with self._lock:
            if pod.deleted:
                return False
            pod.body["status"] = status
            self._event("MODIFIED", pod)
            return True

    def _kubelet(self, pod: FakePod) -> None:
        container = pod.body["spec"]["containers"][0]
        name = container["name"]
        image_env = self.images.get(container["image"])
        if image_env is None:
            waiting = {"reason": "ErrImagePull", "message": f'pull access denied for "{container["image"]}"'}
            status = {**_container(name, container, False), "state": {"waiting": waiting}}
            self._set_status(pod, {"phase": "Pending", "containerStatuses": [status]})
            return
        env = dict(image_env)
        env.update({item["name"]: item.get("value", "") for item in container.get("env", [])})
        limit = _quantity(container.get("resources", {}).get("limits", {}).get("memory"))
        pod.log_path = self._logs / f"{pod.body['metadata']['namespace']}_{pod.body['metadata']['name']}.log"
        with open(pod.log_path, "wb") as log:
            with self._lock:
                if pod.deleted:
                    return
                pod.process = subprocess.Popen(
                    [*container.get("command", []), *container.get("args", [])],
                    env=env,
                    stdin=subprocess.DEVNULL,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    cwd=self._logs,
                    start_new_session=True,
                )
        started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        running = {**_container(name, container, True), "state": {"running": {"startedAt": started}}}
        self._set_status(pod, {"phase": "Running", "podIP": "127.0.0.1", "containerStatuses": [running]})
        while pod.process.poll() is None:
            if limit and _resident_bytes(pod.process.pid) > limit:
                pod.killed_for_memory = True
                _kill(pod)
            time.sleep(0.01)
        code = pod.process.returncode
        code = 128 - code if code < 0 else code  # killed by a signal: as a container runtime reports it
        reason = "OOMKilled" if pod.killed_for_memory else ("Completed" if code == 0 else "Error")
        terminated = {"exitCode": code, "reason": reason, "startedAt": started}
        status = {**_container(name, container, False), "state": {"terminated": terminated}}
        self._set_status(pod, {"phase": "Succeeded" if code == 0 else "Failed", "containerStatuses": [status]})


def _version_info() -> dict[str, str]:
    """GET /version, every field a real server gives (the client's model requires them)."""
    return {
        "major": "1",
        "minor": VERSION.split(".")[1],
        "gitVersion": f"v{VERSION}-fake",
        "gitCommit": "0" * 40,
        "gitTreeState": "clean",
        "buildDate": "2026-01-01T00:00:00Z",
        "goVersion": "go1.24",
        "compiler": "gc",
        "platform": "linux/amd64",
    }


def write_kubeconfig(server: str, path: Path) -> Path:
    """A kubeconfig whose one context is the API server at `server`."""
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "fake", "cluster": {"server": server}}],
        "users": [{"name": "fake", "user": {"token": "fake-token"}}],
        "contexts": [{"name": "fake", "context": {"cluster": "fake", "user": "fake"}}],
        "current-context": "fake",
    }
    path.write_text(json.dumps(config))  # JSON is YAML
    return path


def _container(name: str, container: Mapping[str, Any], ready: bool) -> dict[str, Any]:
    """The fields every container status carries (the client's models require them)."""
    return {"name": name, "ready": ready, "image": container["image"], "imageID": "", "restartCount": 0}


def _kill(pod: FakePod) -> None:
    if pod.process is not None and pod.process.poll() is None:
        try:
            os.killpg(pod.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _resident_bytes(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError):
        pass
    return 0


def _quantity(value: str | None) -> int:
    if not value:
        return 0
    match = re.fullmatch(r"(\d+)([kMG]i?|)", str(value))
    if not match:
        raise ValueError(f"the fake kubelet reads memory like 512Mi or bytes, not {value!r}")
    return int(match[1]) * _UNITS[match[2]]


def _matches(body: Mapping[str, Any], labels: Mapping[str, str]) -> bool:
    have = body["metadata"].get("labels") or {}
    return all(have.get(key) == value for key, value in labels.items())


def _selects(selector: str, body: Mapping[str, Any]) -> bool:
    """Equality-based label selectors: k=v, k==v, k!=v, k, !k, joined by commas."""
    have = body["metadata"].get("labels") or {}
    for term in filter(None, (t.strip() for t in selector.split(","))):
        if "!=" in term:
            key, value = term.split("!=", 1)
            if have.get(key) == value:
                return False
        elif "=" in term:
            key, value = term.replace("==", "=").split("=", 1)
            if have.get(key) != value:
                return False
        elif term.startswith("!"):
            if term[1:] in have:
                return False
        elif term not in have:
            return False
    return True


def _status(code: int, reason: str, message: str) -> tuple[int, dict[str, Any]]:
    body = {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message, "reason": reason}
    return code, {**body, "code": code}


_ROUTES = [
    # (method, pattern, (verb, resource) as RBAC names it)
    ("GET", re.compile(r"^/version/?$"), None),
    ("POST", re.compile(r"^/api/v1/namespaces$"), ("create", "namespaces")),
    ("GET", re.compile(r"^/api/v1/namespaces/(?P<ns>[^/]+)$"), ("get", "namespaces")),
    ("GET", re.compile(r"^/api/v1/pods$"), ("list", "pods")),
    ("POST", re.compile(r"^/api/v1/namespaces/(?P<ns>[^/]+)/pods$"), ("create", "pods")),
    ("GET", re.compile(r"^/api/v1/namespaces/(?P<ns>[^/]+)/pods$"), ("list", "pods")),
    ("GET", re.compile(r"^/api/v1/namespaces/(?P<ns>[^/]+)/pods/(?P<name>[^/]+)$"), ("get", "pods")),
    ("DELETE", re.compile(r"^/api/v1/namespaces/(?P<ns>[^/]+)/pods/(?P<name>[^/]+)$"), ("delete", "pods")),
    ("GET", re.compile(r"^/api/v1/namespaces/(?P<ns>[^/]+)/pods/(?P<name>[^/]+)/log$"), ("get", "pods/log")),
]


def _handler_for(api: FakeKubernetesApiServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, format: str, *args: Any) -> None:  # quiet: pytest shows failures, not traffic
            pass

        def do_GET(self) -> None:
            self._route("GET")

        def do_POST(self) -> None:
            self._route("POST")

        def do_DELETE(self) -> None:
            self._route("DELETE")

        def _route(self, method: str) -> None:
            url = urlparse(self.path)
            query = {key: values[-1] for key, values in parse_qs(url.query).items()}
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            for route_method, pattern, permission in _ROUTES:
                match = pattern.match(url.path)
                if route_method != method or not match:
                    continue
                if permission is not None:
                    verb = "watch" if query.get("watch") in ("true", "1") else permission[0]
                    namespaced = permission[1] != "namespaces" and "ns" in match.groupdict()
                    api.calls.append((verb, permission[1], match["ns"] if namespaced else ""))
                self._serve(method, url.path, match.groupdict(), query, raw)
                return
            self._json(*_status(404, "NotFound", f"the fake API server does not serve {method} {url.path}"))

        def _serve(self, method: str, path: str, args: dict[str, str], query: dict[str, str], raw: bytes) -> None:
            ns, name = args.get("ns"), args.get("name")
            selector = query.get("labelSelector", "")
            if path.startswith("/version"):
                self._json(200, _version_info())
            elif path == "/api/v1/namespaces":
                self._json(*api.create_namespace(json.loads(raw)))
            elif name is None and ns is not None and path.endswith(f"/namespaces/{ns}"):
                found = api.namespaces.get(ns)
                self._json(*((200, found) if found else _status(404, "NotFound", f'namespaces "{ns}" not found')))
            elif method == "POST":
                assert ns is not None
                self._json(*api.create_pod(ns, json.loads(raw)))
            elif name is None and query.get("watch") in ("true", "1"):
                self._watch(ns, selector, int(query.get("resourceVersion") or 0), float(query["timeoutSeconds"]))
            elif name is None:
                self._json(200, api.list_pods(ns, selector))
            elif method == "DELETE":
                assert ns is not None
                self._json(*api.delete_pod(ns, name))
            elif path.endswith("/log"):
                assert ns is not None
                tail = query.get("tailLines")
                code, text = api.pod_log(ns, name, int(tail) if tail else None)
                self._send(code, text.encode(), "text/plain")
            else:
                assert ns is not None
                pod = api.pods.get((ns, name))
                self._json(*((200, pod.body) if pod else _status(404, "NotFound", f'pods "{name}" not found')))

        def _json(self, code: int, body: Mapping[str, Any]) -> None:
            self._send(code, json.dumps(body).encode(), "application/json")

        def _send(self, code: int, data: bytes, kind: str) -> None:
            self.send_response(code)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _watch(self, ns: str | None, selector: str, since: int, seconds: float) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Transfer-Encoding", "chunked")
            self.end_headers()

            def send(event: Mapping[str, Any]) -> None:
                line = json.dumps(event).encode() + b"\n"
                self.wfile.write(b"%x\r\n%s\r\n" % (len(line), line))
                self.wfile.flush()

            try:
                api.watch_pods(ns, selector, since, seconds, send)
                self.wfile.write(b"0\r\n\r\n")
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True

    return Handler
