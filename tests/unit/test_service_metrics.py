"""The daemon feeds the metrics and writes the textfile; records carry the cgroup's identity.

On the fake kernel of test_service (fake cgroupfs, fake clock, scripted triggers):
the textfile after a scripted pressure episode, parsed back with prometheus_client's
own parser; the write interval on a FakeClock; a failing write recorded once; the
identity fields (systemd unit, pod, QoS class, container and their names from a fake
/var/log/pods) on every record about a cgroup; target.kubernetes in discovery; reload.
"""

from __future__ import annotations

from pathlib import Path
from typing import Dict, FrozenSet, Iterator, List, Optional, Tuple

import pytest
from prometheus_client.parser import text_string_to_metric_families

from remediator.daemon.metrics_feed import TEXTFILE_FIELD, MetricsFeed, annotate
from remediator.daemon.service import Service
from remediator.identity import IdentityResolver, parse_cgroup
from remediator.records import Record, RecordType
from remediator.settings import Settings
from tests.unit.test_service import REPO_POLICIES, SEED, Rig, _pressure_episode

UID = "0b8c6e2a-1f3d-4c5e-9a7b-1234567890ab"
CID = "3f9a" + "0" * 56 + "beef"
POD = (
    "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod"
    f"{UID.replace('-', '_')}.slice/cri-containerd-{CID}.scope"
)
SYSTEM_UID = "11111111-2222-3333-4444-555555555555"
SYSTEM_CID = "ab" * 32
SYSTEM_POD = (
    "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod"
    f"{SYSTEM_UID.replace('-', '_')}.slice/cri-containerd-{SYSTEM_CID}.scope"
)

Samples = Dict[Tuple[str, FrozenSet[Tuple[str, str]]], float]


class MetricsRig(Rig):
    """test_service's rig with the metrics feed and an identity resolver over a fake /var/log."""

    def __init__(
        self,
        base: Path,
        *,
        dry_run: bool,
        textfile: Optional[Path],
        policies: Path = REPO_POLICIES,
        interval: float = 15.0,
    ) -> None:
        self.textfile = textfile
        self.interval = interval
        self.pods_log_dir = base / "var" / "log" / "pods"
        self.pods_log_dir.mkdir(parents=True)
        (base / "var" / "log" / "containers").mkdir()
        super().__init__(base, dry_run=dry_run, policies=policies)

    def _build(self) -> Service:
        service = super()._build()
        service.settings = service.settings.model_copy(
            update={
                "metrics_textfile": self.textfile,
                "metrics_interval_sec": self.interval,
                "pods_log_dir": self.pods_log_dir,
            }
        )
        service.metrics = MetricsFeed(service.settings, self.clock, kernel="6.1.0-test")
        service.identities = IdentityResolver(pods_log_dir=self.pods_log_dir, clock=self.clock)
        return service

    def add_pod(self, cgroup: str, namespace: str, pod: str, uid: str, container: str, cid: str) -> None:
        """A container's cgroup (the seed's files) and the kubelet's log directory and link for it."""
        self.kernel.add_seed(cgroup)
        logs = self.pods_log_dir / f"{namespace}_{pod}_{uid}" / container
        logs.mkdir(parents=True)
        (logs / "0.log").write_text("")
        link = self.pods_log_dir.parent / "containers" / f"{pod}_{namespace}_{container}-{cid}.log"
        link.symlink_to(logs / "0.log")

    def samples(self) -> Samples:
        assert self.textfile is not None
        out: Samples = {}
        for family in text_string_to_metric_families(self.textfile.read_text()):
            for sample in family.samples:
                out[(sample.name, frozenset(sample.labels.items()))] = sample.value
        return out


def value(samples: Samples, name: str, **labels: str) -> Optional[float]:
    return samples.get((name, frozenset(labels.items())))


@pytest.fixture
def textfile(tmp_path: Path) -> Path:
    directory = tmp_path / "node-exporter"
    directory.mkdir()
    return directory / "remediator.prom"


def _rig(tmp_path: Path, textfile: Optional[Path], dry_run: bool = False, **kwargs: object) -> MetricsRig:
    return MetricsRig(tmp_path, dry_run=dry_run, textfile=textfile, **kwargs)  # type: ignore[arg-type]


@pytest.fixture
def enforcing(tmp_path: Path, textfile: Path) -> Iterator[MetricsRig]:
    rig = _rig(tmp_path, textfile)
    rig.service.start()
    yield rig
    rig.service.watcher.close()
    rig.triggers.close()


# ------------------------------------------------------------------ the textfile


def test_textfile_after_a_pressure_episode_counts_what_the_records_say(enforcing: MetricsRig) -> None:
    _pressure_episode(enforcing)
    enforcing.advance(15)
    samples = enforcing.samples()
    enforcing.service.flush_held_records()  # repeats held back as counts, as at a stop

    applied = [r for r in enforcing.of(RecordType.ACTION_APPLIED) if r.policy == "services-cache"]
    reclaims = [r for r in applied if r.action == "reclaim"]
    reclaim_results = {r.result for r in reclaims}
    # A coalesced summary stands for REPEATED records (remediator.daemon.coalesce).
    written = sum(int(r.extra.get("REPEATED", "1")) for r in reclaims)
    counted = sum(
        value(samples, "remediator_actions_total", policy="services-cache", action="reclaim", result=result,
              dry_run="0") or 0.0
        for result in reclaim_results
    )  # fmt: skip
    assert reclaims and counted == written
    assert value(samples, "remediator_actions_total", policy="services-cache", action="memory_high",
                 result="applied", dry_run="0") == 1.0  # fmt: skip
    assert value(samples, "remediator_pressure_events_total", policy="services-cache") == 1.0
    assert (value(samples, "remediator_reclaimed_bytes_total", policy="services-cache") or 0.0) > 0
    assert value(samples, "remediator_watched_targets", policy="services-cache", mode="trigger") == 1.0
    assert value(samples, "remediator_watched_targets", policy="node", mode="trigger") == 1.0
    assert value(samples, "remediator_owned_values", knob="memory_high") == 1.0
    assert value(samples, "remediator_owned_values", knob="vfs_cache_pressure") == 0.0
    # node-drop-caches ships disabled.
    assert value(samples, "remediator_policies", state="loaded") == 2.0
    assert value(samples, "remediator_policies", state="disabled") == 1.0
    assert value(samples, "remediator_policies", state="rejected") == 0.0
    assert value(samples, "remediator_dry_run") == 0.0
    assert value(samples, "remediator_reload_failures_total") == 0.0
    assert value(samples, "remediator_last_reload_success_timestamp_seconds") is not None
    build = [k for k in samples if k[0] == "remediator_build_info"]
    assert len(build) == 1 and ("kernel", "6.1.0-test") in build[0][1]
    # The seed is under action (its memory.high is ours): its full pressure, without pod labels.
    pressure = value(samples, "remediator_cgroup_full_pressure_avg10", cgroup=SEED, pod_uid="", namespace="",
                     pod="", container="")  # fmt: skip
    assert pressure is not None and pressure > 0
    assert enforcing.textfile is not None and enforcing.textfile.stat().st_mode & 0o777 == 0o644


def test_dry_run_counts_would_with_the_dry_run_label_and_owns_nothing(tmp_path: Path, textfile: Path) -> None:
    rig = _rig(tmp_path, textfile, dry_run=True)
    rig.service.start()
    try:
        _pressure_episode(rig)
        rig.advance(15)
        samples = rig.samples()
    finally:
        rig.service.watcher.close()
        rig.triggers.close()
    assert value(samples, "remediator_actions_total", policy="services-cache", action="memory_high",
                 result="would", dry_run="1") == 1.0  # fmt: skip
    assert value(samples, "remediator_dry_run") == 1.0
    # The core holds the value as ours (its snapshots show the overlay's); the gauge goes by the mode.
    assert any(t.memory_high is not None for t in rig.service.state.targets.values())
    assert value(samples, "remediator_owned_values", knob="memory_high") == 0.0
    assert value(samples, "remediator_reclaimed_bytes_total", policy="services-cache") is None


def test_the_file_is_written_at_most_once_per_interval_and_at_stop(
    tmp_path: Path, textfile: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rig = _rig(tmp_path, textfile, interval=15.0)
    assert rig.service.metrics is not None
    metrics = rig.service.metrics.metrics
    writes: List[float] = []
    real = metrics.write_textfile

    def counting(path: Path) -> None:
        writes.append(rig.clock.monotonic())
        real(path)

    monkeypatch.setattr(metrics, "write_textfile", counting)
    rig.service.start()
    start = rig.clock.monotonic()
    assert writes == []  # nothing before the loop runs
    for _ in range(40):  # 40 wake-ups, one a second
        rig.advance(1)
    assert [t - start for t in writes] == [1.0, 16.0, 31.0]
    # The loop wakes for a due write even when nothing else is due.
    assert rig.service.next_deadline() <= writes[-1] + 15.0
    rig.service.shutdown()
    rig.triggers.close()
    assert len(writes) == 4 and writes[-1] - start == 40.0
    assert rig.of(RecordType.DAEMON_STOPPING)


def test_run_once_writes_the_file_at_its_end(tmp_path: Path, textfile: Path) -> None:
    rig = _rig(tmp_path, textfile)
    rig.service.start()
    rig.service.run_once(settle_sec=0.0)
    rig.service.write_metrics_now()  # as run_service does, before closing the watcher
    rig.service.watcher.close()
    rig.triggers.close()
    samples = rig.samples()
    assert value(samples, "remediator_policies", state="loaded") == 2.0
    assert value(samples, "remediator_watched_targets", policy="services-cache", mode="trigger") == 1.0


def test_no_textfile_means_no_write_and_no_wake_up_for_it(tmp_path: Path) -> None:
    rig = _rig(tmp_path, None)
    rig.service.start()
    assert rig.service.metrics is not None and rig.service.metrics.next_due_at() is None
    rig.advance(20)
    rig.service.shutdown()
    rig.triggers.close()
    assert not list(tmp_path.rglob("*.prom"))


def test_a_failing_write_is_one_record_then_one_when_it_works_again(tmp_path: Path) -> None:
    missing = tmp_path / "no-node-exporter" / "remediator.prom"
    rig = _rig(tmp_path, missing)
    rig.service.start()
    for _ in range(10):
        rig.advance(15)  # ten due writes, all failing
    failed = [r for r in rig.writer.records if TEXTFILE_FIELD in r.extra]
    assert len(failed) == 1
    assert failed[0].type is RecordType.METRICS_UNWRITABLE and failed[0].priority == 4
    assert failed[0].extra[TEXTFILE_FIELD] == str(missing)
    assert "No such file or directory" in failed[0].message
    missing.parent.mkdir()
    rig.advance(15)
    about = [r for r in rig.writer.records if TEXTFILE_FIELD in r.extra]
    assert len(about) == 2 and about[1].result == "written"
    assert "after 10 failed attempts" in about[1].message
    assert value(rig.samples(), "remediator_textfile_write_failures_total") == 10.0
    rig.service.watcher.close()
    rig.triggers.close()


# ------------------------------------------------------------------ identity


def test_every_record_about_a_cgroup_carries_its_identity(tmp_path: Path, textfile: Path) -> None:
    rig = _rig(tmp_path, textfile)
    rig.add_pod(POD, "shop", "web-7d9f", UID, "nginx", CID)
    rig.service.start()
    try:
        rig.stall(0)
        _pressure_episode(rig)
        pod_records = [r for r in rig.writer.records if r.cgroup == POD]
        seed_records = [r for r in rig.writer.records if r.cgroup == SEED]
        node_records = [r for r in rig.writer.records if r.cgroup is None]
    finally:
        rig.service.watcher.close()
        rig.triggers.close()
    assert pod_records and seed_records and node_records
    for record in pod_records:
        assert {k: record.extra.get(k) for k in ("POD_UID", "QOS_CLASS", "CONTAINER_ID", "CONTAINER_RUNTIME",
                                                   "POD_NAMESPACE", "POD_NAME", "CONTAINER_NAME")} == {
            "POD_UID": UID, "QOS_CLASS": "burstable", "CONTAINER_ID": CID, "CONTAINER_RUNTIME": "containerd",
            "POD_NAMESPACE": "shop", "POD_NAME": "web-7d9f", "CONTAINER_NAME": "nginx",
        }  # fmt: skip
        # With the systemd driver the container is a scope unit too.
        assert record.extra.get("UNIT") == f"cri-containerd-{CID}.scope"
    assert all(r.extra.get("UNIT") == "seed.service" for r in seed_records)
    assert not any("UNIT" in r.extra or "POD_UID" in r.extra for r in node_records)


def test_identity_fields_never_shadow_a_records_own_and_declines_get_a_reason() -> None:
    record = Record(RecordType.ACTION_DECLINED, "x", cgroup=SEED, result="declined", extra={"UNIT": "mine"})
    annotated = annotate(record, parse_cgroup)
    assert annotated.extra == {"UNIT": "mine", "REASON": "other"}
    core = Record(RecordType.ACTION_DECLINED, "x", result="declined", extra={"REASON": "floor"})
    assert annotate(core, parse_cgroup).extra == {"REASON": "floor"}
    plain = Record(RecordType.DAEMON_STARTED, "x")
    assert annotate(plain, parse_cgroup) is plain


def _kubernetes_policies(tmp_path: Path) -> Path:
    policies = tmp_path / "k8s-policies"
    policies.mkdir()
    text = (REPO_POLICIES / "services-cache.yaml").read_text()
    text = text.replace(
        "  kind: cgroups\n", "  kind: cgroups\n  kubernetes:\n    exclude_namespaces: [kube-system]\n"
    )
    (policies / "pods.yaml").write_text(text)
    return policies


def test_discovery_selects_pods_by_their_identity(tmp_path: Path, textfile: Path) -> None:
    rig = _rig(tmp_path, textfile, policies=_kubernetes_policies(tmp_path))
    rig.add_pod(POD, "shop", "web-7d9f", UID, "nginx", CID)
    rig.add_pod(SYSTEM_POD, "kube-system", "coredns-5d78", SYSTEM_UID, "coredns", SYSTEM_CID)
    rig.service.start()
    try:
        watched = {key.cgroup for key in list(rig.service.watcher.keys())}
        rig.advance(1)
        samples = rig.samples()
    finally:
        rig.service.watcher.close()
        rig.triggers.close()
    # The seed service is not Kubernetes': the kubernetes selector narrows pods only.
    assert watched == {SEED, POD}
    assert value(samples, "remediator_watched_targets", policy="pods", mode="trigger") == 2.0


# ------------------------------------------------------------------ reload


def test_reload_applies_the_metrics_keys_and_refuses_restart_only_keys_by_name(
    tmp_path: Path, textfile: Path
) -> None:
    rig = _rig(tmp_path, textfile)
    other = textfile.parent / "other.prom"
    current = rig.service.settings
    reloaded = current.model_copy(
        update={"metrics_textfile": other, "metrics_interval_sec": 60.0, "sampling_interval_sec": 5.0}
    )

    def reload_settings() -> Settings:
        return reloaded

    rig.service.reload_settings = reload_settings
    rig.service.start()
    rig.advance(1)
    rig.service.reload()
    refused = [r for r in rig.of(RecordType.POLICY_REJECTED) if "only on restart" in r.message]
    assert [r.message for r in refused] == [
        "sampling_interval_sec change only on restart; keeping the running value"
    ]
    assert rig.service.settings.sampling_interval_sec == current.sampling_interval_sec
    assert rig.service.settings.metrics_interval_sec == 60.0
    rig.advance(20)
    assert not other.exists()  # the 60 s interval holds from the last write
    rig.advance(40)
    assert other.exists()
    rig.service.watcher.close()
    rig.triggers.close()


def test_a_refused_reload_counts_and_shows_the_rejected_file(tmp_path: Path, textfile: Path) -> None:
    rig = _rig(tmp_path, textfile)
    rig.service.start()
    (rig.policies_dir / "broken.yaml").write_text("target: [\n")
    rig.service.reload()
    rig.advance(1)
    samples = rig.samples()
    rig.service.watcher.close()
    rig.triggers.close()
    assert value(samples, "remediator_reload_failures_total") == 1.0
    assert value(samples, "remediator_policies", state="rejected") == 1.0
    assert value(samples, "remediator_policies", state="loaded") == 2.0
