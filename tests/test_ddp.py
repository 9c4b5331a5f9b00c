"""Data-parallel training (``medimg train --devices N``, torch DDP with gloo): real 2-process runs.

The workers are spawned processes: the Trainer subclasses they run are defined at module level here so they can be
imported by name. Most runs use a small two-layer network (the ``build_network`` hook) so that a worker starts in
about a second; one run trains the plan's real DynUNet through the CLI and predicts with the model it wrote.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import medimg
from medimg.errors import MedimgError
from medimg.seg import Trainer, fingerprint, load_dataset, make_plan, make_split
from medimg.seg.distributed import check_devices, cpu_count, train_distributed, weights_digest

from conftest import DATA

torch = pytest.importorskip("torch")


class SmallNetTrainer(Trainer):
    """The plan's training loop with a 2-layer conv net (fast to import and run)."""

    def build_network(self) -> Any:
        torch.manual_seed(self.seed)
        return torch.nn.Sequential(
            torch.nn.Conv3d(1, 4, 3, padding=1), torch.nn.ReLU(), torch.nn.Conv3d(4, self.n_classes, 1)
        )


class FailsOnRank1(SmallNetTrainer):
    def sample_batch(self, *args: Any, **kwargs: Any) -> tuple:
        if self.rank == 1 and self.iteration >= 1:
            raise ValueError("disk on fire")
        return super().sample_batch(*args, **kwargs)


class HangsOnRank1(SmallNetTrainer):
    def sample_batch(self, *args: Any, **kwargs: Any) -> tuple:
        if self.rank == 1 and self.iteration >= 1:
            time.sleep(120)  # stuck: rank 0 waits in the gradient all-reduce until the timeout
        return super().sample_batch(*args, **kwargs)


@pytest.fixture
def dataset(tmp_path: Path) -> Path:
    d = tmp_path / "Task04"
    shutil.copytree(DATA / "hippocampus", d)
    labels = {"0": "background", "1": "anterior", "2": "posterior"}
    (d / "dataset.json").write_text(json.dumps({"name": "hippo-tiny", "labels": labels, "modality": {"0": "MRI"}}))
    return d


def tiny_plan(ds_path: Path) -> dict:
    plan = make_plan(fingerprint(load_dataset(ds_path)))
    plan["network"]["filters"] = [8, 16, 32, 32]
    plan["batch_size"] = 2
    plan["training"].update(iterations_per_epoch=2, precision="fp32", val_patches=2)
    return plan


def _small_run(dataset: Path, out: Path, iterations: int, **kw: Any) -> dict:
    ds = load_dataset(dataset)
    split = make_split([c.case_id for c in ds.cases], 0.2, 0)
    kw.setdefault("trainer_cls", SmallNetTrainer)
    return train_distributed(ds, tiny_plan(dataset), out, split, 3600, devices=2, max_iterations=iterations, **kw)


def test_cli_two_processes_train_one_model_that_predicts(dataset: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from medimg.cli import app
    from medimg.seg import Predictor

    (tmp_path / "plan.json").write_text(json.dumps(tiny_plan(dataset)))
    out = tmp_path / "m"
    args = ["train", str(dataset), "-o", str(out), "--plan", str(tmp_path / "plan.json"), "--time-budget", "3s"]
    r = CliRunner().invoke(app, [*args, "--devices", "2", "--oversubscribe"])  # 1-core CI machines too
    assert r.exit_code == 0, r.output
    assert "2 processes" in r.output
    info = json.loads((out / "model.json").read_text())
    assert info["devices"] == 2 and info["effective_batch_size"] == 4
    log = (out / "training_log.csv").read_text().splitlines()
    assert info["iterations"] >= 1 and len(log) >= 1
    # the time budget -> iteration count is decided by all ranks together (rank 0's estimate, re-planned every
    # epoch): the run stopped at the last planned total (or earlier, all ranks together, when the budget ran out)
    totals = [int(row.split(",")[-1]) for row in log[1:]]
    assert not totals or info["iterations"] <= totals[-1]
    state = torch.load(out / "model.pt", weights_only=True)
    assert weights_digest(state) == info["weights_sha256"]  # model.pt holds the weights every rank agreed on
    img = medimg.read(dataset / "imagesTr" / "hippocampus_001.nii.gz")
    pred = Predictor(out, force=True)(img)  # a 4-case domain is narrow; the domain guard is not under test
    assert pred.shape == img.shape and pred.spacing == img.spacing and pred.origin == img.origin
    assert np.array_equal(pred.direction, img.direction) and set(np.unique(pred.array)) <= {0, 1, 2}
    assert not (out / "checkpoint.pt.tmp").exists() and sorted(p.name for p in out.glob("*.tmp*")) == []


def test_two_processes_average_gradients_and_resume_exactly(dataset: Path, tmp_path: Path) -> None:
    straight = _small_run(dataset, tmp_path / "a", 6)
    assert straight["devices"] == 2 and len(straight["weight_digests"]) == 2
    assert straight["weight_digests"][0] == straight["weight_digests"][1]  # both ranks, same weights
    assert straight["iterations"] == 6 and [e["iteration"] for e in straight["log"]] == [2, 4, 6]
    st = torch.load(tmp_path / "a" / "checkpoint.pt", weights_only=False)
    assert st["world_size"] == 2 and len(st["rank_rng"]) == 2 and st["rank_rng"][0] != st["rank_rng"][1]
    assert weights_digest(torch.load(tmp_path / "a" / "model.pt", weights_only=True)) == straight["weight_digests"][0]

    # rank 0 samples exactly what one process samples: equal weights would mean rank 1's gradients never arrived
    ds = load_dataset(dataset)
    one = SmallNetTrainer(ds, tiny_plan(dataset), tmp_path / "one", make_split([c.case_id for c in ds.cases]), 3600, 6)
    one.run()
    assert weights_digest(one.net.state_dict()) != straight["weight_digests"][0]

    class Killed(Exception):
        pass

    def kill(entry: dict) -> None:
        if entry["iteration"] == 2:
            raise Killed

    with pytest.raises(Killed):  # as in one process, an on_epoch exception stops training (after the checkpoint)
        _small_run(dataset, tmp_path / "b", 6, on_epoch=kill)
    assert torch.load(tmp_path / "b" / "checkpoint.pt", weights_only=False)["iteration"] == 2
    notes: list[str] = []
    resumed = _small_run(dataset, tmp_path / "b", 6, on_note=notes.append)
    assert notes and "resumed from the checkpoint at iteration 2" in notes[0]
    assert resumed["iterations_this_run"] == 4
    assert resumed["weight_digests"] == straight["weight_digests"]  # bit-identical to the uninterrupted run
    assert [e["train_loss"] for e in resumed["log"]] == [e["train_loss"] for e in straight["log"]]


def test_a_failing_rank_stops_the_others(dataset: Path, tmp_path: Path) -> None:
    t0 = time.perf_counter()
    with pytest.raises(MedimgError, match=r"process 1 of 2 failed: ValueError: disk on fire") as e:
        _small_run(dataset, tmp_path / "m", 6, trainer_cls=FailsOnRank1)
    assert "--devices 1" in str(e.value) and time.perf_counter() - t0 < 60
    assert not (tmp_path / "m" / "model.pt").exists()


def test_a_hung_rank_times_out_instead_of_hanging(dataset: Path, tmp_path: Path) -> None:
    t0 = time.perf_counter()
    with pytest.raises(MedimgError, match="MEDIMG_DDP_TIMEOUT_S") as e:
        _small_run(dataset, tmp_path / "m", 6, trainer_cls=HangsOnRank1, timeout_s=2)
    assert "process 0 of 2 failed" in str(e.value)  # rank 0 gave up waiting; the stuck rank 1 was stopped
    assert time.perf_counter() - t0 < 60  # not the 120 s rank 1 sleeps


def test_bad_devices_are_refused_before_anything_is_written(dataset: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from medimg.cli import app

    out = tmp_path / "models" / "m"
    too_many = cpu_count() + 1
    for value, expected in (
        ("0", "--devices must be a whole number of training processes, 1 or more"),
        ("-2", "1 or more"),
        (str(too_many), f"--devices {too_many} is more than the {cpu_count()} CPU core"),
    ):
        r = CliRunner().invoke(app, ["train", str(dataset), "-o", str(out), "--devices", value])
        text = " ".join(r.output.split())
        assert r.exit_code == 2 and expected in text and "Traceback" not in r.output, r.output
        assert not (tmp_path / "models").exists()
    assert "--oversubscribe" in text
    r = CliRunner().invoke(app, ["train", "--help"])
    assert "--oversubscribe" in r.output and "--devices" in r.output  # the options the messages name exist
    with pytest.raises(MedimgError):
        check_devices(True)
    assert check_devices(too_many, oversubscribe=True) == too_many
    with pytest.raises(MedimgError, match="2 or more"):
        train_distributed(load_dataset(dataset), {}, tmp_path / "x", {"train": [], "val": []}, 1, devices=1)


def test_one_device_trains_in_this_process_as_before(dataset: Path, tmp_path: Path) -> None:
    import torch.distributed as dist

    from medimg.seg import train_model

    ds = load_dataset(dataset)
    split = make_split([c.case_id for c in ds.cases], 0.2, 0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # both runs alike; 2 threads on a shared 2-core machine can be many times slower
    try:
        info = train_model(
            ds, tmp_path / "m", time_budget_s=3600, split=split, plan=tiny_plan(dataset), max_iterations=2
        )
        direct = Trainer(ds, tiny_plan(dataset), tmp_path / "d", split, 3600, 2)
        direct.run()
    finally:
        torch.set_num_threads(threads)
    assert "devices" not in info and "weights_sha256" not in info and not dist.is_initialized()
    assert weights_digest(torch.load(tmp_path / "m" / "model.pt", weights_only=True)) == weights_digest(
        direct.net.state_dict()
    )
