"""Two optimizer steps of a host loop with `HostAlignment` under DDP with `find_unused_parameters=True` (as diffusers'
examples wrap their transformer), for `accelerate launch --num_processes 2`; prints whether the projector's weights
ended the same on every process. The teacher folder is the first argument."""

import sys

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs
from peft import LoraConfig

from diffusers_tsa.integrations import HostAlignment
from diffusers_tsa.testing import tiny_cogvideox_components


accelerator = Accelerator(cpu=True, kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)])
components = tiny_cogvideox_components()
transformer = components["transformer"]
transformer.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=["to_q", "to_k", "to_v", "to_out.0"]))
alignment = HostAlignment.attach(
    transformer,
    teacher=sys.argv[1],
    num_frames=9,
    height=96,
    width=144,
    depth=1,
    projector_hidden_dim=16,
    vae=components["vae"],
)
optimizer = torch.optim.AdamW([p for p in transformer.parameters() if p.requires_grad], lr=1e-3)
model, optimizer = accelerator.prepare(transformer, optimizer)
torch.manual_seed(accelerator.process_index)  # each process its own batch
model.train()
for _ in range(2):
    latents = torch.randn(1, 3, 4, 12, 18)
    output = model(hidden_states=latents, encoder_hidden_states=torch.randn(1, 16, 32), timestep=torch.tensor([10]))
    loss = output.sample.pow(2).mean() + alignment.weight * alignment.loss(latents=latents)
    accelerator.backward(loss)
    optimizer.step()
    optimizer.zero_grad()
weights = accelerator.gather(torch.cat([p.detach().flatten() for p in alignment.projector.parameters()])[None])
accelerator.print(
    f"processes: {accelerator.num_processes}, projector in sync: {all(torch.equal(weights[0], w) for w in weights)}"
)
