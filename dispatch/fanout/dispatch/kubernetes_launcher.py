"""The Kubernetes launcher: a Pod per worker, through the official client (the `kubernetes` package).

Every pod (pod_manifest): restartPolicy Never, one container running the
worker command, requests and limits from the action's Resources, a non-root
uid, every capability dropped, no service-account token and no service
links (a task gets no credential of the cluster and no address it was not
given), the backend's labels (values Kubernetes refuses are made valid; the
exact values are kept in annotations). Pods go to one namespace per tenant
by default ("fanout-{tenant}", created when first needed: a ClusterRole);
or all in one namespace an admin made (`--namespace fanout-actions`: a Role
in that namespace is all it needs, as for a BYOC dispatcher in its own).

Exits come from one watch of this dispatcher's pods (label fanout.owner),
not from a poll per pod: a pod whose container terminated resolves its
waiter with the exit code, and OOMKilled when the kernel killed it for
memory. A pod that cannot start (its image cannot be pulled, its spec is
refused by the kubelet) ends at once, with the reason in the error.

The client is blocking: its calls run on this launcher's own threads, the
watch on a thread of its own, never on the event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from fanout.dispatch.containers import LABEL_OWNER, LABEL_TENANT, Exit, WorkerSpec
from fanout.server.errors import StartupError

log = logging.getLogger(__name__)

THREADS = 16
T = TypeVar("T")
DEFAULT_NAMESPACE = "fanout-{tenant}"
CONTAINER = "worker"
# How long one watch request lasts before it is renewed (from where it stopped).
WATCH_SECONDS = 60
# Waiting reasons after which a container never starts by itself: the worker ends at once, saying why.
CANNOT_START = frozenset(
    {"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "CreateContainerConfigError", "CreateContainerError"}
)
_LABEL_VALUE = re.compile(r"^(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?$")
_NOT_IN_LABEL = re.compile(r"[^A-Za-z0-9_.-]+")
_NOT_IN_NAME = re.compile(r"[^a-z0-9-]+")


class _Expired(Exception):
    """The watch's resource version is too old to go on from."""


class ClusterUnavailable(StartupError):
    """No Kubernetes API server answers with the configuration found; the CLI exits 2."""


def label_value(value: str) -> str:
    """`value` as Kubernetes accepts it in a label: itself when it can be, else a readable part and its hash."""
    if len(value) <= 63 and _LABEL_VALUE.match(value):
        return value
    readable = _NOT_IN_LABEL.sub("-", value)[:46].strip("-_.")
    digest = hashlib.sha256(value.encode()).hexdigest()[:16]
    return f"{readable}-{digest}" if readable else digest


def namespace_name(template: str, tenant: str) -> str:
    """The namespace of `tenant`'s pods: the template with {tenant} made a valid DNS label."""
    if "{tenant}" not in template:
        return template
    prefix, suffix = template.split("{tenant}", 1)
    part = _NOT_IN_NAME.sub("-", tenant.lower()).strip("-") or "x"
    name = f"{prefix}{part}{suffix}"
    if len(name) > 63 or part != tenant:  # two tenants must never share one by their spelling
        digest = hashlib.sha256(tenant.encode()).hexdigest()[:8]
        room = 63 - len(prefix) - len(suffix) - 9
        name = f"{prefix}{part[:room].strip('-')}-{digest}{suffix}"
    return name


def pod_manifest(spec: WorkerSpec, namespace: str) -> dict[str, Any]:
    """The Pod that runs `spec` (under a golden-file test: tests/kubernetes/golden/pod.yaml)."""
    uid, _, gid = spec.user.partition(":")
    resources: dict[str, dict[str, str]] = {}
    if spec.memory_bytes:
        mebibytes, rest = divmod(spec.memory_bytes, 1 << 20)
        resources.setdefault("limits", {})["memory"] = f"{mebibytes}Mi" if not rest else str(spec.memory_bytes)
    if spec.cpu_nanos:
        resources.setdefault("limits", {})["cpu"] = f"{-(-spec.cpu_nanos // 1_000_000)}m"
    if resources:
        resources["requests"] = dict(resources["limits"])  # what it may use is what it is given
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": spec.name,
            "namespace": namespace,
            "labels": {key: label_value(value) for key, value in sorted(spec.labels.items())},
            "annotations": dict(sorted(spec.labels.items())),
        },
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "terminationGracePeriodSeconds": 5,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": int(uid),
                "runAsGroup": int(gid or uid),
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": CONTAINER,
                    "image": spec.image,
                    "command": list(spec.command),
                    "env": [{"name": name, "value": value} for name, value in sorted(spec.env.items())],
                    "resources": resources,
                    "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
                }
            ],
        },
    }


def pod_exit(pod: Mapping[str, Any]) -> Exit | None:
    """How the pod's worker ended, or None while it has not."""
    status = pod.get("status") or {}
    for container in status.get("containerStatuses") or []:
        state = container.get("state") or {}
        if terminated := state.get("terminated"):
            reason = terminated.get("reason") or ""
            return Exit(int(terminated.get("exitCode", -1)), reason == "OOMKilled", reason)
        waiting = state.get("waiting") or {}
        if waiting.get("reason") in CANNOT_START:
            return Exit(-1, reason=f"{waiting['reason']}: {waiting.get('message', '')}".strip(": "))
    if status.get("phase") in ("Succeeded", "Failed"):
        return Exit(-1, reason=status.get("reason") or status["phase"])
    return None


class KubernetesLauncher:
    def __init__(self, api_client: Any, owner: str, namespace: str = DEFAULT_NAMESPACE) -> None:
        from kubernetes import client

        self._api_client = api_client
        self._core = client.CoreV1Api(api_client)
        self._owner = owner
        self._namespace_template = namespace
        # One namespace for every tenant (say, a BYOC dispatcher's own): an admin made it, a Role suffices.
        self._fixed_namespace = "{tenant}" not in namespace
        self._threads = ThreadPoolExecutor(THREADS, thread_name_prefix="fanout-kubernetes")
        self._namespaces: dict[str, str] = {}  # pod name -> its namespace
        self._ready_namespaces: set[str] = set()
        self._exits: dict[str, asyncio.Future[Exit]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._watcher: threading.Thread | None = None
        self._response: Any = None  # the watch's HTTP response, which close() shuts
        self._closing = threading.Event()
        self._subscribing = asyncio.Lock()

    @classmethod
    def from_config(cls, owner: str, namespace: str = DEFAULT_NAMESPACE) -> KubernetesLauncher:
        """The cluster of KUBECONFIG (or ~/.kube/config), or the one this pod runs in; ClusterUnavailable if none."""
        try:
            from kubernetes import client, config
        except ImportError:
            raise ClusterUnavailable(
                "the kubernetes backend needs the Kubernetes client: pip install 'fanout[kubernetes]'"
            ) from None
        configuration = client.Configuration()
        try:
            try:
                config.load_incluster_config(client_configuration=configuration)
            except config.ConfigException:
                # Read now, not when the client was imported (it reads KUBECONFIG once, at import).
                kubeconfig = os.environ.get("KUBECONFIG") or None
                config.load_kube_config(config_file=kubeconfig, client_configuration=configuration)
            configuration.connection_pool_maxsize = THREADS
            api_client = client.ApiClient(configuration)
            client.VersionApi(api_client).get_code(_request_timeout=10)
        except Exception as exc:
            raise ClusterUnavailable(
                f"no Kubernetes API server is reachable ({exc}); set KUBECONFIG or run the dispatcher in a pod "
                "with the RBAC of deploy/kubernetes/base/dispatcher/rbac.yaml"
            ) from None
        return cls(api_client, owner, namespace)

    async def _call(self, fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._threads, lambda: fn(*args, **kwargs))

    # -- exits, from one watch -------------------------------------------------------------------

    async def _follow_exits(self) -> None:
        async with self._subscribing:
            if self._watcher is not None:
                return
            self._loop = asyncio.get_running_loop()
            # Listed before the first pod is made: the watch goes on from here, so no end is missed.
            version = await self._call(self._list_and_resolve)
            self._watcher = threading.Thread(
                target=self._watch, args=(version,), name="fanout-kubernetes-watch", daemon=True
            )
            self._watcher.start()

    def _selector(self) -> str:
        return f"{LABEL_OWNER}={label_value(self._owner)}"

    def _list_pods(self, *args: Any, **kwargs: Any) -> Any:
        """List (or watch) pods: in the one namespace when it is fixed (a Role is enough), else in all."""
        if self._fixed_namespace:
            return self._core.list_namespaced_pod(self._namespace_template, *args, **kwargs)
        return self._core.list_pod_for_all_namespaces(*args, **kwargs)

    def _list_and_resolve(self) -> str:
        listed = self._list_pods(label_selector=self._selector(), _preload_content=False)
        body = _json(listed)
        for pod in body.get("items") or []:
            self._seen("MODIFIED", pod)
        return str(body["metadata"]["resourceVersion"])

    def _watch(self, version: str) -> None:
        from kubernetes.client.exceptions import ApiException
        from kubernetes.watch.watch import iter_resp_lines

        while not self._closing.is_set():
            try:
                # Read by hand, not through kubernetes.watch: plain dicts (no model built per event),
                # and a response close() can shut to end the thread at once.
                self._response = self._list_pods(
                    label_selector=self._selector(),
                    watch=True,
                    resource_version=version,
                    timeout_seconds=WATCH_SECONDS,
                    allow_watch_bookmarks=True,
                    _preload_content=False,
                )
                for line in iter_resp_lines(self._response):
                    event = json.loads(line)
                    if event["type"] == "ERROR":  # the version expired (410 Gone): list again, go on from there
                        raise _Expired(event["object"].get("message", ""))
                    version = event["object"]["metadata"].get("resourceVersion") or version
                    self._seen(event["type"], event["object"])
                # The watch ended by its timeout: go on from the last version it gave.
            except _Expired:
                version = self._relist()
            except Exception as exc:  # refused, or the connection broke: list again and go on from there
                if self._closing.is_set():
                    return
                if not (isinstance(exc, ApiException) and exc.status == 410):
                    log.warning("the pod watch broke (%r); listing again", exc)
                    time.sleep(1)
                version = self._relist()
            finally:
                if self._response is not None:
                    self._response.release_conn()

    def _relist(self) -> str:
        while not self._closing.is_set():
            try:
                return self._list_and_resolve()
            except Exception as exc:
                log.warning("cannot list the dispatcher's pods (%r); trying again", exc)
                time.sleep(1)
        return ""

    def _seen(self, kind: str, pod: Mapping[str, Any]) -> None:
        """Every event of the watch (its thread): resolve the waiter of a pod that ended."""
        metadata = pod.get("metadata") or {}
        name = metadata.get("name")
        if kind == "BOOKMARK" or not name:
            return
        ended = pod_exit(pod)
        if ended is None and kind == "DELETED":
            ended = Exit(-1, reason="the pod was deleted")
        if ended is not None and self._loop is not None:
            self._loop.call_soon_threadsafe(self._resolve, name, ended, kind == "DELETED")

    def _resolve(self, name: str, ended: Exit, gone: bool) -> None:
        # Kept until wait() takes it (a worker may end before anyone waits), or until its pod is gone.
        future = self._exits.pop(name, None) if gone else self._exits.get(name)
        if future is not None and not future.done():
            future.set_result(ended)

    # -- the Launcher protocol ---------------------------------------------------------------------

    async def start(self, spec: WorkerSpec) -> None:
        await self._follow_exits()
        namespace = namespace_name(self._namespace_template, spec.labels.get(LABEL_TENANT, ""))
        await self._ensure_namespace(namespace)
        self._exits[spec.name] = asyncio.get_running_loop().create_future()
        self._namespaces[spec.name] = namespace
        try:
            await self._call(self._core.create_namespaced_pod, namespace, pod_manifest(spec, namespace))
        except BaseException as exc:
            self._exits.pop(spec.name, None)
            self._namespaces.pop(spec.name, None)
            if isinstance(exc, Exception):
                raise RuntimeError(f"the API server refused pod {spec.name}: {_reason(exc)}") from None
            raise

    async def _ensure_namespace(self, namespace: str) -> None:
        if not self._fixed_namespace and namespace not in self._ready_namespaces:
            await self._call(self._make_namespace, namespace)
            self._ready_namespaces.add(namespace)

    def _make_namespace(self, namespace: str) -> None:
        from kubernetes.client.exceptions import ApiException

        try:
            self._core.read_namespace(namespace)
            return
        except ApiException as exc:
            if exc.status != 404:
                raise
        body: Any = {  # the client takes plain dicts as well as its models
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": namespace, "labels": {"app.kubernetes.io/managed-by": "fanout"}},
        }
        try:
            self._core.create_namespace(body)
        except ApiException as exc:
            if exc.status != 409:  # 409: another dispatcher made it meanwhile
                raise

    async def wait(self, name: str) -> Exit:
        future = self._exits.get(name)
        if future is None:  # not started here (or its end was told already): ask the API server
            pod = await self._call(self._read, name)
            ended = pod_exit(pod) if pod else Exit(-1, reason="the pod is gone")
            if ended is None:
                raise RuntimeError(f"pod {name} was not started by this launcher")
            return ended
        try:
            return await asyncio.shield(future)
        finally:
            if future.done():
                self._exits.pop(name, None)

    def _read(self, name: str) -> dict[str, Any] | None:
        from kubernetes.client.exceptions import ApiException

        try:
            return _json(self._core.read_namespaced_pod(name, self._namespaces[name], _preload_content=False))
        except (ApiException, KeyError):
            return None

    async def remove(self, names: Sequence[str]) -> None:
        await asyncio.gather(*(self._call(self._delete, name) for name in names))
        for name in names:  # an end nobody took; one still to come is told by the pod's DELETED event
            if (future := self._exits.get(name)) is not None and future.done():
                del self._exits[name]

    def _delete(self, name: str) -> None:
        from kubernetes.client.exceptions import ApiException

        namespace = self._namespaces.get(name)
        if namespace is None:
            return  # never made here, nor listed: nothing of ours to delete
        try:
            self._core.delete_namespaced_pod(name, namespace, grace_period_seconds=0)
        except ApiException as exc:
            if exc.status != 404:
                raise
        self._namespaces.pop(name, None)

    async def list(self, labels: Mapping[str, str]) -> list[str]:
        selector = ",".join(f"{key}={label_value(value)}" for key, value in labels.items())
        listed = await self._call(self._list_pods, label_selector=selector, _preload_content=False)
        names = []
        for pod in _json(listed).get("items") or []:
            metadata = pod["metadata"]
            self._namespaces[metadata["name"]] = metadata["namespace"]  # so that remove() finds it
            names.append(metadata["name"])
        return names

    async def log_tail(self, name: str, size: int) -> str:
        namespace = self._namespaces.get(name)
        if namespace is None:
            return ""
        try:
            # limitBytes cuts from the start: ask for the last lines and cut the rest here.
            output: str = await self._call(
                self._core.read_namespaced_pod_log, name, namespace, container=CONTAINER, tail_lines=200
            )
        except Exception:
            return ""
        return output[-size:]

    async def close(self) -> None:
        self._closing.set()
        if self._response is not None:
            with contextlib.suppress(Exception):
                self._response.shutdown()  # wakes the watch thread out of its read
        if self._watcher is not None:
            await asyncio.to_thread(self._watcher.join, 5)
        for future in self._exits.values():
            future.cancel()
        self._exits.clear()
        self._threads.shutdown(wait=False, cancel_futures=True)
        with contextlib.suppress(Exception):
            await asyncio.to_thread(self._api_client.close)


def _json(response: Any) -> dict[str, Any]:
    return json.loads(response.data)


def _reason(exc: BaseException) -> str:
    """What the API server said (its Status message), else the exception itself."""
    body = getattr(exc, "body", None)
    if body:
        with contextlib.suppress(ValueError, TypeError, AttributeError):
            return str(json.loads(body).get("message") or body)
    return repr(exc)
