"""Federated training (Flower) with differential privacy (Opacus): per-sample gradients, accounting, fingerprint
merging, a real simulated federation, a real gRPC server with two client processes, and bad input."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

import medimg
from medimg.cli import app
from medimg.errors import MedimgError

from conftest import DATA

HIPPO = DATA / "hippocampus"
runner = CliRunner()
os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")


def _site(root: Path, name: str, cases: list[str], label_offset: int = 0) -> Path:
    d = root / name
    (d / "imagesTr").mkdir(parents=True)
    (d / "labelsTr").mkdir()
    for c in cases:
        shutil.copy(HIPPO / "imagesTr" / f"hippocampus_{c}.nii.gz", d / "imagesTr")
        if label_offset:
            lab = medimg.read_labels(HIPPO / "labelsTr" / f"hippocampus_{c}.nii.gz")
            medimg.write(
                lab.with_array(np.where(lab.array > 0, lab.array + label_offset, 0).astype(np.uint8)),
                d / "labelsTr" / f"hippocampus_{c}.nii.gz",
            )
        else:
            shutil.copy(HIPPO / "labelsTr" / f"hippocampus_{c}.nii.gz", d / "labelsTr")
    return d


@pytest.fixture
def sites(tmp_path: Path) -> list[Path]:
    return [_site(tmp_path, "siteA", ["001", "003", "004"]), _site(tmp_path, "siteB", ["006", "008"])]


def _tiny_plan() -> dict:
    from medimg.seg import load_dataset
    from medimg.seg.plan import fingerprint, make_plan

    plan = make_plan(fingerprint(load_dataset(HIPPO)))
    plan["network"]["filters"] = [4, 8, 16, 32][: len(plan["network"]["filters"])]
    return plan


# ---------------------------------------------------------------- differential privacy
def test_per_sample_gradients_are_exact_for_dynunet() -> None:
    """Opacus + medimg's ConvTranspose/Conv rules give each case's own gradient, and every layer is hooked once
    (DynUNet reaches its layers twice; a double hook would double every per-sample gradient)."""
    import torch

    from medimg.federated.dp import make_private
    from medimg.seg.train import build_network, dice_ce_loss

    plan = _tiny_plan()
    torch.manual_seed(0)
    net, ref = build_network(plan), build_network(plan)
    ref.load_state_dict(net.state_dict())
    gsm, _opt = make_private(net, torch.optim.SGD(net.parameters(), lr=0.0), 0.0, 1e9, 2)
    patch = plan["patch_size"]
    x = torch.randn(2, 1, *patch)
    y = torch.randint(0, 3, (2, *patch))
    out = gsm(x)
    torch.stack([dice_ce_loss(out[i : i + 1], y[i : i + 1], 3) for i in range(2)]).mean().backward()
    params = dict(net.named_parameters())
    kinds = set()
    for i in range(2):
        ref.zero_grad()
        dice_ce_loss(ref(x[i : i + 1]), y[i : i + 1], 3).backward()
        for name, p in ref.named_parameters():
            kinds.add(type(dict(ref.named_modules())[name.rsplit(".", 1)[0]]).__name__)
            gs = params[name].grad_sample[i]
            assert torch.allclose(gs, p.grad, rtol=1e-3, atol=1e-3 * float(p.grad.abs().max()) + 1e-9), name
    assert {"Conv3d", "ConvTranspose3d"} <= kinds


def test_noise_calibration_spends_the_target_and_no_more() -> None:
    from medimg.federated.dp import epsilon_spent, noise_multiplier

    sigma = noise_multiplier(8.0, 1e-3, 0.1, 500)
    assert 0.5 < sigma < 5
    full = epsilon_spent(sigma, 0.1, 500, 1e-3)
    assert 7.8 < full <= 8.0 + 1e-6
    assert epsilon_spent(sigma, 0.1, 100, 1e-3) < full  # a site that stopped early spent less
    assert epsilon_spent(sigma, 0.1, 0, 1e-3) == 0.0
    assert noise_multiplier(2.0, 1e-3, 0.1, 500) > sigma  # a tighter budget needs more noise
    for eps, delta in ((0.0, 1e-3), (8.0, 0.0), (8.0, 1.5)):
        with pytest.raises(MedimgError, match="dp-"):
            noise_multiplier(eps, delta, 0.1, 10)


# ---------------------------------------------------------------- plan from the sites
def test_merged_fingerprint_equals_the_pooled_one(sites: list[Path]) -> None:
    """What the server builds from the sites' fingerprints equals the fingerprint of all cases together (spacings,
    shapes, foreground mean/std and class voxels; the hippocampus cases have fewer foreground voxels than the
    per-case sample, so the pooled moments are exact)."""
    from medimg.federated import merge_fingerprints
    from medimg.seg import load_dataset
    from medimg.seg.plan import fingerprint

    fps = [fingerprint(load_dataset(s)) for s in sites]
    merged = merge_fingerprints(fps)
    whole = fingerprint(load_dataset(HIPPO))
    assert merged["n_cases"] == whole["n_cases"] == 5
    assert sorted(map(tuple, merged["spacings"])) == sorted(map(tuple, whole["spacings"]))
    assert merged["median_shape"] == whole["median_shape"]
    assert merged["class_voxels"] == {k: int(v) for k, v in whole["class_voxels"].items()}
    a, b = merged["foreground_intensity"][0], whole["foreground_intensity"][0]
    assert a["mean"] == pytest.approx(b["mean"], rel=1e-9) and a["std"] == pytest.approx(b["std"], rel=1e-9)
    assert (a["min"], a["max"]) == (b["min"], b["max"])


def test_sites_with_other_labels_are_refused(tmp_path: Path, sites: list[Path]) -> None:
    from medimg.federated import merge_fingerprints
    from medimg.seg import load_dataset
    from medimg.seg.plan import fingerprint

    other = _site(tmp_path, "siteC", ["001", "003"], label_offset=2)
    with pytest.raises(MedimgError, match="same labels"):
        merge_fingerprints([fingerprint(load_dataset(sites[0])), fingerprint(load_dataset(other))])


def test_bad_federation_input_is_refused_before_anything_is_written(tmp_path: Path, sites: list[Path]) -> None:
    out = tmp_path / "m"
    cases = [
        (["federated", str(sites[0]), "-o", str(out)], "at least 2 site"),
        (["federated", str(sites[0]), str(tmp_path / "nope"), "-o", str(out)], "does not exist"),
        (["federated", str(sites[0]), str(sites[0]), "-o", str(out)], "must differ"),
        (["federated", *map(str, sites), "-o", str(out), "--rounds", "0"], "--rounds"),
        (["federated", *map(str, sites), "-o", str(out), "--dp-epsilon", "-1"], "--dp-epsilon"),
        (["federated", *map(str, sites), "-o", str(out), "--dp-epsilon", "8", "--dp-delta", "2"], "--dp-delta"),
        (["federated", *map(str, sites), "-o", str(out), "--strategy", "fedsgd"], "fedavg or fedprox"),
        (["federated", "server", "--plan", str(tmp_path / "none.json"), "-o", str(out)], "medimg plan"),
    ]
    for args, msg in cases:
        r = runner.invoke(app, args)
        assert r.exit_code == 2, (args, r.output)
        assert msg in " ".join(r.output.split()), (args, r.output)
        assert not out.exists()
    out.mkdir()
    (out / "x").write_text("keep")
    r = runner.invoke(app, ["federated", *map(str, sites), "-o", str(out)])
    assert r.exit_code == 2 and "not empty" in " ".join(r.output.split()) and (out / "x").read_text() == "keep"


# ---------------------------------------------------------------- real federations
def test_simulated_federation_with_privacy_writes_a_usable_model(tmp_path: Path, sites: list[Path]) -> None:
    """Flower's simulation runtime with 2 sites, FedProx and DP-SGD: a complete model folder that medimg predicts
    with (geometry kept), each site's epsilon from the accountant at or under the target, per-site results."""
    out = tmp_path / "fed"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        r = runner.invoke(
            app,
            [
                "federated",
                *map(str, sites),
                "-o",
                str(out),
                "--rounds",
                "2",
                "--local-steps",
                "2",
                "--strategy",
                "fedprox",
                "--dp-epsilon",
                "8",
                "--dp-delta",
                "1e-3",
                "--time-budget",
                "5m",
            ],
        )
    assert r.exit_code == 0, r.output
    for f in (
        "model.pt",
        "plan.json",
        "model.json",
        "validation.json",
        "federated.json",
        "privacy.json",
        "training_log.csv",
        "rounds.csv",
        "domain.json",
        "fingerprint.json",
    ):
        assert (out / f).is_file(), f
    info = json.loads((out / "model.json").read_text())
    assert info["federated"] == {"strategy": "fedprox", "sites": 2, "rounds": 2, "local_steps": 2}
    fed = json.loads((out / "federated.json").read_text())
    assert [h["round"] for h in fed["rounds_log"]] == [1, 2]
    assert set(fed["rounds_log"][1]["fit"]) == {"siteA", "siteB"}
    assert all(v["steps"] == 2 for v in fed["rounds_log"][1]["fit"].values())
    assert set(fed["rounds_log"][1]["evaluate"]) == {"siteA", "siteB"}
    priv = json.loads((out / "privacy.json").read_text())
    for site in ("siteA", "siteB"):
        assert priv[site]["steps"] == 4 and 0 < priv[site]["epsilon"] <= 8.0 + 1e-6
        assert priv[site]["noise_multiplier"] > 0.3 and priv[site]["delta"] == 1e-3
    val = json.loads((out / "validation.json").read_text())
    assert set(val["sites"]) == {"siteA", "siteB"} and 0 <= val["mean_dice"] <= 1
    img = HIPPO / "imagesTr" / "hippocampus_001.nii.gz"
    r = runner.invoke(app, ["predict", "-m", str(out), "-i", str(img), "-o", str(tmp_path / "p.nii.gz"), "--force"])
    assert r.exit_code == 0, r.output
    pred, src = medimg.read_labels(tmp_path / "p.nii.gz"), medimg.read(img)
    assert pred.shape == src.shape
    assert np.allclose(pred.spacing, src.spacing) and np.allclose(pred.origin, src.origin)
    assert np.allclose(pred.direction, src.direction)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_grpc_server_and_two_client_processes(tmp_path: Path, sites: list[Path]) -> None:
    """The real deployment: `medimg federated server` and two `medimg federated client` processes over gRPC."""
    plan = tmp_path / "plan.json"
    plan.write_text(json.dumps(_tiny_plan()))
    addr = f"127.0.0.1:{_free_port()}"
    out = tmp_path / "srv"
    env = {**os.environ, "PYTHONWARNINGS": "ignore"}
    cli = [str(Path(sys.executable).with_name("medimg"))]  # the console script of this environment
    logs = [tmp_path / f"{n}.log" for n in ("server", "a", "b")]
    handles = [open(f, "w") for f in logs]  # noqa: SIM115 (closed below, after the processes end)
    procs = (
        [
            subprocess.Popen(
                [
                    *cli,
                    "federated",
                    "server",
                    "--plan",
                    str(plan),
                    "-o",
                    str(out),
                    "--sites",
                    "2",
                    "--rounds",
                    "2",
                    "--local-steps",
                    "2",
                    "--address",
                    addr,
                ],
                stdout=handles[0],
                stderr=subprocess.STDOUT,
                env=env,
            )
        ]
        + [
            subprocess.Popen(  # started at once: the clients wait for the server to come up
                [*cli, "federated", "client", str(s), "--server", addr, "--work", str(tmp_path / f"work_{s.name}")],
                stdout=h,
                stderr=subprocess.STDOUT,
                env=env,
            )
            for s, h in zip(sites, handles[1:], strict=True)
        ]
    )
    try:
        codes = [p.wait(timeout=240) for p in procs]
    finally:
        for p in procs:
            p.kill()
        for h in handles:
            h.close()
    s_out, *c_out = (f.read_text() for f in logs)
    assert codes == [0, 0, 0], (s_out, c_out)
    assert "federation finished" in c_out[0]
    fed = json.loads((out / "federated.json").read_text())
    assert len(fed["rounds_log"]) == 2 and set(fed["rounds_log"][0]["fit"]) == {"siteA", "siteB"}
    assert all(
        v["n"] == len(json.loads((tmp_path / f"work_{k}" / "split.json").read_text())["train"])
        for k, v in fed["rounds_log"][0]["fit"].items()
    )
    import torch

    state = torch.load(out / "model.pt", weights_only=True)
    from medimg.seg.train import build_network

    assert set(state) == set(build_network(json.loads((out / "plan.json").read_text())).state_dict())


def test_client_without_server_says_what_to_do(sites: list[Path]) -> None:
    r = runner.invoke(
        app, ["federated", "client", str(sites[0]), "--server", f"127.0.0.1:{_free_port()}", "--wait", "1"]
    )
    assert r.exit_code == 2 and "No Flower server answers" in r.output and "--wait" in r.output
    r = runner.invoke(app, ["federated", "client", str(sites[0]), "--server", "nohost"])
    assert r.exit_code == 2 and "host:port" in r.output


def test_site_privacy_ledger_counts_steps_and_refuses_changed_noise(tmp_path: Path, sites: list[Path]) -> None:
    """A site's ledger adds up the DP steps of its rounds; a round asking for other privacy settings is refused
    (the accountant's history would no longer describe the noise that was used)."""
    from medimg.federated import Site
    from medimg.federated.dp import epsilon_spent

    site = Site(sites[0], tmp_path / "w", _tiny_plan(), threads=1)
    w = site.get_weights()
    cfg = {"round": 1, "local_steps": 2, "rounds": 2, "dp_epsilon": 8.0, "dp_delta": 1e-3}
    w, n, m = site.fit(w, cfg)
    assert n == site.n_train == 2 and m["steps"] == 2
    w, _, m = site.fit(w, {**cfg, "round": 2})
    led = site.privacy()
    assert led["steps"] == 4 and led["epsilon"] == pytest.approx(8.0, abs=0.05)
    assert led["epsilon"] == epsilon_spent(m["noise_multiplier"], m["sample_rate"], 4, 1e-3)
    with pytest.raises(MedimgError, match="privacy settings changed"):
        site.fit(w, {**cfg, "rounds": 5})
    with pytest.raises(MedimgError, match="spent its privacy budget"):  # a 3rd round of a 2-round plan
        site.fit(w, {**cfg, "round": 3})
    assert site.privacy()["steps"] == 4
