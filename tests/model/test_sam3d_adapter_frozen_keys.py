"""3DSAM-adapter fine-tuning: SAM ViT-B weights mapped into the 3D encoder and the published freeze recipe.

``segment_anything`` cannot be imported here (it imports torchvision, which does not coexist with the
CPU torch build), so Meta's ``sam_vit_b_01ec64.pth`` layout is written out below from the published
``segment_anything/modeling/image_encoder.py`` (ViT-B: depth 12, width 768, 12 heads, patch 16,
img_size 1024, window 14, global attention in blocks 2, 5, 8, 11, neck to 256 channels).
"""

from __future__ import annotations

import pytest
import torch

from ctsam.errors import CheckpointError
from ctsam.model import apply_finetune_recipe, build_model, load_sam_image_encoder

GLOBAL_BLOCKS = (2, 5, 8, 11)


def meta_sam_vit_b_layout() -> dict[str, tuple[int, ...]]:
    """Image-encoder entries of Meta's sam_vit_b_01ec64.pth (key -> shape), in state-dict order."""
    layout: dict[str, tuple[int, ...]] = {
        "image_encoder.pos_embed": (1, 64, 64, 768),
        "image_encoder.patch_embed.proj.weight": (768, 3, 16, 16),
        "image_encoder.patch_embed.proj.bias": (768,),
    }
    for i in range(12):
        b = f"image_encoder.blocks.{i}."
        rel = 2 * (64 if i in GLOBAL_BLOCKS else 14) - 1
        layout.update(
            {
                b + "norm1.weight": (768,),
                b + "norm1.bias": (768,),
                b + "attn.rel_pos_h": (rel, 64),
                b + "attn.rel_pos_w": (rel, 64),
                b + "attn.qkv.weight": (2304, 768),
                b + "attn.qkv.bias": (2304,),
                b + "attn.proj.weight": (768, 768),
                b + "attn.proj.bias": (768,),
                b + "norm2.weight": (768,),
                b + "norm2.bias": (768,),
                b + "mlp.lin1.weight": (3072, 768),
                b + "mlp.lin1.bias": (3072,),
                b + "mlp.lin2.weight": (768, 3072),
                b + "mlp.lin2.bias": (768,),
            }
        )
    layout.update(
        {
            "image_encoder.neck.0.weight": (256, 768, 1, 1),
            "image_encoder.neck.1.weight": (256,),
            "image_encoder.neck.1.bias": (256,),
            "image_encoder.neck.2.weight": (256, 256, 3, 3),
            "image_encoder.neck.3.weight": (256,),
            "image_encoder.neck.3.bias": (256,),
        }
    )
    return layout


# a few of the full checkpoint's other entries (SAM's 2D prompt encoder and mask decoder)
OTHER_SAM_KEYS = {
    "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix": (2, 128),
    "prompt_encoder.point_embeddings.0.weight": (1, 256),
    "mask_decoder.iou_token.weight": (1, 256),
}


def random_sam_state_dict() -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(7)
    return {k: torch.randn(s, generator=g) for k, s in {**meta_sam_vit_b_layout(), **OTHER_SAM_KEYS}.items()}


@pytest.fixture(scope="module")
def vit_b():
    torch.manual_seed(0)
    return build_model("sam3d_adapter", "vit_b")


def test_sam_vit_b_loads_with_every_key_accounted_for(vit_b):
    sam = random_sam_state_dict()
    enc = vit_b.module.image_encoder
    before = {k: v.clone() for k, v in enc.state_dict().items() if "attn_mask" not in k}
    report = load_sam_image_encoder(vit_b, sam)
    after = enc.state_dict()

    # every SAM key: loaded into the same-named 3D tensor, or unused with a reason
    loaded = {"image_encoder." + k for k in report["loaded"]}
    assert loaded.isdisjoint(report["unused"]) and loaded | set(report["unused"]) == set(sam)
    assert set(report["unused"]) == {
        f"image_encoder.neck.{k}" for k in ("0.weight", "1.weight", "1.bias", "2.weight", "3.weight", "3.bias")
    } | set(OTHER_SAM_KEYS)
    assert len(report["loaded"]) == 3 + 12 * 14
    for k in report["loaded"]:
        assert torch.equal(after[k], sam["image_encoder." + k]), k
    # every 3D key: loaded, derived (rel_pos_d, as published) or new
    assert set(report["loaded"]) | set(report["derived"]) | set(report["initialised"]) == set(after)
    assert len(report["derived"]) == 12
    for i, blk in enumerate(enc.blocks):
        torch.testing.assert_close(
            blk.attn.rel_pos_d,
            0.5 * (sam[f"image_encoder.blocks.{i}.attn.rel_pos_h"] + sam[f"image_encoder.blocks.{i}.attn.rel_pos_w"]),
        )
    for k in report["initialised"]:
        if k in before:
            assert torch.equal(after[k], before[k]), k  # new weights untouched
    assert "depth_embed" in report["initialised"] and "blocks.0.adapter.linear1.weight" in report["initialised"]
    assert "neck_3d.0.0.weight" in report["initialised"] and "slice_embed.weight" in report["initialised"]


def test_image_encoder_only_dict_and_bad_dicts(vit_b):
    sam = {k[len("image_encoder.") :]: v for k, v in random_sam_state_dict().items() if k.startswith("image_encoder.")}
    assert len(load_sam_image_encoder(vit_b, sam)["loaded"]) == 171
    enc = vit_b.module.image_encoder
    pos = enc.pos_embed.detach().clone()
    bad = dict(sam, pos_embed=torch.zeros(1, 32, 32, 768))
    with pytest.raises(CheckpointError, match=r"\(1, 64, 64, 768\)"):
        load_sam_image_encoder(vit_b, bad)
    incomplete = {k: v for k, v in sam.items() if k != "blocks.7.mlp.lin2.bias"}
    with pytest.raises(CheckpointError, match="first: blocks.7.mlp.lin2.bias"):
        load_sam_image_encoder(vit_b, incomplete)
    with pytest.raises(CheckpointError, match="SAM ViT-B weights fit the vit_b variant only"):
        load_sam_image_encoder(build_model("sam3d_adapter", "tiny"), sam)
    assert torch.equal(enc.pos_embed, pos)  # nothing loaded from refused dicts


def test_published_freeze_recipe_vit_b(vit_b):
    trainable, total = apply_finetune_recipe(vit_b, "adapters")
    net = vit_b.module
    names = {n for n, p in net.named_parameters() if p.requires_grad}
    enc = {n[len("image_encoder.") :] for n in names if n.startswith("image_encoder.")}
    frozen = {n for n, p in net.image_encoder.named_parameters() if not p.requires_grad}
    assert frozen == (
        {"patch_embed.proj.weight", "patch_embed.proj.bias", "pos_embed"}
        | {
            f"blocks.{i}.attn.{k}"
            for i in range(12)
            for k in ("rel_pos_h", "rel_pos_w", "lr", "qkv.weight", "qkv.bias", "proj.weight", "proj.bias")
        }
        | {f"blocks.{i}.mlp.{k}" for i in range(12) for k in ("lin1.weight", "lin1.bias", "lin2.weight", "lin2.bias")}
    )
    assert {
        "depth_embed",
        "slice_embed.weight",
        "blocks.4.adapter.conv.weight",
        "blocks.4.norm1.weight",
        "blocks.11.attn.rel_pos_d",
        "neck_3d.3.2.weight",
    } <= enc
    assert all(p.requires_grad for p in net.prompt_encoders.parameters())
    assert all(p.requires_grad for p in net.mask_decoder.parameters())
    assert total == sum(p.numel() for p in net.parameters())
    assert trainable == total - sum(p.numel() for n, p in net.image_encoder.named_parameters() if n in frozen)
    assert apply_finetune_recipe(vit_b, "full") == (total, total)
    dec_only, _ = apply_finetune_recipe(vit_b, "decoder")
    assert dec_only == sum(p.numel() for p in [*net.prompt_encoders.parameters(), *net.mask_decoder.parameters()])
    with pytest.raises(ValueError, match="known: adapters"):
        apply_finetune_recipe(vit_b, "lora")


def test_frozen_tensors_stay_bit_identical_after_a_step():
    torch.manual_seed(1)
    model = build_model("sam3d_adapter", "tiny").train()
    apply_finetune_recipe(model, "adapters")
    net = model.module
    before = {n: p.detach().clone() for n, p in net.named_parameters()}
    opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-2)
    patch = torch.randn(1, 1, 64, 64, 64)
    loss = model.logits(patch, torch.tensor([[[30.0, 30.0, 30.0]]]), torch.tensor([[1]]))[:, 1].mean()
    loss.backward()
    opt.step()
    for n, p in net.named_parameters():
        if p.requires_grad:
            continue
        assert torch.equal(p, before[n]), n
    moved = [n for n, p in net.named_parameters() if p.requires_grad and not torch.equal(p, before[n])]
    assert any(n.startswith("image_encoder.blocks.0.adapter") for n in moved)
    assert any(n.startswith("mask_decoder.") for n in moved)
