"""Teachers: input rules, grids, features against stock transformers models, conversion, safe loading."""

import argparse
import io
import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file, save_file
from transformers import VideoMAEForPreTraining, VideoMAEForVideoClassification, VideoMAEModel

from diffusers_tsa.data import ClipSpec, read_video
from diffusers_tsa.errors import CheckpointError, GridError
from diffusers_tsa.masking import motion_saliency_mask
from diffusers_tsa.teachers import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageTeacher,
    TeacherInput,
    VideoMAETeacher,
    VJEPA2Teacher,
    interpolate_position_table,
    load_teacher,
    teacher_config,
    teacher_geometry,
)
from diffusers_tsa.teachers.convert_videomaev2 import (
    load_videomaev2_state_dict,
    transformers_to_videomaev2,
    videomaev2_config,
    videomaev2_to_transformers,
)
from diffusers_tsa.teachers.convert_videomaev2.__main__ import main as convert_main
from diffusers_tsa.testing import tiny_dinov2, tiny_videomae, tiny_vjepa2


pytestmark = pytest.mark.minimum  # `make test-minimum`'s fast subset


REAL_VIDEOS = Path(__file__).parents[3] / "shared" / "data" / "videos"
TINY_INPUT = TeacherInput.for_clip(9, 96, 144)  # 8 frames at 32x48


def _clip(batch=2, frames=9, height=96, width=144, seed=0):
    return torch.rand(batch, frames, 3, height, width, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _reference_pixels(video, size):
    """The paper's teacher input computed by hand: drop frame 0, bicubic resize, [0, 1], ImageNet mean/std."""
    frames = video[:, 1:]
    b, t = frames.shape[:2]
    resized = F.interpolate(frames.flatten(0, 1), size=size, mode="bicubic", align_corners=False).clamp(-1, 1)
    resized = resized.view(b, t, 3, *size)
    mean, std = torch.tensor(IMAGENET_MEAN).view(3, 1, 1), torch.tensor(IMAGENET_STD).view(3, 1, 1)
    return ((resized + 1) / 2 - mean) / std


def test_paper_input_and_grid():
    teacher_input = TeacherInput.for_clip(49, 480, 720)
    assert teacher_input == TeacherInput(num_frames=48, height=160, width=240)
    # A ViT-B-shaped config (16 frames at 224, tubelet 2, patch 16) at tiny width.
    model = tiny_videomae(image_size=(224, 224), num_frames=16)
    teacher = VideoMAETeacher(model, name="tiny", input=teacher_input)
    assert teacher.grid == (24, 10, 15) and teacher.tubelet == (2, 16, 16) and teacher.hidden_size == 32
    video = _clip(batch=1, frames=49, height=480, width=720)
    # The stock model at the paper grid, its table resized from the native 8 x 14 x 14 one: frames 1..48 at
    # 160x240, ImageNet-normalised, last block, no final norm, tokens in (f, h, w) order.
    native = tiny_videomae(image_size=(224, 224), num_frames=16)
    stock = tiny_videomae(image_size=(160, 240), num_frames=48)
    stock.load_state_dict(native.state_dict())
    stock.embeddings.position_embeddings = interpolate_position_table(
        native.embeddings.position_embeddings, (8, 14, 14), (24, 10, 15)
    )
    with torch.no_grad():
        expected = stock(pixel_values=_reference_pixels(video, (160, 240))).last_hidden_state
    torch.testing.assert_close(teacher.encode(video), expected.view(1, 24, 10, 15, 32), atol=1e-5, rtol=1e-5)
    override = TeacherInput.for_clip(49, 480, 720, teacher_num_frames=16, teacher_height=224, teacher_width=224)
    assert (override.num_frames, override.height, override.width) == (16, 224, 224)


def test_sizes_the_patch_grid_does_not_divide_are_refused():
    with pytest.raises(GridError, match=r"`TeacherInput.height=150` .* patch 16 \(use 144 or 160\)"):
        VideoMAETeacher(tiny_videomae(), name="tiny", input=TeacherInput(8, 150, 48))
    with pytest.raises(GridError, match=r"`TeacherInput.num_frames=7` .* tubelet 2 \(use 6 or 8\)"):
        VideoMAETeacher(tiny_videomae(), name="tiny", input=TeacherInput(7, 32, 48))
    teacher = VideoMAETeacher(tiny_videomae(), name="tiny", input=TINY_INPUT)
    with pytest.raises(GridError, match="needs 8 frames after the first, but the clip has 5"):
        teacher.encode(_clip(frames=5))


def test_videomae_features_equal_the_stock_model_on_the_paper_input():
    teacher = VideoMAETeacher(tiny_videomae(), name="tiny", input=TINY_INPUT)
    stock = tiny_videomae()  # same seed, same weights, untouched
    video = _clip()
    with torch.no_grad():
        expected = stock(pixel_values=_reference_pixels(video, (32, 48))).last_hidden_state
    torch.testing.assert_close(teacher.encode(video), expected.view(2, 4, 2, 3, 32), atol=1e-5, rtol=1e-5)


def test_final_norm_is_not_applied():
    config = tiny_videomae().config
    config.use_mean_pooling = False  # a checkpoint with a final LayerNorm, e.g. MCG-NJU/videomae-base
    torch.manual_seed(0)
    normed = VideoMAEModel(config).eval()
    with torch.no_grad():
        normed.layernorm.weight.mul_(3.0)
    teacher = VideoMAETeacher(normed, name="tiny", input=TINY_INPUT)
    assert teacher.backbone.layernorm is None
    torch.testing.assert_close(
        teacher.encode(_clip()), VideoMAETeacher(tiny_videomae(), name="t", input=TINY_INPUT).encode(_clip())
    )


def test_position_table_interpolation_matches_naive_resizing():
    source, target = (3, 4, 5), (7, 2, 6)
    table = torch.randn(1, 3 * 4 * 5, 8, generator=torch.Generator().manual_seed(0))
    assert interpolate_position_table(table, source, source) is table
    resized = interpolate_position_table(table, source, target).view(7, 2, 6, 8)
    # Naive reference: bicubic per frame and channel, then linear in time with half-pixel centres, by hand.
    grid = table.view(3, 4, 5, 8)
    spatial = torch.stack(
        [F.interpolate(grid[f].permute(2, 0, 1)[None], size=(2, 6), mode="bicubic")[0] for f in range(3)]
    ).permute(0, 2, 3, 1)  # (3, 2, 6, 8)
    for i in range(7):
        position = min(max((i + 0.5) * 3 / 7 - 0.5, 0.0), 2.0)
        low = int(np.floor(position))
        high, weight = min(low + 1, 2), position - low
        expected = (1 - weight) * spatial[low] + weight * spatial[high]
        torch.testing.assert_close(resized[i], expected, atol=1e-5, rtol=1e-5)


def test_native_grid_keeps_the_sinusoid_table():
    model = tiny_videomae(image_size=(32, 48), num_frames=8)
    table = model.embeddings.position_embeddings
    teacher = VideoMAETeacher(model, name="tiny", input=TINY_INPUT)
    assert teacher.backbone.embeddings.position_embeddings is table


def _videomaev2_state_dict(depth=2, hidden=32, mlp=37, seed=0):
    """A random state dict in VideoMAEv2's fine-tuning layout (keys of `models/modeling_finetune.py`)."""
    g = torch.Generator().manual_seed(seed)
    sd = {"patch_embed.proj.weight": torch.randn(hidden, 3, 2, 16, 16, generator=g)}
    sd["patch_embed.proj.bias"] = torch.randn(hidden, generator=g)
    for i in range(depth):
        shapes = {
            "norm1.weight": (hidden,), "norm1.bias": (hidden,),
            "attn.q_bias": (hidden,), "attn.v_bias": (hidden,), "attn.qkv.weight": (3 * hidden, hidden),
            "attn.proj.weight": (hidden, hidden), "attn.proj.bias": (hidden,),
            "norm2.weight": (hidden,), "norm2.bias": (hidden,),
            "mlp.fc1.weight": (mlp, hidden), "mlp.fc1.bias": (mlp,),
            "mlp.fc2.weight": (hidden, mlp), "mlp.fc2.bias": (hidden,),
        }  # fmt: skip
        sd.update({f"blocks.{i}.{k}": torch.randn(*s, generator=g) for k, s in shapes.items()})
    sd.update({"fc_norm.weight": torch.ones(hidden), "fc_norm.bias": torch.zeros(hidden)})
    sd.update({"head.weight": torch.randn(710, hidden, generator=g), "head.bias": torch.zeros(710)})
    return sd


def test_conversion_is_complete_and_lossless():
    source = _videomaev2_state_dict()
    converted = videomaev2_to_transformers(source)
    config = videomaev2_config(source, num_attention_heads=2)
    assert (config.hidden_size, config.num_hidden_layers, config.intermediate_size) == (32, 2, 37)
    assert config.layer_norm_eps == 1e-6 and config.qv_bias and config.use_mean_pooling
    model = VideoMAEModel(config)
    assert set(converted) == set(model.state_dict())  # every weight of the model, nothing else
    model.load_state_dict(converted, strict=True)
    qkv = source["blocks.1.attn.qkv.weight"]
    layer = model.encoder.layer[1].attention.attention
    assert torch.equal(layer.query.weight, qkv[:32]) and torch.equal(layer.value.weight, qkv[64:])
    assert layer.key.bias is None and torch.equal(layer.value.bias, source["blocks.1.attn.v_bias"])
    back = transformers_to_videomaev2(converted)
    head = {k for k in source if k.startswith(("fc_norm.", "head."))}
    assert set(back) == set(source) - head
    assert all(torch.equal(back[k], source[k]) for k in back)


def test_conversion_refuses_what_videomae_cannot_hold():
    source = _videomaev2_state_dict()
    source["blocks.0.gamma_1"] = torch.ones(32)
    with pytest.raises(ValueError, match=r"blocks\.0\.gamma_1.*Layer scale"):
        videomaev2_to_transformers(source)


def test_raw_file_and_converted_folder_load_the_same_teacher(tmp_path, capsys):
    path = tmp_path / "vit.pth"
    torch.save({"module": _videomaev2_state_dict()}, path)
    convert_main([str(path), str(tmp_path / "converted"), "--num_attention_heads", "2"])
    assert (tmp_path / "converted" / "model.safetensors").is_file() and "Wrote" in capsys.readouterr().out
    raw = load_teacher(path, TINY_INPUT, num_attention_heads=2)
    folder = load_teacher(str(tmp_path / "converted"), TINY_INPUT)
    assert isinstance(folder, VideoMAETeacher) and folder.grid == (4, 2, 3)
    video = _clip()
    torch.testing.assert_close(raw.encode(video), folder.encode(video))
    assert raw.fingerprint() != load_teacher(path, TeacherInput(8, 32, 32), num_attention_heads=2).fingerprint()


@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_raw_file_geometry_is_read_from_tensor_shapes_alone(tmp_path, suffix):
    source = _videomaev2_state_dict()
    path = tmp_path / f"vit{suffix}"
    if suffix == ".pth":
        torch.save({"module": source}, path)
    else:
        from safetensors.torch import save_file

        save_file(source, path)
    shapes = load_videomaev2_state_dict(path, shapes_only=True)
    assert set(shapes) == set(source) and all(t.is_meta for t in shapes.values())
    assert all(shapes[k].shape == v.shape for k, v in source.items())
    config = teacher_config(path, num_attention_heads=2)
    assert config.to_dict() == videomaev2_config(source, num_attention_heads=2).to_dict()
    geometry = teacher_geometry(path, TINY_INPUT, config)
    assert (geometry.grid, geometry.tubelet, geometry.hidden_size) == ((4, 2, 3), (2, 16, 16), 32)


def test_checkpoints_with_pickled_code_are_refused(tmp_path):
    path = tmp_path / "unsafe.pth"
    torch.save({"module": _videomaev2_state_dict(), "args": argparse.Namespace(lr=1e-3)}, path)
    with pytest.raises(CheckpointError, match=r"cannot be read as a checkpoint \(it holds a pickled argparse\."):
        load_teacher(path, TINY_INPUT, num_attention_heads=2)


def test_legacy_format_file_geometry_is_read(tmp_path):
    # A file saved before PyTorch 1.6's zip format cannot be memory-mapped: its shapes are read from the whole file.
    path = tmp_path / "legacy.pth"
    torch.save({"module": _videomaev2_state_dict()}, path, _use_new_zipfile_serialization=False)
    assert teacher_config(path, num_attention_heads=2).hidden_size == 32


def _saved_bytes(content) -> bytes:
    buffer = io.BytesIO()
    torch.save(content, buffer)
    return buffer.getvalue()


def _without(*keys) -> dict:
    return {k: v for k, v in _videomaev2_state_dict().items() if k not in keys}


def _with(extra: dict) -> dict:
    return {**_videomaev2_state_dict(), **extra}


def _write(path: Path, content) -> None:
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif path.suffix == ".safetensors":
        save_file(content, path)
    else:
        torch.save(content, path)


HEADS = ["--num_attention_heads", "2"]
FOLDER = object()
# Converter mistakes: (checkpoint file name, what it holds, flags after SRC DST, the one `error:` line expected).
CONVERTER_MISTAKES = {
    "missing_file": ("absent.pth", None, [], r"src='\S+absent.pth' is not an existing file; give a VideoMAEv2"),
    "folder": ("folder.pth", FOLDER, [], r"src='\S+folder.pth' is a folder; give a VideoMAEv2 checkpoint file"),
    "truncated": (
        "vit.pth",
        _saved_bytes({"module": _videomaev2_state_dict()})[:-2000],
        [],
        r"src='\S+' cannot be read as a checkpoint \(RuntimeError: .*\): download it again if it is truncated",
    ),
    "empty": ("vit.pth", b"", [], r"src='\S+' cannot be read as a checkpoint \(EOFError\): download it again"),
    "text": ("vit.pth", b"hello world\n", [], r"src='\S+' cannot be read as a checkpoint \(.*\): download it"),
    "text_safetensors": ("vit.safetensors", b"hello world\n", [], r"cannot be read as a checkpoint \(Safetensor"),
    "pickled_code": (
        "vit.pth",
        {"module": _videomaev2_state_dict(), "args": argparse.Namespace(lr=1e-3)},
        [],
        r"src='\S+' cannot be read .*pickled argparse.Namespace.* save its state dict alone",
    ),
    "not_a_dict": ("vit.pth", [torch.zeros(3)], [], r"src='\S+' holds a list, not a state dict; give a VideoMAEv2"),
    "missing_patch_embedding": (
        "vit.pth",
        {"module": _without("patch_embed.proj.weight")},
        [],
        r"src='\S+' is not a VideoMAEv2 video ViT checkpoint: it has no 5-D patch_embed.proj.weight \(its keys",
    ),
    "other_architecture": (
        "vit.safetensors",
        {"conv1.weight": torch.zeros(8, 3, 7, 7), "fc.weight": torch.zeros(10, 8)},
        [],
        r"src='\S+' is not a VideoMAEv2 video ViT .* \(its keys: \['conv1.weight', 'fc.weight'\]\)\. Give one",
    ),
    "layer_scale": (
        "vit.pth",
        _with({"blocks.0.gamma_1": torch.ones(32)}),
        [],
        r"src='\S+' has keys with no transformers VideoMAE counterpart \(1\): \['blocks.0.gamma_1'\]",
    ),
    "incomplete_block": (
        "vit.pth",
        _without("blocks.1.norm2.weight"),
        HEADS,
        r"weights of src='\S+' do not fit .*: 1 missing \(encoder.layer.1.layernorm_after.weight\)\. Every block",
    ),
    "block_of_another_size": (
        "vit.pth",
        _with({"blocks.1.mlp.fc1.weight": torch.zeros(40, 32)}),
        HEADS,
        r"src='\S+' .*: 1 of another shape \(encoder.layer.1.intermediate.dense.weight\)",
    ),
    "default_heads_under_64_wide": (
        "vit.pth",
        _videomaev2_state_dict(),
        [],
        r"--num_attention_heads=None gives 0 heads \(hidden size // 64\), which do not divide .* a divisor of 32",
    ),
    "heads_not_dividing": ("vit.pth", _videomaev2_state_dict(), ["--num_attention_heads", "5"], r"=5 gives 5 heads"),
    "image_size": (
        "vit.pth",
        _videomaev2_state_dict(),
        [*HEADS, "--image_size", "10"],
        r"--image_size=10 must be the checkpoint's training resolution, a multiple of its patch 16 \(use 16 or 32",
    ),
    "num_frames": (
        "vit.pth",
        _videomaev2_state_dict(),
        [*HEADS, "--num_frames", "0"],
        r"--num_frames=0 must be .* \(use 2 or 4",
    ),
}


@pytest.mark.parametrize("mistake", CONVERTER_MISTAKES)
def test_converter_mistakes_end_with_one_error_line(tmp_path, mistake):
    name, content, flags, expected = CONVERTER_MISTAKES[mistake]
    src, dst = tmp_path / name, tmp_path / "out"
    if content is FOLDER:
        src.mkdir()
    elif content is not None:
        _write(src, content)
    with pytest.raises(SystemExit) as stop:
        convert_main([str(src), str(dst), *flags])
    message = stop.value.code  # a string: printed to stderr, exit status 1
    assert isinstance(message, str) and message.startswith("error: ") and "\n" not in message
    assert re.search(expected, message), message
    assert not dst.exists()  # refused before the output folder is made


@pytest.mark.parametrize("dst", ["file", "file/out"])
def test_converter_refuses_an_output_folder_it_cannot_make(tmp_path, dst):
    torch.save({"module": _videomaev2_state_dict()}, tmp_path / "vit.pth")
    (tmp_path / "file").write_text("not a folder")
    with pytest.raises(SystemExit, match=r"^error: dst='\S+' cannot be the output folder \(.+\); give a folder"):
        convert_main([str(tmp_path / "vit.pth"), str(tmp_path / dst), *HEADS])


def test_converter_command_prints_one_error_line(tmp_path):
    torch.save({"module": _without("patch_embed.proj.weight")}, tmp_path / "vit.pth")
    command = [sys.executable, "-m", "diffusers_tsa.teachers.convert_videomaev2", str(tmp_path / "vit.pth"), "out"]
    done = subprocess.run(command, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert done.returncode == 1
    assert done.stderr.startswith("error: src='") and done.stderr.count("\n") == 1, done.stderr


def test_load_teacher_dispatches_on_model_type_and_passes_no_remote_code(tmp_path, monkeypatch):
    tiny_videomae().save_pretrained(tmp_path / "videomae")
    tiny_vjepa2().save_pretrained(tmp_path / "vjepa2")
    teacher = load_teacher(str(tmp_path / "vjepa2"), TINY_INPUT, dtype=torch.bfloat16)
    assert isinstance(teacher, VJEPA2Teacher) and teacher.encode(_clip()).dtype == torch.bfloat16
    calls = []
    stock_load = VideoMAEModel.from_pretrained
    spy = classmethod(lambda cls, name, **kw: calls.append(kw) or stock_load(name, **kw))
    monkeypatch.setattr(VideoMAEModel, "from_pretrained", spy)
    assert isinstance(load_teacher(str(tmp_path / "videomae"), TINY_INPUT), VideoMAETeacher)
    assert calls[0]["trust_remote_code"] is False
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "config.json").write_text('{"model_type": "bert"}')
    with pytest.raises(ValueError, match="'bert' model; supported teachers are"):
        load_teacher(str(tmp_path / "other"), TINY_INPUT)


def _edit_folder(folder: Path, *, config: dict | None = None, rename=None, drop: tuple[str, ...] = ()) -> None:
    """Changes a saved checkpoint folder: config values, weight names, weights left out."""
    if config:
        path = folder / "config.json"
        path.write_text(json.dumps({**json.loads(path.read_text()), **config}))
    weights = load_file(folder / "model.safetensors")
    weights = {(rename or str)(k): v for k, v in weights.items() if not k.startswith(drop)}
    save_file(weights, folder / "model.safetensors", metadata={"format": "pt"})


def test_checkpoint_weights_that_do_not_fit_the_config_are_refused(tmp_path):
    tiny_videomae().save_pretrained(tmp_path / "renamed")
    # Weight names of another transformers version: the q/k/v weights and biases would be left at random.
    _edit_folder(tmp_path / "renamed", rename=lambda key: key.replace(".attention.attention.", ".attention.self."))
    attention = [k for k in tiny_videomae().state_dict() if ".attention.attention." in k]
    name = str(tmp_path / "renamed")
    with pytest.raises(CheckpointError) as refused:
        load_teacher(name, TINY_INPUT)
    message = str(refused.value)
    assert f"`name_or_path={name!r}`" in message and "save it again with this transformers" in message
    assert f"{len(attention)} missing (encoder.layer.0.attention.attention" in message
    assert f"{len(attention)} unexpected (encoder.layer.0.attention.self." in message
    tiny_videomae().save_pretrained(tmp_path / "shallow")
    _edit_folder(tmp_path / "shallow", config={"num_hidden_layers": 1})  # the second block would be ignored
    with pytest.raises(CheckpointError, match=r"\d+ unexpected \(encoder.layer.1."):
        load_teacher(str(tmp_path / "shallow"), TINY_INPUT)
    tiny_videomae().save_pretrained(tmp_path / "wider")
    _edit_folder(tmp_path / "wider", config={"intermediate_size": 40})
    with pytest.raises(CheckpointError, match=r"6 of another shape \(encoder.layer.0.intermediate.dense.bias"):
        load_teacher(str(tmp_path / "wider"), TINY_INPUT)
    tiny_vjepa2().save_pretrained(tmp_path / "vjepa2")
    _edit_folder(tmp_path / "vjepa2", drop=("encoder.layer.1.mlp.",))
    with pytest.raises(CheckpointError, match=r"4 missing \(encoder.layer.1.mlp.fc1.bias"):
        load_teacher(str(tmp_path / "vjepa2"), TINY_INPUT)


def test_checkpoints_with_parts_teachers_do_not_use_load(tmp_path):
    def assert_loads_encoder(folder, encoder):
        teacher = load_teacher(str(folder), TINY_INPUT)
        expected = type(teacher)(encoder, name="stock", input=TINY_INPUT).encode(_clip())
        torch.testing.assert_close(teacher.encode(_clip()), expected)

    # VideoMAE pretraining (decoder, no final norm) and classification (fc_norm, classifier) checkpoints.
    config = tiny_videomae().config
    config.use_mean_pooling = False
    config.decoder_num_hidden_layers, config.decoder_num_attention_heads = 1, 2
    config.decoder_hidden_size, config.decoder_intermediate_size = 16, 20
    pretraining = VideoMAEForPreTraining(config).eval()
    pretraining.save_pretrained(tmp_path / "pretraining")
    _edit_folder(tmp_path / "pretraining", drop=("videomae.layernorm.",))
    assert_loads_encoder(tmp_path / "pretraining", pretraining.videomae)
    classification = VideoMAEForVideoClassification(tiny_videomae().config).eval()
    classification.save_pretrained(tmp_path / "classification")
    assert_loads_encoder(tmp_path / "classification", classification.videomae)
    # A V-JEPA 2 encoder alone: no predictor, no final norm.
    vjepa2 = tiny_vjepa2()
    vjepa2.save_pretrained(tmp_path / "encoder")
    _edit_folder(tmp_path / "encoder", drop=("predictor.", "encoder.layernorm."))
    assert_loads_encoder(tmp_path / "encoder", vjepa2)


def test_vjepa2_square_input_equals_the_stock_encoder():
    # At the checkpoint's own square crop the stock RoPE is right: ours must equal it before the final norm.
    stock = tiny_vjepa2(crop_size=32)
    teacher = VJEPA2Teacher(tiny_vjepa2(crop_size=32), name="tiny", input=TeacherInput(8, 32, 32))
    video = _clip(height=32, width=32)
    with torch.no_grad():
        expected = stock.encoder(pixel_values_videos=_reference_pixels(video, (32, 32))).last_hidden_state
    features = teacher.encode(video)
    assert features.shape == (2, 4, 2, 2, 48)
    torch.testing.assert_close(stock.encoder.layernorm(features.flatten(1, 3)), expected, atol=1e-5, rtol=1e-5)


def test_vjepa2_rope_uses_the_true_non_square_grid():
    teacher = VJEPA2Teacher(tiny_vjepa2(), name="tiny", input=TeacherInput(8, 32, 64))
    assert teacher.grid == (4, 2, 4)
    attention = teacher.backbone.encoder.layer[0].attention
    frames, rows, columns = attention.get_position_ids(torch.zeros(1, 32, 48))
    f, h, w = torch.meshgrid(torch.arange(4), torch.arange(2), torch.arange(4), indexing="ij")
    assert torch.equal(frames, f.flatten()) and torch.equal(rows, h.flatten()) and torch.equal(columns, w.flatten())
    assert teacher.encode(_clip(height=96, width=192)).shape == (2, 4, 2, 4, 48)


@pytest.mark.skipif(not (REAL_VIDEOS / "horse.mp4").is_file(), reason=f"no horse.mp4 in {REAL_VIDEOS}")
def test_real_clip_grid_and_motion_mask_on_the_subject():
    # horse.mp4: a dark galloping horse and rider on a bright, static background.
    teacher = VideoMAETeacher(
        tiny_videomae(image_size=(224, 224), num_frames=16), name="tiny", input=TeacherInput.for_clip(49, 480, 720)
    )
    video = read_video(REAL_VIDEOS / "horse.mp4", ClipSpec())[None]
    frames = teacher.prepare(video)
    assert frames.shape == (1, 48, 3, 160, 240) and teacher.encode_prepared(frames).shape == (1, 24, 10, 15, 32)
    mask = motion_saliency_mask(frames, tubelet=teacher.tubelet, ratio=0.2)[0]
    dark = (frames[0].mean(1) < 0).float()  # (48, 160, 240): the subject
    dark_share = F.avg_pool3d(dark[None, None], (2, 16, 16))[0, 0]  # per token
    assert dark_share[mask].mean() > 2 * dark_share[~mask].mean()


@pytest.mark.parametrize(
    "clip, expected",
    [
        ((49, 480, 720), (48, 160, 240)),  # the paper's: a third, exactly
        ((81, 480, 832), (80, 160, 272)),  # Wan 480p: 277.3 px -> the nearest multiple of the patch, 272
        ((121, 512, 768), (120, 176, 256)),  # LTX-Video: 170.7 -> 176
        ((50, 96, 144), (48, 32, 48)),  # 49 frames after the first -> 48, a whole number of tubelets
    ],
)
def test_the_default_teacher_input_is_on_the_teachers_patch_grid(clip, expected):
    given = TeacherInput.for_clip(*clip, patch_size=16, tubelet_size=2)
    assert (given.num_frames, given.height, given.width) == expected
    assert TeacherInput.for_clip(*clip, teacher_width=64).width == 64


def _tiny_dinov3():
    from transformers import DINOv3ViTConfig, DINOv3ViTModel

    torch.manual_seed(0)
    config = DINOv3ViTConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        patch_size=14,
        image_size=56,
        num_register_tokens=4,
    )
    return DINOv3ViTModel(config).eval()


@pytest.mark.parametrize(
    "build, prefix_tokens",
    [(tiny_dinov2, 1), (lambda: tiny_dinov2(num_register_tokens=2), 3), (_tiny_dinov3, 5)],
    ids=["dinov2", "dinov2-with-registers", "dinov3"],
)
def test_image_teachers_encode_each_frame_on_the_documented_grid(tmp_path, build, prefix_tokens):
    stock = build()
    stock.save_pretrained(tmp_path / "image")
    name = str(tmp_path / "image")
    config = teacher_config(name)
    # The paper's rule on a 14 px patch: 8 frames after the first, 96 / 3 -> 28, 144 / 3 -> 42.
    geometry = teacher_geometry(name, TeacherInput.for_clip(9, 96, 144, patch_size=14, tubelet_size=1), config)
    assert (geometry.input.num_frames, geometry.input.height, geometry.input.width) == (8, 28, 42)
    assert geometry.grid == (8, 2, 3) and geometry.tubelet == (1, 14, 14)
    teacher = load_teacher(name, geometry.input)
    assert isinstance(teacher, ImageTeacher) and teacher.grid == geometry.grid
    video = _clip()
    features = teacher.encode(video)
    assert features.shape == (2, 8, 2, 3, 32)
    # Frame by frame, the stock model's last (normed) hidden state without the class and register tokens.
    pixels = _reference_pixels(video, (28, 42))
    for t in (0, 5):
        with torch.no_grad():
            tokens = stock(pixel_values=pixels[:, t]).last_hidden_state
        assert tokens.shape[1] == prefix_tokens + 6
        torch.testing.assert_close(features[:, t].flatten(1, 2), tokens[:, prefix_tokens:], atol=1e-5, rtol=1e-5)
    # The motion mask takes the teacher's tubelet: one frame deep.
    mask = motion_saliency_mask(teacher.prepare(video), tubelet=teacher.tubelet, ratio=0.5)
    assert mask.shape == (2, 8, 2, 3) and mask.sum().item() == 2 * 8 * 3
