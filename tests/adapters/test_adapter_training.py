"""A training run's spec and adapter on tiny offline pipelines: the family's defaults filled in once
(`ModelSpec.for_training`), what trains, recorded once by the adapter (`training_mode`), and what a run saves and
resumes from by it (`save_trained`, `load_trained`): CogVideoX for the stock layout, Wan 2.2 A14B-like for a trained
expert's slot."""

from pathlib import Path

import pytest
import torch
from diffusers import CogVideoXPipeline, LTXPipeline, WanPipeline

from diffusers_tsa.adapters import ADAPTERS, LORA_WEIGHT_NAME, TrainingOptions, load_spec
from diffusers_tsa.adapters.nova import NOVASpec
from diffusers_tsa.adapters.wan import lora_expert
from diffusers_tsa.errors import CheckpointError, ModelLayoutError
from diffusers_tsa.testing import tiny_cogvideox_components
from diffusers_tsa.testing.ltx_video import tiny_ltx_video_components
from diffusers_tsa.testing.wan import tiny_wan_components


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A tiny CogVideoX, Wan 2.1, two-expert Wan and LTX-Video pipeline, saved to disk."""
    root = tmp_path_factory.mktemp("training")
    CogVideoXPipeline(**tiny_cogvideox_components()).save_pretrained(root / "cogvideox")
    WanPipeline(**tiny_wan_components()).save_pretrained(root / "wan")
    WanPipeline(**tiny_wan_components(two_experts=True)).save_pretrained(root / "experts")
    LTXPipeline(**tiny_ltx_video_components()).save_pretrained(root / "ltx_video")
    return root


def load(tiny, name="cogvideox", **options):
    spec = load_spec(tiny / name)
    options = TrainingOptions(max_sequence_length=16, **options)
    return ADAPTERS[spec.family].from_pretrained(spec.for_training(options), options=options)


def train_a_little(adapter) -> None:
    """Moves every trainable weight, as training steps would."""
    with torch.no_grad():
        for parameter in adapter.transformer.parameters():
            if parameter.requires_grad:
                parameter.add_(torch.randn_like(parameter) * 0.1)


def saved(folder: Path) -> set[str]:
    return {path.relative_to(folder).as_posix() for path in folder.rglob("*") if path.is_file()}


def assert_same_weights(a, b) -> None:
    theirs = b.transformer.state_dict()
    assert all(torch.equal(value, theirs[key]) for key, value in a.transformer.state_dict().items())


@pytest.mark.parametrize("name, default", [("cogvideox", 16), ("wan", 512), ("ltx_video", 128)])
def test_for_training_fills_in_the_familys_text_length_once(tiny, name, default):
    """The pipeline's own default (CogVideoX: its config's `max_text_seq_length`, 16 for the tiny one), held by the
    spec's `options` and the adapter's; a given length stays; a spec made again for the same options is the same."""
    spec = load_spec(tiny / name)
    assert spec.options is None and spec.default_max_sequence_length == default
    trained = spec.for_training(TrainingOptions())
    assert trained.options == TrainingOptions(max_sequence_length=default)
    assert trained.for_training(TrainingOptions()) == trained
    if name != "cogvideox":  # CogVideoX's text length is fixed by its config
        assert spec.for_training(TrainingOptions(max_sequence_length=7)).options.max_sequence_length == 7
    adapter = ADAPTERS[spec.family].from_pretrained(spec, transformer=False)
    assert adapter.options == trained.options and adapter.spec == trained


def test_for_training_refuses_what_check_options_refuses(tiny):
    with pytest.raises(ModelLayoutError, match=r"`expert=None` names no expert"):
        load_spec(tiny / "experts").for_training(TrainingOptions())
    with pytest.raises(ModelLayoutError, match=r"`max_sequence_length=32`: CogVideoX's prompts have 16 tokens"):
        load_spec(tiny / "cogvideox").for_training(TrainingOptions(max_sequence_length=32))
    nova = NOVASpec(pretrained_model_name_or_path="", num_blocks=32, hidden_size=1024, min_depth=17, text_token_len=8)
    assert nova.for_training(TrainingOptions()).options.max_sequence_length == 8
    assert nova.for_training(TrainingOptions(max_sequence_length=8)).options.max_sequence_length == 8
    with pytest.raises(ModelLayoutError, match=r"`max_sequence_length=7`: not supported by NOVA"):
        nova.for_training(TrainingOptions(max_sequence_length=7))


def test_the_training_mode_is_chosen_once(tiny):
    adapter = load(tiny)
    assert adapter.training_mode is None
    with pytest.raises(ModelLayoutError, match=r"`save_trained` needs to know what trains: call `add_lora"):
        adapter.save_trained("unused", adapter.transformer)
    with pytest.raises(ModelLayoutError, match=r"`load_trained` needs to know what trains"):
        adapter.load_trained("unused", adapter.transformer)
    adapter.add_lora(4, 4)
    assert adapter.training_mode == "lora"
    with pytest.raises(ModelLayoutError, match=r"already trains with `training_mode='lora'`; `'full'` cannot"):
        adapter.enable_full_training()
    full = load(tiny)
    full.enable_full_training()
    assert full.training_mode == "full" and all(p.requires_grad for p in full.transformer.parameters())
    with pytest.raises(ModelLayoutError, match=r"already trains with `training_mode='full'`"):
        full.add_lora(4, 4)


@pytest.mark.parametrize("mode", ["lora", "full"])
def test_a_run_resumes_from_exactly_what_it_saved(tiny, tmp_path, mode):
    def choose(adapter):
        adapter.add_lora(4, 4) if mode == "lora" else adapter.enable_full_training()
        return adapter

    trained = choose(load(tiny))
    train_a_little(trained)
    trained.save_trained(tmp_path, trained.transformer)
    files = saved(tmp_path)
    assert set(trained.spec.saved_files(mode)) <= files
    if mode == "lora":
        assert files == {LORA_WEIGHT_NAME}
    else:
        assert LORA_WEIGHT_NAME not in files and all(f.startswith("transformer/") for f in files)

    resumed = choose(load(tiny))
    resumed.load_trained(tmp_path, resumed.transformer)
    assert_same_weights(resumed, trained)


@pytest.mark.parametrize("mode", ["lora", "full"])
def test_a_low_noise_expert_is_saved_in_its_slot_and_resumes_only_there(tiny, tmp_path, mode):
    def choose(adapter):
        adapter.add_lora(4, 4) if mode == "lora" else adapter.enable_full_training()
        return adapter

    low = choose(load(tiny, "experts", expert="low_noise"))
    train_a_little(low)
    low.save_trained(tmp_path, low.transformer)
    files = saved(tmp_path)
    assert set(low.spec.saved_files(mode)) <= files
    if mode == "lora":
        assert files == {LORA_WEIGHT_NAME} and lora_expert(tmp_path / LORA_WEIGHT_NAME) == "low_noise"
    else:
        assert "transformer_2/config.json" in files and not any(f.startswith("transformer/") for f in files)

    resumed = choose(load(tiny, "experts", expert="low_noise"))
    resumed.load_trained(tmp_path, resumed.transformer)
    assert_same_weights(resumed, low)
    high = choose(load(tiny, "experts", expert="high_noise"))
    with pytest.raises(CheckpointError, match=r"expert='high_noise'"):
        high.load_trained(tmp_path, high.transformer)
