"""A real 2-process torchrun job (Gloo, CPU): ranks agree and match the single-process run."""

from __future__ import annotations

import json
import os
import runpy
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from phenoadapt.train import load_checkpoint

WORKER = textwrap.dedent(
    """
    import json
    import sys
    from pathlib import Path

    import torch
    from safetensors.torch import save_file

    from phenoadapt.nn import ResNetConfig, build_resnet, fit_normalization
    from phenoadapt.train import CellData, TrainConfig, make_toy_plates, train_model
    from phenoadapt.train.distributed import init_distributed, shutdown_distributed, world_size


    def run(out: Path) -> None:
        torch.set_num_threads(1)
        info = init_distributed(device="cpu")
        plates = ["P1", "P2", "P3", "P4", "V1", "V2", "V3"]
        images, table = make_toy_plates(plates, treated_per_class=12, n_controls=24, size=8, seed=0)
        data = CellData.from_table(images, table)
        train, val = data.subset(plates[:4]), data.subset(plates[4:])
        norm = fit_normalization(train.images)
        config = ResNetConfig("resnet10", 3, 3, width=4, stem="small", normalization=norm)
        # Each rank starts from different weights on purpose: DDP must give all rank 0's.
        model = build_resnet(config, seed=info.rank)
        cfg = TrainConfig(
            method="cs-arm-bn", max_epochs=3, patience=5, treated_per_episode=12,
            controls_per_episode=12, plates_per_step=4, device="cpu", seed=0,
        )
        result = train_model(model, train, val, cfg, checkpoint_path=out / "model.safetensors")
        state = {k: v.contiguous() for k, v in result.model.state_dict().items()}
        save_file(state, str(out / f"rank{info.rank}.safetensors"))
        report = {"world_size": world_size(), "history": result.history}
        (out / f"rank{info.rank}.json").write_text(json.dumps(report))
        shutdown_distributed()


    if __name__ == "__main__":
        run(Path(sys.argv[1]))
    """
)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("ddp")
    script = root / "worker.py"
    script.write_text(WORKER)
    multi, single = root / "multi", root / "single"
    multi.mkdir()
    single.mkdir()
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for key in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2",
           str(script), str(multi)]  # fmt: skip
    job = subprocess.Popen(
        cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    # Meanwhile, the single-process reference in this process.
    threads = torch.get_num_threads()
    try:
        runpy.run_path(str(script), run_name="worker")["run"](single)
    finally:
        torch.set_num_threads(threads)
    output, _ = job.communicate(timeout=300)
    assert job.returncode == 0, output[-3000:]
    return {"multi": multi, "single": single}


def test_both_ranks_end_with_identical_weights(runs: dict[str, Path]) -> None:
    multi = runs["multi"]
    reports = [json.loads((multi / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert [r["world_size"] for r in reports] == [2, 2]
    for h0, h1 in zip(reports[0]["history"], reports[1]["history"], strict=True):
        h0.pop("seconds"), h1.pop("seconds")
        assert h0 == h1  # same all-reduced losses, hence the same early-stopping decisions
    a, b = (load_file(str(multi / f"rank{r}.safetensors")) for r in (0, 1))
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_distributed_run_matches_single_process(runs: dict[str, Path]) -> None:
    multi = load_file(str(runs["multi"] / "rank0.safetensors"))
    single = load_file(str(runs["single"] / "rank0.safetensors"))
    params = [k for k in single if "running" not in k and "num_batches" not in k]
    for key in params:
        # Same episodes and loss scaling; only the order of float additions differs.
        torch.testing.assert_close(multi[key], single[key], rtol=1e-4, atol=1e-5)
    hist_multi = json.loads((runs["multi"] / "rank0.json").read_text())["history"]
    hist_single = json.loads((runs["single"] / "rank0.json").read_text())["history"]
    for m, s in zip(hist_multi, hist_single, strict=True):
        assert m["train_loss"] == pytest.approx(s["train_loss"], rel=1e-4)
        assert m["val_loss"] == pytest.approx(s["val_loss"], rel=1e-4)


def test_rank0_writes_the_checkpoint(runs: dict[str, Path]) -> None:
    checkpoint = load_checkpoint(runs["multi"] / "model.safetensors")
    rank0 = load_file(str(runs["multi"] / "rank0.safetensors"))
    state = checkpoint.model.state_dict()
    assert all(torch.equal(state[k], rank0[k]) for k in rank0)
    assert checkpoint.metadata.training_plates == ("P1", "P2", "P3", "P4")
    assert checkpoint.metadata.validation_plates == ("V1", "V2", "V3")
