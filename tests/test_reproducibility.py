"""The notebook's claim that the same notebook trains the same model: two trainings in one process,
with the notebook's own thread setting (cgcnn_utils.fit: cpu_budget() threads, deterministic
algorithms), give the same validation MAE to the last digit the notebook prints, and more."""


import torch

import cgcnn_utils
from benchmarks import solution_code as sc

EPOCHS = 2  # enough for the gathers' backward passes to have summed thousands of times


def _train(setup: dict) -> float:
    ns = sc.solution_namespace()
    torch.manual_seed(0)
    model = ns["CGCNN"](nbr_fea_len=setup["train_batches"][0].nbr_fea.shape[-1])
    cgcnn_utils.fit(model, ns["train_epoch"], setup["train_batches"], setup["val_batches"], setup["normalizer"],
                    setup["targets"], EPOCHS, progress=False)
    return cgcnn_utils.mae(cgcnn_utils.predict(model, setup["val_batches"], setup["normalizer"]), setup["targets"])


def test_the_same_notebook_trains_the_same_model_on_the_notebooks_threads(monkeypatch):
    monkeypatch.delenv("OMP_NUM_THREADS", raising=False)  # the notebook's setting, not the autograder's
    setup = sc.notebook_setup(seed=0)
    first, second = _train(setup), _train(setup)
    assert torch.get_num_threads() == cgcnn_utils.cpu_budget()
    assert f"{first:.3f}" == f"{second:.3f}", (first, second)  # what the notebook prints
    assert abs(first - second) < 1e-9, f"two trainings gave {first!r} and {second!r} on {torch.get_num_threads()} threads"
