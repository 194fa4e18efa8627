"""A shop on a real node (issue 34, part 5): a PostgreSQL StatefulSet (Debian's
``postgresql`` packages, built here) and an app Deployment that keeps committing rows and,
for each committed row, writes a file to its own claim. One update moves both to new
image references; its migration Job fails halfway. After ``RolledBack``:

- with ``consistency: Group`` and the app frozen around the group snapshot, PostgreSQL
  starts from the restored claims by itself, ``pg_amcheck`` passes, the rows and the
  app's files agree exactly, every row committed before the freeze is there, the
  failed-state snapshot holds what the migration wrote, both workloads run their
  recorded images and the run records from→to for both;
- with ``consistency: Crash`` the two claims are snapshotted one after the other while
  the app writes: the test measures how far they disagree (printed, and in
  docs/workloads.md).

The test node has no DNS and no Services: the database publishes its pod IP on a small
claim of its own (``db-address``) that the app and the migration read.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from patchwarden_dev.devcluster import images
from patchwarden_dev.devcluster.realnode import RealNodeCluster
from tests.conftest import Cluster
from tests.helpers import wait_for
from tests.node.test_runs_on_a_real_node import SLOWER
from tests.node.workloads import USER, provisioned_claim, reader_pod, ready_pod
from tests.operator_harness import (
    ENDED,
    create,
    release_catalog,
    running_operator,
    system,
    wait_run,
)

PG_OLD, PG_NEW, SHOP_OLD, SHOP_NEW = "15-a", "15-b", "shop-1.0", "shop-1.1"
PSQL = "psql -h /tmp -U postgres -v ON_ERROR_STOP=1 -qAt"

DB_START = """
set -e
export PGDATA=/data/pg
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  initdb -U postgres --auth=trust -D "$PGDATA" >/dev/null
  echo "host all all 0.0.0.0/0 trust" >> "$PGDATA/pg_hba.conf"
fi
chmod 0700 "$PGDATA"  # the kubelet's fsGroup made it group-writable: postgres refuses that
echo "$POD_IP" > /addr/ip
exec postgres -D "$PGDATA" -c listen_addresses='*' -c unix_socket_directories=/tmp
"""

APP_LOOP = """
i=$(cat /files/.last 2>/dev/null || echo 0); stop=0; trap 'stop=1' TERM
mkdir -p /files/rows
while [ "$stop" = 0 ]; do
  if [ -f /files/.frozen ]; then touch /files/.paused; sleep 0.05; continue; fi
  n=$((i + 1))
  if psql -h "$(cat /addr/ip)" -U postgres -qAtc "INSERT INTO rows VALUES ($n)" >/dev/null 2>&1
  then echo "$n" > "/files/rows/$n"; echo "$n" > /files/.last; i=$n
  else sleep 0.5
  fi
done
"""

FREEZE_APP = (
    "touch /files/.frozen; n=0; until [ -f /files/.paused ]; do sleep 0.05; n=$((n + 1)); "
    '[ "$n" -lt 300 ] || exit 1; done; sync; echo "rows before the freeze: $(cat /files/.last)"'
)

MIGRATION = (
    'H=$(cat /addr/ip); psql -h "$H" -U postgres -v ON_ERROR_STOP=1 -qc '
    '"CREATE TABLE migrated AS SELECT id FROM rows; ALTER TABLE rows ADD COLUMN note text '
    "DEFAULT 'migrated'\" && echo 'migration: step 1 of 2 written' && "
    "echo 'migration: step 2 failed' && exit 1"
)


def image(tag: str) -> str:
    return f"{images.POSTGRES}:{tag}"


@pytest.fixture(scope="module")
def postgres_images(node_cluster: Cluster) -> Iterator[None]:
    """The PostgreSQL image, built once (cached), imported and tagged under the four
    references the catalog's releases name (one image: what differs is the reference)."""
    dev = node_cluster.dev
    assert isinstance(dev, RealNodeCluster)
    built = images.postgres_image(dev.cache_dir)
    dev.import_image(built)
    for tag in (PG_OLD, PG_NEW, SHOP_OLD, SHOP_NEW):
        dev.ctr("images", "tag", "--force", built.name, image(tag))
    yield


def address_claims(core: client.CoreV1Api, ns: str) -> None:
    for name, size in (("db-address", "16Mi"), ("files", "64Mi")):
        core.create_namespaced_persistent_volume_claim(
            ns,
            {
                "metadata": {"name": name},
                "spec": {
                    "accessModes": ["ReadWriteOnce"],
                    "resources": {"requests": {"storage": size}},
                },
            },
        )


def database() -> dict[str, Any]:
    return {
        "metadata": {"name": "db"},
        "spec": {
            "replicas": 1,
            "serviceName": "db",
            "selector": {"matchLabels": {"app": "db"}},
            "template": {
                "metadata": {"labels": {"app": "db"}},
                "spec": {
                    "terminationGracePeriodSeconds": 20,
                    "securityContext": {**USER, "fsGroup": 1000},
                    "containers": [
                        {
                            "name": "postgres",
                            "image": image(PG_OLD),
                            "imagePullPolicy": "Never",
                            "command": ["sh", "-c", DB_START],
                            "env": [
                                {
                                    "name": "POD_IP",
                                    "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}},
                                }
                            ],
                            "readinessProbe": {
                                "exec": {"command": ["pg_isready", "-h", "/tmp", "-U", "postgres"]},
                                "periodSeconds": 1,
                            },
                            "volumeMounts": [
                                {"name": "data", "mountPath": "/data"},
                                {"name": "addr", "mountPath": "/addr"},
                            ],
                        }
                    ],
                    "volumes": [
                        {"name": "addr", "persistentVolumeClaim": {"claimName": "db-address"}}
                    ],
                },
            },
            "volumeClaimTemplates": [
                {
                    "metadata": {"name": "data"},
                    "spec": {
                        "accessModes": ["ReadWriteOnce"],
                        "resources": {"requests": {"storage": "256Mi"}},
                    },
                }
            ],
        },
    }


def shop_app() -> dict[str, Any]:
    return {
        "metadata": {"name": "app"},
        "spec": {
            "replicas": 1,
            "strategy": {"type": "Recreate"},  # one writer of its claim at a time
            "selector": {"matchLabels": {"app": "app"}},
            "template": {
                "metadata": {"labels": {"app": "app"}},
                "spec": {
                    "terminationGracePeriodSeconds": 20,
                    "securityContext": {**USER, "fsGroup": 1000},
                    "containers": [
                        {
                            "name": "shop",
                            "image": image(SHOP_OLD),
                            "imagePullPolicy": "Never",
                            "command": ["sh", "-c", APP_LOOP],
                            "readinessProbe": {
                                "exec": {"command": ["test", "-s", "/files/.last"]},
                                "periodSeconds": 1,
                            },
                            "volumeMounts": [
                                {"name": "files", "mountPath": "/files"},
                                {"name": "addr", "mountPath": "/addr", "readOnly": True},
                            ],
                        }
                    ],
                    "volumes": [
                        {"name": "files", "persistentVolumeClaim": {"claimName": "files"}},
                        {"name": "addr", "persistentVolumeClaim": {"claimName": "db-address"}},
                    ],
                },
            },
        },
    }


def release(version: str, tag: str) -> dict[str, Any]:
    return {
        "version": version,
        "image": image(tag),
        "classes": ["security"],
        "released": "2026-01-05T00:00:00Z",
    }


@pytest.fixture
def shop_catalog(node_cluster: Cluster, node_namespace: str) -> Iterator[None]:
    """The provider's catalog of the two components, named after the test's namespace."""
    node_cluster.install_crds()
    components = {
        "postgresql": [release("15.0", PG_OLD), release("15.1", PG_NEW)],
        "shop": [release("1.0", SHOP_OLD), release("1.1", SHOP_NEW)],
    }
    with release_catalog(node_cluster, node_namespace, components):
        yield


def shop_system(ns: str, consistency: str) -> dict[str, Any]:
    container = {
        "name": "migrate",
        "image": image(PG_NEW),
        "imagePullPolicy": "Never",
        "command": ["sh", "-c", MIGRATION],
        "securityContext": dict(USER),
        "volumeMounts": [{"name": "addr", "mountPath": "/addr", "readOnly": True}],
    }
    body = system("shop", "SaaS", update=container)
    spec = body["spec"]
    del spec["workload"]
    spec["workloads"] = [
        {"kind": "StatefulSet", "name": "db", "role": "database"},
        {"kind": "Deployment", "name": "app", "role": "app"},
    ]
    by_provider = {"installedBy": "provider", "source": "standard-repository"}
    spec["components"] = [
        {"name": "postgresql", "workload": "db", "container": "postgres", **by_provider},
        {"name": "shop", "workload": "app", "container": "shop", **by_provider},
    ]
    spec["updates"].update(catalogs=[ns], runJob="WhenNewer", verifyTimeout="3m")
    pod = spec["updates"]["template"]["spec"]
    pod["securityContext"] = {**USER, "fsGroup": 1000}
    pod["volumes"] = [{"name": "addr", "persistentVolumeClaim": {"claimName": "db-address"}}]
    spec["backup"] = {"consistency": consistency}
    if consistency == "Group":
        spec["backup"]["maxFreeze"] = "90s"
        spec["backup"]["freeze"] = [
            {
                "name": "app",
                "workload": "app",
                "container": "shop",
                "freeze": ["sh", "-c", FREEZE_APP],
                "thaw": ["sh", "-c", "rm -f /files/.frozen /files/.paused"],
                "timeout": "30s",
            }
        ]
    return body


def sql(cluster: Cluster, ns: str, query: str) -> str:
    return cluster.kubectl(
        "exec", "-n", ns, "db-0", "-c", "postgres", "--", "sh", "-c", f'{PSQL} -c "{query}"'
    ).strip()


def app_gone(cluster: Cluster, ns: str) -> None:
    """Stop the app (it ends its row and file first, on SIGTERM): nothing writes now."""
    apps, core = client.AppsV1Api(cluster.api), client.CoreV1Api(cluster.api)
    apps.patch_namespaced_deployment_scale("app", ns, {"spec": {"replicas": 0}})
    wait_for(
        lambda: not core.list_namespaced_pod(ns, label_selector="app=app").items,
        timeout=90,
        what="the app's pods to go",
    )


def files_on(cluster: Cluster, ns: str, claim: str, name: str) -> set[int]:
    """The row files on ``claim``, listed by a pod of its own."""
    core = client.CoreV1Api(cluster.api)
    volumes = [{"name": "f", "persistentVolumeClaim": {"claimName": claim}}]
    core.create_namespaced_pod(
        ns, reader_pod(name, "ls /files/rows", volumes, [{"name": "f", "mountPath": "/files"}])
    )
    wait_for(
        lambda: core.read_namespaced_pod(name, ns).status.phase == "Succeeded",
        timeout=120,
        what=f"pod {name} to list the files",
    )
    return {int(x) for x in cluster.kubectl("logs", "-n", ns, name).split()}


def start_shop(cluster: Cluster, ns: str, consistency: str) -> None:
    apps, core = client.AppsV1Api(cluster.api), client.CoreV1Api(cluster.api)
    address_claims(core, ns)
    apps.create_namespaced_stateful_set(ns, database())
    ready_pod(cluster, ns, "db-0")
    sql(cluster, ns, "CREATE TABLE rows (id int PRIMARY KEY)")
    apps.create_namespaced_deployment(ns, shop_app())
    wait_for(
        lambda: apps.read_namespaced_deployment("app", ns).status.available_replicas == 1,
        timeout=120,
        what="the app ready (its freeze runs in its ready pod)",
    )
    wait_for(
        lambda: int(sql(cluster, ns, "SELECT count(*) FROM rows")) >= 50,
        timeout=120,
        what="the app to commit 50 rows",
    )
    create(cluster, ns, shop_system(ns, consistency))


def test_a_failed_migration_rolls_back_the_database_and_the_app_together(
    node_cluster: Cluster,
    node_namespace: str,
    tmp_path: Path,
    postgres_images: None,
    shop_catalog: None,
) -> None:
    ns, cluster = node_namespace, node_cluster
    apps = client.AppsV1Api(cluster.api)
    with running_operator(cluster, ns, tmp_path, **SLOWER) as op:
        start_shop(cluster, ns, "Group")
        run = wait_run(cluster, ns, "shop", ENDED, timeout=600)
        assert run["status"]["phase"] == "RolledBack", (run["status"], op.output()[-4000:])
    status = run["status"]
    assert "migration: step 2 failed" in status["job"]["termination"]
    # Both moved to new image references, from→to recorded for both; both run the
    # recorded (old) ones again.
    assert [(c["workload"], c["from"], c["to"]) for c in status["changes"]] == [
        ("db", "15.0", "15.1"),
        ("app", "1.0", "1.1"),
    ]
    db = apps.read_namespaced_stateful_set("db", ns).spec.template.spec.containers[0]
    app = apps.read_namespaced_deployment("app", ns).spec.template.spec.containers[0]
    assert (db.image, app.image) == (image(PG_OLD), image(SHOP_OLD))
    # One group snapshot, the app frozen around it.
    assert status["groupSnapshot"]["readyToUse"]
    [froze, thawed] = status["freeze"]["hooks"]
    assert (froze["stage"], froze["state"], thawed["stage"]) == ("freeze", "Succeeded", "thaw")
    before_freeze = int(froze["output"].rsplit(":", 1)[1])

    # PostgreSQL started from the restored claim by itself (crash recovery, no person),
    # and its integrity check passes; the migration is not in it.
    ready_pod(cluster, ns, "db-0", timeout=180)
    check = cluster.kubectl(
        "exec", "-n", ns, "db-0", "-c", "postgres", "--",
        "pg_amcheck", "-h", "/tmp", "-U", "postgres", "--install-missing", "--heapallindexed",
        "postgres",
    )  # fmt: skip
    assert "error" not in check.lower(), check
    assert sql(cluster, ns, "SELECT to_regclass('migrated') IS NULL") == "t"
    # The rows and the app's files agree exactly; every row committed before the freeze
    # is there.
    app_gone(cluster, ns)
    rows = {int(x) for x in sql(cluster, ns, "SELECT id FROM rows").split()}
    files = files_on(cluster, ns, "files", "list-files")
    assert rows == files, (sorted(rows - files)[:10], sorted(files - rows)[:10])
    assert set(range(1, before_freeze + 1)) <= rows, before_freeze
    print(f"\nGroup: {len(rows)} rows and files agree; {before_freeze} committed before the freeze")

    # The failed-state snapshot of the database's claim holds what the migration wrote.
    kept = {r["claim"]: r["snapshot"] for r in status["restore"]["failedState"]}
    provisioned_claim(cluster, ns, "failed-db", "256Mi", snapshot=kept["data-db-0"])
    migrated = failed_state_query(cluster, ns, "failed-db", "SELECT count(*) FROM migrated")
    assert int(migrated) > 0, migrated


def failed_state_query(cluster: Cluster, ns: str, claim: str, query: str) -> str:
    """Start PostgreSQL on a claim made from a failed-state snapshot (its own crash
    recovery) and answer ``query``."""
    core = client.CoreV1Api(cluster.api)
    name = f"query-{claim}"
    script = (
        "rm -f /data/pg/postmaster.pid; chmod 0700 /data/pg; "
        "postgres -D /data/pg -c listen_addresses='' -c unix_socket_directories=/tmp "
        ">/tmp/pg.log 2>&1 & "
        "until pg_isready -q -h /tmp -U postgres; do sleep 0.2; done; "
        f'echo "answer: $({PSQL} -c "{query}")"; pg_ctl -D /data/pg stop -m fast >/dev/null'
    )
    pod = reader_pod(
        name,
        script,
        [{"name": "data", "persistentVolumeClaim": {"claimName": claim}}],
        [{"name": "data", "mountPath": "/data"}],
    )
    pod["spec"]["containers"][0]["image"] = image(PG_OLD)
    core.create_namespaced_pod(ns, pod)
    wait_for(
        lambda: core.read_namespaced_pod(name, ns).status.phase in {"Succeeded", "Failed"},
        timeout=180,
        what=f"PostgreSQL on {claim} to answer",
    )
    out = cluster.kubectl("logs", "-n", ns, name)
    assert core.read_namespaced_pod(name, ns).status.phase == "Succeeded", out
    [answer] = [x for x in out.splitlines() if x.startswith("answer: ")]
    return answer.removeprefix("answer: ")


def test_crash_snapshots_of_a_busy_database_on_this_driver(
    node_cluster: Cluster,
    node_namespace: str,
    tmp_path: Path,
    postgres_images: None,
    shop_catalog: None,
) -> None:
    """The same shop and the same failed migration with ``consistency: Crash``: each claim
    snapshotted on its own while the app writes. Could the database's claim and the app's
    disagree? On the CSI hostpath driver a snapshot of a filesystem volume is ``tar czf`` of
    its directory, and GNU tar fails ("file changed as we read it") when PostgreSQL writes
    meanwhile: the driver refuses the snapshot of the busy database, again at each retry,
    and the run ends ``Failed`` with nothing changed. (The Group test succeeds because the
    app is frozen: the database is idle while the group is cut.) Should an attempt get
    through between two writes, the run rolls back instead, and the test measures how far
    the two claims disagree. Either outcome is printed (docs/workloads.md quotes it)."""
    ns, cluster = node_namespace, node_cluster
    apps = client.AppsV1Api(cluster.api)
    faster = {**SLOWER, "PATCHWARDEN_SNAPSHOT_TIMEOUT_SECONDS": "60"}
    with running_operator(cluster, ns, tmp_path, **faster) as op:
        start_shop(cluster, ns, "Crash")
        run = wait_run(cluster, ns, "shop", ENDED, timeout=600)
    status = run["status"]
    if status["phase"] == "Failed":
        assert status["message"].startswith("snapshots not ready within 60s"), status
        db_snapshot = next(r["snapshot"] for r in status["snapshots"] if r["claim"] == "data-db-0")
        snap = client.CustomObjectsApi(cluster.api).get_namespaced_custom_object(
            "snapshot.storage.k8s.io", "v1", ns, "volumesnapshots", db_snapshot
        )
        error = (snap.get("status") or {}).get("error", {}).get("message", "")
        assert "file changed as we read it" in error, snap.get("status")
        assert not status.get("changes") and "job" not in status, "nothing was changed"
        db = apps.read_namespaced_stateful_set("db", ns).spec.template.spec.containers[0]
        assert db.image == image(PG_OLD)
        print(f"\nCrash: the driver refused the busy database's snapshot: {error[-160:]}")
        return
    assert status["phase"] == "RolledBack", (status, op.output()[-4000:])
    ready_pod(cluster, ns, "db-0", timeout=180)
    cluster.kubectl(
        "exec", "-n", ns, "db-0", "-c", "postgres", "--",
        "pg_amcheck", "-h", "/tmp", "-U", "postgres", "--install-missing", "postgres",
    )  # fmt: skip
    app_gone(cluster, ns)
    rows = {int(x) for x in sql(cluster, ns, "SELECT id FROM rows").split()}
    files = files_on(cluster, ns, "files", "list-files")
    print(
        f"\nCrash: {len(rows)} rows, {len(files)} files; files without their row "
        f"{len(files - rows)}, rows without their file {len(rows - files)}"
    )
    assert rows and files, "both claims were restored with the shop's data"
