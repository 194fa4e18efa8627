"""The Kubernetes wrapper's request accounting."""

from __future__ import annotations

from typing import Any

import pytest

from patchwarden.runtime.kube import pages, resource_of


@pytest.mark.parametrize(
    ("path", "resource"),
    [
        ("/apis/patchwarden.io/v1alpha1/namespaces/n/managedsystems/s/status", "managedsystems"),
        ("/apis/apps/v1/namespaces/n/deployments/web", "deployments"),
        ("/api/v1/namespaces/n/persistentvolumeclaims/data", "persistentvolumeclaims"),
        ("/api/v1/namespaces/n/pods?labelSelector=app%3Dweb", "pods"),
        ("/apis/kopf.dev/v1/clusterkopfpeerings/patchwarden", "clusterkopfpeerings"),
        ("/api/v1/namespaces/n", "namespaces"),
    ],
)
def test_the_request_counter_names_the_resource(path: str, resource: str) -> None:
    assert resource_of(path) == resource


def test_a_paged_list_follows_the_continue_token_to_the_last_page() -> None:
    served = {None: ("a", "t1"), "t1": ("b", "t2"), "t2": ("c", "")}
    asked: list[dict[str, Any]] = []

    def call(**kwargs: Any) -> dict[str, Any]:
        asked.append(kwargs)
        item, token = served[kwargs.get("_continue")]
        return {"metadata": {"continue": token}, "items": [item]}

    assert [p["items"] for p in pages(call, 2)] == [["a"], ["b"], ["c"]]
    assert asked == [{"limit": 2}, {"limit": 2, "_continue": "t1"}, {"limit": 2, "_continue": "t2"}]


class _Ended:
    """What an exec's websocket looks like once the command has ended with code 0."""

    returncode = 0

    def is_open(self) -> bool:
        return False

    def close(self) -> None:
        pass


def test_an_exec_leaves_the_shared_client_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    """``kubernetes.stream.stream`` swaps the client's ``call_api`` while it connects; two
    execs at once (two systems' hooks) left the shared client sending every request as a
    websocket. Each exec has a client of its own, so the shared one is never swapped."""
    import functools
    import threading

    from kubernetes import client
    from kubernetes import stream as stream_module
    from kubernetes.stream.stream import _websocket_request

    from patchwarden.runtime.kube import Kube

    configuration = client.Configuration()
    configuration.host = "https://127.0.0.1:1"
    kube = Kube(client.ApiClient(configuration))
    both = threading.Barrier(2, timeout=10)
    swapped: list[bool] = []

    def connect(*args: Any, **kwargs: Any) -> _Ended:
        swapped.append("call_api" in vars(kube.api))
        both.wait()  # both execs are connecting at once
        return _Ended()

    websocket = functools.partial(_websocket_request, connect, None)
    monkeypatch.setattr(stream_module, "stream", websocket)
    answers: list[tuple[int | None, str]] = []
    threads = [
        threading.Thread(target=lambda: answers.append(kube.exec("n", "p", "app", ["true"], 5)))
        for _ in range(2)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    assert answers == [(0, ""), (0, "")]
    assert swapped == [False, False]
    assert "call_api" not in vars(kube.api), "the shared client's requests are plain HTTP again"


def test_every_request_that_names_no_timeout_gets_one() -> None:
    """The client waits for ever by default; a cut connection would hold a step as long."""
    from kubernetes import client

    from patchwarden.runtime.kube import REQUEST_TIMEOUT, with_deadline

    configuration = client.Configuration()
    configuration.host = "http://127.0.0.1:1"
    api = client.ApiClient(configuration)
    seen: list[object] = []

    def record(method: str, url: str, *args: object, **kwargs: object) -> None:
        seen.append(kwargs.get("_request_timeout"))
        raise ConnectionRefusedError("not sent")

    api.rest_client.request = record
    with_deadline(api.rest_client)
    core = client.CoreV1Api(api)
    for call in (
        lambda: core.read_namespace("x"),
        lambda: core.delete_namespaced_pod("p", "x"),
        lambda: core.list_namespace(_request_timeout=(10.0, 330.0)),  # a watch names its own
    ):
        with pytest.raises(ConnectionRefusedError):
            call()
    assert seen == [REQUEST_TIMEOUT, REQUEST_TIMEOUT, (10.0, 330.0)]
