"""``remediator status`` names whose each cgroup is: a NAME column and ``identity`` in --json.

``namespace/pod/container`` for a pod whose names the node's /var/log/pods and /var/log/containers
give (pods_log_dir), the systemd unit for a service, ``-`` when the name would only repeat the cgroup.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from remediator.cli import main
from tests.fakefs import FakeKernel
from tests.unit.test_status import REPO_POLICIES, SEED

UID = "0b8c6e2a-1f3d-4c5e-9a7b-1234567890ab"
CID = "3f9a" + "0" * 56 + "beef"
POD = (
    "kubepods.slice/kubepods-burstable.slice/kubepods-burstable-pod"
    f"{UID.replace('-', '_')}.slice/cri-containerd-{CID}.scope"
)


@pytest.fixture
def kernel(tmp_path: Path) -> FakeKernel:
    kernel = FakeKernel(tmp_path / "kernel")
    kernel.add_seed(SEED)
    kernel.add_seed(POD)
    kernel.add_cgroup("user.slice", current=10 << 20)
    logs = tmp_path / "var/log/pods" / f"shop_web-7d9f_{UID}" / "nginx"
    logs.mkdir(parents=True)
    (logs / "0.log").write_text("")
    (tmp_path / "var/log/containers").mkdir()
    (tmp_path / "var/log/containers" / f"web-7d9f_shop_nginx-{CID}.log").symlink_to(logs / "0.log")
    config = tmp_path / "remediator.yaml"
    config.write_text(f"pods_log_dir: {tmp_path / 'var/log/pods'}\n")
    return kernel


def _argv(kernel: FakeKernel, *rest: str) -> list[str]:
    config = kernel.base.parent / "remediator.yaml"
    return [
        "--cgroup-root", str(kernel.cgroup_root), "--proc-root", str(kernel.proc_root),
        "--policies", str(REPO_POLICIES), "--config", str(config), *rest,
    ]  # fmt: skip


def test_status_has_a_name_column_with_the_pod_or_the_unit(
    kernel: FakeKernel, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(_argv(kernel, "status", SEED, POD, "user.slice")) == 0
    lines = capsys.readouterr().out.splitlines()
    header = next(line for line in lines if line.startswith("CGROUP"))
    assert header.split()[:3] == ["CGROUP", "NAME", "CURRENT"]
    rows = {line.split()[0]: line.split()[1] for line in lines if line.split() and line.split()[0] in
            (SEED, POD, "user.slice")}  # fmt: skip
    assert rows == {SEED: "seed.service", POD: "shop/web-7d9f/nginx", "user.slice": "-"}


def test_status_json_carries_the_name_and_the_identity_fields(
    kernel: FakeKernel, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(_argv(kernel, "status", "--json", SEED, POD)) == 0
    doc = json.loads(capsys.readouterr().out)
    by_cgroup = {row["cgroup"]: row for row in doc["cgroups"]}
    assert by_cgroup[SEED]["name"] == "seed.service"
    assert by_cgroup[SEED]["identity"] == {"unit": "seed.service"}
    assert by_cgroup[POD]["name"] == "shop/web-7d9f/nginx"
    assert by_cgroup[POD]["identity"] == {
        "unit": f"cri-containerd-{CID}.scope",
        "pod_uid": UID,
        "qos_class": "burstable",
        "container_id": CID,
        "container_runtime": "containerd",
        "pod_namespace": "shop",
        "pod_name": "web-7d9f",
        "container_name": "nginx",
    }
    # The fields of remediator.status/v1 are only added to: the old ones are all there.
    assert {"cgroup", "memory", "composition", "events", "pressure", "policies", "diagnosis"} <= set(
        by_cgroup[SEED]
    )


def test_status_selects_pods_with_the_policies_kubernetes_selector(
    kernel: FakeKernel, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    policies = tmp_path / "policies"
    policies.mkdir()
    text = (REPO_POLICIES / "services-cache.yaml").read_text()
    selector = "  kubernetes:\n    exclude_namespaces: [shop]\n"
    (policies / "pods.yaml").write_text(text.replace("  kind: cgroups\n", "  kind: cgroups\n" + selector))
    argv = _argv(kernel, "status", "--json")
    argv[argv.index("--policies") + 1] = str(policies)
    assert main(argv) == 0
    selected = [row["cgroup"] for row in json.loads(capsys.readouterr().out)["cgroups"]]
    assert selected == [SEED]
