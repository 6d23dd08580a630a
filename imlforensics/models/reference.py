"""IMDL-BenCo's implementations of our deep models, for parity checks and speed comparisons.

IMDL-BenCo (PyPI ``imdlbenco``, Ma et al., NeurIPS 2024 Datasets & Benchmarks) is the reference that
our own model files are tested against: identical random weights must give the same sigmoid map to
1e-4. It is never needed at run time. Install it for the tests with::

    pip install --no-deps imdlbenco==0.1.45 && pip install fvcore

Its package ``__init__`` imports its whole zoo plus albumentations and tensorboard, so only the
model files are imported here: empty ``IMDLBenCo`` packages (with the real ``__path__``) are
registered in ``sys.modules`` first, which leaves the rest of the package untouched.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from pathlib import Path

from ..errors import ImlfError


def imdlbenco_available() -> bool:
    """True when IMDL-BenCo and the modules its model files import are installed."""
    return all(importlib.util.find_spec(m) is not None for m in ("IMDLBenCo", "fvcore"))


def _stub_packages() -> None:
    if getattr(sys.modules.get("IMDLBenCo"), "_imlf_stub", False):
        return
    spec = importlib.util.find_spec("IMDLBenCo")
    if spec is None or not spec.submodule_search_locations:
        raise ImlfError("IMDL-BenCo is not installed: pip install --no-deps imdlbenco==0.1.45 fvcore")
    root = Path(list(spec.submodule_search_locations)[0])
    for name, path in (("IMDLBenCo", root), ("IMDLBenCo.model_zoo", root / "model_zoo"),
                       ("IMDLBenCo.utils", root / "utils")):
        if name in sys.modules:
            continue
        pkg = types.ModuleType(name)
        pkg.__path__ = [str(path)]
        pkg._imlf_stub = True  # type: ignore[attr-defined]
        sys.modules[name] = pkg


def import_reference(module: str) -> types.ModuleType:
    """Import ``IMDLBenCo.<module>`` (e.g. ``model_zoo.mesorch.mesorch``) without the package __init__."""
    _stub_packages()
    return importlib.import_module(f"IMDLBenCo.{module}")


def build_reference(name: str):
    """IMDL-BenCo's model for ``name`` (random weights, eval mode) and a function giving its sigmoid map.

    Returns ``(module, predict)`` where ``predict(module, x)`` takes the normalised input tensor
    (B, 3, S, S) and returns IMDL-BenCo's ``pred_mask`` (already a sigmoid map); for TruFor it takes
    RGB / 256 and returns the official outputs ``{'map', 'confidence', 'score'}``.
    """
    import contextlib
    import io

    import torch

    with contextlib.redirect_stdout(io.StringIO()):  # its constructors print progress lines
        if name == "mesorch":
            mod = import_reference("model_zoo.mesorch.mesorch")
            model = mod.Mesorch(seg_pretrain_path=None, conv_pretrain=False)
        elif name == "mesorch-p":
            model = _mesorch_p_reference()
        elif name == "sparsevit":
            mod = import_reference("model_zoo.sparse_vit.sparse_vit")
            model = mod.SparseViT(img_size=512)
        elif name == "iml-vit":
            mod = import_reference("model_zoo.iml_vit.iml_vit")
            model = mod.IML_ViT(input_size=1024)
        elif name == "trufor":
            model = _trufor_reference()
        else:
            raise ImlfError(f"IMDL-BenCo has no reference for {name!r}")

    def predict(m, x: "torch.Tensor") -> "torch.Tensor":
        zeros = torch.zeros(x.shape[0], 1, x.shape[2], x.shape[3], dtype=x.dtype, device=x.device)
        if name == "mesorch-p":
            return m(x)
        if name == "trufor":  # x: RGB / 256; the official test code's outputs
            loc, conf, det, _ = m(x)
            return {"map": torch.softmax(loc, 1)[:, 1:2], "confidence": torch.sigmoid(conf),
                    "score": torch.sigmoid(det).view(-1)}
        if name == "mesorch":
            out = m(x, zeros, torch.zeros(x.shape[0]))
        elif name == "sparsevit":
            out = m(x, zeros)
        else:
            out = m(x, zeros, zeros)
        return out["pred_mask"]

    return model.eval(), predict


def _trufor_reference():
    """IMDL-BenCo's TruFor network (its copy of the authors' ``test_docker`` builder, the code the
    released ``trufor.pth.tar`` is run with), configured by IMDL-BenCo's own ``trufor.yaml``, without
    the training wrapper (which loads pretrained files)."""
    builder = import_reference("model_zoo.trufor.cmx.builder_np_conf")
    config = import_reference("model_zoo.trufor.config")
    cfg = config._C.clone()
    cfg.defrost()
    cfg.merge_from_file(str(Path(sys.modules["IMDLBenCo"].__path__[0]) / "statics" / "model_zoo" / "configs" / "trufor.yaml"))
    cfg.freeze()
    return builder.myEncoderDecoder(cfg=cfg)


def _mesorch_p_reference():
    """Mesorch-P as the authors' ``mesorch_p.py`` (scu-zjz/Mesorch) assembles it, from IMDL-BenCo's
    Mesorch parts (IMDL-BenCo 0.1.45 ships only the full model): ConvNeXt without its last stage
    and head, MiT stages 2-4, four transposed-conv stacks, five 1x1 reductions summed, no gate."""
    import torch
    from torch import nn

    mod = import_reference("model_zoo.mesorch.mesorch")

    def up(cin, cout):
        return nn.ConvTranspose2d(cin, cout, kernel_size=4, stride=2, padding=1)

    class Upsample(nn.Module):
        def __init__(self):
            super().__init__()
            self.upsamples2 = up(128, 64)
            self.upsamplec3 = nn.Sequential(up(384, 192), up(192, 96))
            self.upsamples3 = nn.Sequential(up(320, 128), up(128, 64))
            self.upsamples4 = nn.Sequential(up(512, 320), up(320, 128), up(128, 64))

    class MesorchP(nn.Module):
        def __init__(self):
            super().__init__()
            self.convnext = mod.ConvNeXt(False)
            self.convnext.stages = self.convnext.stages[:-1]
            del self.convnext.head
            self.segformer = mod.MixVisionTransformer(None)
            self.upsample = Upsample()
            self.low_dct = mod.LowDctFrequencyExtractor()
            self.high_dct = mod.HighDctFrequencyExtractor()
            self.inverse = nn.ModuleList([nn.Conv2d(96, 1, 1) for _ in range(2)] + [nn.Conv2d(64, 1, 1) for _ in range(3)])
            self.resize = nn.Upsample(size=(512, 512), mode="bilinear", align_corners=True)

        def forward(self, image):
            high, low = self.high_dct(image), self.low_dct(image)
            _, c = self.convnext(torch.concat([image, high], dim=1))
            _, s = self.segformer(torch.concat([image, low], dim=1))
            u = self.upsample
            feats = [c[0], u.upsamplec3(c[2]), u.upsamples2(s[1]), u.upsamples3(s[2]), u.upsamples4(s[3])]
            logits = torch.sum(torch.concat([self.inverse[i](f) for i, f in enumerate(feats)], dim=1), dim=1, keepdim=True)
            return torch.sigmoid(self.resize(logits).float())

    return MesorchP()
