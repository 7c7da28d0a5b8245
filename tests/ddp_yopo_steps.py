"""Two YOPO steps under torchrun, each rank on its own data; rank 0 prints how far the ranks' weights are apart
(test helper, run by test_distributed.py). YOPO sets the first layer's gradient outside DDP's backward, so the
ranks stay identical only if that gradient is averaged too."""
import json

import torch

from ssm_lab import distributed
from ssm_lab.methods import MethodStep, ThreatModel
from ssm_models import create_model

distributed.init()
torch.manual_seed(0)
model = create_model("s4", d_model=16, d_state=8, n_layers=1, image_size=8, tokenizer="patch", patch_size=2)
tm = ThreatModel(eps=0.1, step_size=0.03, yopo_outer=2, yopo_inner=2)
step = MethodStep("yopo", distributed.wrap(model), torch.optim.AdamW(model.parameters(), lr=0.01), tm,
                  seed=distributed.rank())
data = torch.Generator().manual_seed(10 + distributed.rank())
for _ in range(2):
    step(torch.rand(4, 1, 8, 8, generator=data), torch.randint(0, 10, (4,), generator=data))
weights = torch.cat([p.detach().flatten() for p in model.parameters()])
gathered = distributed.all_gather_object(weights)
if distributed.is_main():
    print(json.dumps({"max_difference": (gathered[0] - gathered[1]).abs().max().item()}))
distributed.cleanup()
