"""Views of kvfabric blocks inside a region, as torch tensors (torch needed only here).

A block of layer group g is [layersInGroup, 2, kvHeads, chunkTokens, headDim] in the profile's
dtype; chunk i of group g sits at offsets[g] + i * blockBytes[g] of the region.
"""

TORCH_DTYPES = {"fp16": "float16", "bf16": "bfloat16", "fp32": "float32"}


def torch_dtype(name):
    import torch

    if name not in TORCH_DTYPES:
        raise ValueError(f"dtype {name} has no torch equivalent here")
    return getattr(torch, TORCH_DTYPES[name])


class BlockViews:
    """Per-layer access to the chunk blocks of one get/put slot set in a region."""

    def __init__(self, region_tensor, layout, offsets):
        self.t = region_tensor
        self.layout = layout
        self.offsets = offsets
        p = layout["profile"]
        self.dtype = torch_dtype(p["dtype"])
        self.h, self.c, self.d = p["kvHeads"], p["chunkTokens"], p["headDim"]
        self.layer_group = []
        for g, grp in enumerate(layout["groups"]):
            for j in range(grp["layers"]):
                self.layer_group.append((g, j))

    def block(self, layer, chunk):
        """[2, kvHeads, chunkTokens, headDim] of one layer in one chunk's block."""
        g, j = self.layer_group[layer]
        bb = self.layout["blockBytes"][g]
        start = self.offsets[g] + chunk * bb
        lg = self.layout["groups"][g]["layers"]
        blk = self.t[start : start + bb].view(self.dtype).view(lg, 2, self.h, self.c, self.d)
        return blk[j]
