"""LoRA layouts: train-wan's diffusers files, the original Wan / ComfyUI layout, `medvid export-lora`.

The reference is diffusers' own converter for non-diffusers Wan LoRAs
(``_convert_non_diffusers_wan_lora_to_diffusers``, reached through ``pipe.load_lora_weights``):
a file we write in the Wan layout must generate, through diffusers alone, the same video as the
diffusers-layout file it came from.
"""

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file

from medvid.t2v import wan as W
from medvid.t2v.wan_lora import LoraFormatError, detect_layout, export_lora, load_lora_into, read_lora


@pytest.fixture(scope="module")
def lora8(wan_dir, tmp_path_factory):
    """Random LoRA, rank 4 with alpha 8 (scale 2, so a lost alpha shows), in train-wan's layout."""
    from diffusers import WanTransformer3DModel

    t = WanTransformer3DModel.from_pretrained(wan_dir, subfolder="transformer")
    cfg = W.add_lora(t, rank=4, alpha=8)
    g = torch.Generator().manual_seed(5)
    with torch.no_grad():
        for n, p in t.named_parameters():
            if "lora_" in n:
                p.copy_(torch.randn(p.shape, generator=g) * 0.2)
    d = tmp_path_factory.mktemp("lora8") / "lora"
    W.save_lora(d, W.lora_state_dict(t), cfg)
    return d


def frames(pipe):
    pipe.set_progress_bar_config(disable=True)
    return pipe("the heart", negative_prompt="blurry", height=32, width=32, num_frames=5, num_inference_steps=2,
                guidance_scale=4.0, generator=torch.Generator().manual_seed(0), output_type="np",
                max_sequence_length=16).frames[0]


def test_comfyui_export_generates_like_the_original_through_diffusers_own_converter(wan_dir, lora8, tmp_path):
    from diffusers import WanPipeline

    out = export_lora(lora8, tmp_path / "medgen_comfy.safetensors", "comfyui")
    sd = load_file(str(out))
    assert all(k.startswith("diffusion_model.blocks.") for k in sd)
    assert "diffusion_model.blocks.0.self_attn.q.lora_down.weight" in sd and "diffusion_model.blocks.1.ffn.2.lora_up.weight" in sd
    assert "diffusion_model.blocks.0.cross_attn.o.alpha" in sd and float(sd["diffusion_model.blocks.0.cross_attn.o.alpha"]) == 8.0
    assert len(sd) == 2 * 10 * 3  # 2 blocks x 10 modules x (down, up, alpha)

    ref = WanPipeline.from_pretrained(wan_dir)
    ref.load_lora_weights(lora8)  # the diffusers-layout file, as train-wan wrote it
    theirs = WanPipeline.from_pretrained(wan_dir)
    theirs.load_lora_weights(str(tmp_path), weight_name=out.name)  # diffusers converts the Wan layout itself
    base = frames(WanPipeline.from_pretrained(wan_dir))
    a, b = frames(ref), frames(theirs)
    np.testing.assert_allclose(b, a, atol=2e-5)
    assert np.abs(a - base).max() > 1e-3  # the LoRA changes the video

    ours = WanPipeline.from_pretrained(wan_dir)
    assert load_lora_into(ours, out) == "wan"
    np.testing.assert_allclose(frames(ours), a, atol=2e-5)

    # Back to diffusers' layout: the same tensors, loadable by plain diffusers.
    back = export_lora(out, tmp_path / "back", "diffusers")
    again = WanPipeline.from_pretrained(wan_dir)
    again.load_lora_weights(back.parent)
    np.testing.assert_allclose(frames(again), a, atol=2e-5)


def test_other_layouts_read_and_bad_keys_fail_with_the_file_named(wan_dir, lora8, tmp_path):
    from diffusers import WanPipeline

    wan = load_file(str(export_lora(lora8, tmp_path / "w.safetensors", "wan")))
    # DiffSynth-Studio style: no prefix, lora_A / lora_B names
    bare = {k.removeprefix("diffusion_model.").replace("lora_down", "lora_A").replace("lora_up", "lora_B"): v
            for k, v in wan.items()}
    save_file(bare, str(tmp_path / "bare.safetensors"))
    assert detect_layout(bare) == "wan-bare"
    ref = WanPipeline.from_pretrained(wan_dir)
    ref.load_lora_weights(lora8)
    p = WanPipeline.from_pretrained(wan_dir)
    load_lora_into(p, tmp_path / "bare.safetensors")
    np.testing.assert_allclose(frames(p), frames(ref), atol=2e-5)

    sd, meta, layout = read_lora(lora8)
    assert layout == "diffusers" and meta["lora_alpha"] == 8.0 and all(k.startswith("transformer.") for k in sd)

    save_file({"model.layers.0.q_proj.lora_A.weight": torch.zeros(2, 4)}, str(tmp_path / "llm.safetensors"))
    with pytest.raises(LoraFormatError, match="llm.safetensors.*match neither"):
        read_lora(tmp_path / "llm.safetensors")
    torch.save({}, tmp_path / "x.pt")
    with pytest.raises(ValueError, match="pickles are not read"):
        read_lora(tmp_path / "x.pt")

    from medvid.cli import main

    assert main(["export-lora", str(tmp_path / "llm.safetensors"), "--out", str(tmp_path / "o.safetensors")]) == 2
    assert main(["export-lora", str(lora8), "--format", "comfyui", "--out", str(tmp_path / "cli.safetensors")]) == 0
    assert set(load_file(str(tmp_path / "cli.safetensors"))) == set(wan)
