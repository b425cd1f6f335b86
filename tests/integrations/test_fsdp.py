"""FSDP2 (`torch.distributed.fsdp.fully_shard`) on the CPU with gloo: two processes, each with one sample of the
batch, give the block features, the alignment loss and the gradients of one unsharded process on the whole batch."""

import itertools
import warnings
from pathlib import Path

import accelerate
import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from diffusers_tsa import AlignmentProjector, BlockFeatureExtractor, tsa_loss
from diffusers_tsa.testing import tiny_cogvideox_components


pytestmark = pytest.mark.minimum  # `make test-minimum`'s fast subset


fsdp = pytest.importorskip("torch.distributed.fsdp", reason="torch without FSDP2")
STUDENT_GRID, TEACHER_GRID = (3, 6, 9), (4, 2, 3)  # the tiny transformer's tokens; the teacher's (drops frame 0)


def _build():
    """The tiny CogVideoX transformer, a projector onto a teacher grid, a batch of 2 and its teacher targets, the same
    in every process."""
    torch.manual_seed(0)
    transformer = tiny_cogvideox_components()["transformer"]
    width = transformer.config.num_attention_heads * transformer.config.attention_head_dim
    projector = AlignmentProjector(width, 8, student_grid=STUDENT_GRID, teacher_grid=TEACHER_GRID, hidden_dim=16)
    g = torch.Generator().manual_seed(0)
    inputs = {
        "hidden_states": torch.randn(2, 3, 4, 12, 18, generator=g),  # (B, F, C, H, W) latents
        "encoder_hidden_states": torch.randn(2, 16, 32, generator=g),
        "timestep": torch.tensor([10, 500]),
    }
    return transformer, projector, inputs, torch.randn(2, *TEACHER_GRID, 8, generator=g)


def _step(transformer, projector, inputs, target, rows):
    """One forward/backward of Eq. 14 on the samples `rows` (the output's mean square stands in for the diffusion
    loss, so that every weight gets a gradient): `(features, alignment loss)`."""
    with BlockFeatureExtractor(transformer, depth=1) as extractor, extractor.capture() as captured:
        (output,) = transformer(**{name: value[rows] for name, value in inputs.items()}, return_dict=False)
    alignment = tsa_loss(projector(captured.hidden_states), target[rows], tau=0.1)
    (output.pow(2).mean() + 0.5 * alignment).backward()
    return captured.hidden_states.detach(), alignment.detach()


def _parameters(transformer, projector):
    return itertools.chain(transformer.named_parameters(), projector.named_parameters(prefix="projector"))


def _sharded_worker(rank, init_file, out):
    dist.init_process_group("gloo", init_method=f"file://{init_file}", rank=rank, world_size=2)
    try:
        transformer, projector, inputs, target = _build()
        for block in transformer.transformer_blocks:
            fsdp.fully_shard(block)
        fsdp.fully_shard(transformer)
        fsdp.fully_shard(projector)
        assert all(isinstance(p, torch.distributed.tensor.DTensor) for _, p in _parameters(transformer, projector))
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            features, loss = _step(transformer, projector, inputs, target, slice(rank, rank + 1))
        # `full_tensor` gathers each gradient's shards from both processes.
        grads = {name: p.grad.full_tensor() for name, p in _parameters(transformer, projector)}
        warned = [str(w.message) for w in caught]
        torch.save({"features": features, "loss": loss, "grads": grads, "warnings": warned}, f"{out}/{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.xdist_group("fsdp")
def test_fully_sharded_transformer_and_projector_match_the_unsharded_run(tmp_path):
    transformer, projector, inputs, target = _build()
    features, loss = _step(transformer, projector, inputs, target, slice(0, 2))
    mp.spawn(_sharded_worker, args=(tmp_path / "pg", tmp_path), nprocs=2)
    ranks = [torch.load(tmp_path / f"{rank}.pt", weights_only=True) for rank in range(2)]
    # Each rank captured its own sample's block output; the batch's loss is the mean of the two samples' losses,
    # and FSDP's reduce-scatter averages the gradients the same way.
    torch.testing.assert_close(torch.cat([r["features"] for r in ranks]), features)
    torch.testing.assert_close((ranks[0]["loss"] + ranks[1]["loss"]) / 2, loss)
    # The projector hands FSDP2 a fresh tensor, not a view its backward hook could be bypassed on (diffusers'
    # transformer still returns one: its warning is upstream's).
    assert not [w for r in ranks for w in r["warnings"] if "AlignmentProjector" in w]
    for name, p in _parameters(transformer, projector):
        assert p.grad is not None and p.grad.abs().sum() > 0, name
        torch.testing.assert_close(ranks[0]["grads"][name], p.grad, rtol=1e-4, atol=1e-6, msg=name)


CONFIGS = sorted((Path(__file__).parents[2] / "diffusers_tsa" / "configs" / "accelerate").glob("*.yaml"))


def test_the_accelerate_configs_are_found():
    assert len(CONFIGS) == 3, CONFIGS  # ddp, fsdp and deepspeed: a moved folder must not skip the check below


@pytest.mark.parametrize("path", CONFIGS, ids=lambda path: path.stem)
def test_the_accelerate_configs_parse_and_name_only_options_accelerate_has(path):
    """What `accelerate launch --config_file` reads: the top-level keys are `ClusterConfig`'s fields (unknown ones
    are refused), and each `fsdp_config` / `deepspeed_config` key becomes the `accelerate launch` option of its
    name, which must exist in the installed accelerate."""
    from accelerate.commands.config.config_args import ClusterConfig
    from accelerate.commands.launch import launch_command_parser

    config = ClusterConfig.from_yaml_file(str(path))
    options = {action.dest for action in launch_command_parser()._actions}
    for section in ("fsdp_config", "deepspeed_config"):
        unknown = [key for key in getattr(config, section) or {} if key not in options]
        assert not unknown, f"{path.name}: {section} keys accelerate {accelerate.__version__} does not have: {unknown}"
    assert config.distributed_type.value in {"MULTI_GPU", "FSDP", "DEEPSPEED"}
