"""Status writes happen only on change, with an Event per transition worth telling."""

from __future__ import annotations

from typing import Any

from patchwarden.core import conditions as c
from patchwarden.runtime.writer import StatusWriter
from patchwarden_dev.fakekube import FakeKube


def test_an_unchanged_status_is_not_written_and_bad_news_is_a_warning() -> None:
    kube = FakeKube()
    body = kube.put("managedsystems", "ns", {"metadata": {"name": "s"}, "spec": {}})
    events: list[tuple[str, str]] = []
    writer = StatusWriter(kube, lambda _b, type_, reason, _m: events.append((type_, reason)))

    def status(stalled: bool) -> dict[str, Any]:
        conds = c.set_condition(
            [], c.STALLED, stalled, "X" if stalled else "Reconciled", "", generation=1, now="T"
        )
        conds = c.set_condition(conds, c.READY, not stalled, "R", "", generation=1, now="T")
        return {"observedGeneration": 1, "conditions": conds}

    writer.write("managedsystems", body, status(False))
    writer.write("managedsystems", body, status(False))
    assert [x for x in kube.calls if x.startswith("patch")] == ["patch managedsystems/status/s"]
    assert events == [], "a first 'all fine' is no news; Ready mirrors the others"
    writer.write("managedsystems", body, status(True))
    assert events == [("Warning", "X")]
    assert kube.stored("managedsystems", "ns", "s")["status"]["conditions"][0]["status"] == "True"
