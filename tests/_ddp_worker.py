"""Run by tests/test_ddp.py under torchrun: `fit` a toy stage on 2 CPU processes, then write what each rank drew,
the weights it ended with and its share of a batch of 8 to <out>/rank<R>.json."""
import json
import sys
from pathlib import Path

import torch
import torch.distributed as dist
import torch.nn as nn

from minimuse.config import RunConfig, TrainConfig
from minimuse.runtime import seed_everything, wrap
from minimuse.train.trainer import fit, infinite_batches


class ToyStage:
    """y = Wx fitted to zero, with a random mask per step from the global RNG, as the generator's masks are."""

    kind = "generator"                                                    # a kind checkpoints know

    def __init__(self):
        self.device, self.model, self.drawn = torch.device("cpu"), nn.Linear(4, 4), []
        self.net = self.model

    def param_groups(self):
        return {"g": list(self.model.parameters())}

    def wrap(self, ddp: bool, compile: bool) -> None:
        self.net = wrap(self.model, ddp, compile)

    def losses(self, batch, step: int):
        mask = torch.rand(8, 4) < 0.5
        self.drawn.append(mask.float().tolist())
        return {"g": (self.net(batch[0]) * mask).pow(2).mean()}, {}

    def sample_grid(self, path: Path) -> None:
        pass

    def state(self) -> dict:
        return {"model": self.model.state_dict()}


if __name__ == "__main__":
    out = Path(sys.argv[1])
    out.mkdir(parents=True, exist_ok=True)
    seed_everything(0)
    stage = ToyStage()
    data = torch.utils.data.TensorDataset(torch.ones(16, 4))             # every rank sees the same values
    fit(stage, data, TrainConfig(steps=3, batch_size=16, warmup=1, lr=0.1, precision="fp32"), out, RunConfig())
    rank = dist.get_rank()
    weights = [p.detach().flatten().tolist() for p in stage.model.parameters()]
    examples = next(infinite_batches(torch.utils.data.TensorDataset(torch.arange(16)), 8, 0, stage.device))[0]
    (out / f"rank{rank}.json").write_text(json.dumps({"drawn": stage.drawn, "weights": weights,
                                                      "batch": examples.tolist()}))
