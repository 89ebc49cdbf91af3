"""Export (one helper, a bounded batch dimension), where compressed models are measured, 2:4 sparsity's plan."""

import pytest
import torch
from conftest import compose_cfg
from torch import nn

from fastgpu.compress import deploy
from fastgpu.compress import methods as C
from fastgpu.errors import FastGPUError
from fastgpu.train.precision import build_precision
from fastgpu.zoo.models import build_model


class GuardedBatchNorm(nn.Module):
    """Carries the guard cuDNN's batch norm adds on CUDA (`batch <= 65535`), here on any device."""

    def __init__(self):
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)

    def forward(self, x):
        if x.shape[0] <= 65535:
            return self.bn(self.conv(x))
        return self.conv(x)


def test_a_batchnorm_model_exports_with_a_bounded_batch_and_reloads(tmp_path):
    model = GuardedBatchNorm().eval()
    example = torch.randn(2, 3, 8, 8)
    with pytest.raises(Exception, match="batch"):  # what every CUDA export hit before the bound
        torch.export.export(model, (example,), dynamic_shapes=({0: torch.export.Dim("batch", min=1)},))
    facts = deploy.export_model(model, example, tmp_path, ["torch_export"])
    assert "export_error" not in facts and facts["serialized_bytes"] > 0
    program = torch.export.load(tmp_path / deploy.MODEL_FILE)
    (batch_range,) = [r for r in program.range_constraints.values() if r.upper == deploy.MAX_EXPORT_BATCH]
    assert batch_range.lower <= 2
    x = torch.randn(5, 3, 8, 8)
    assert torch.allclose(program.module()(x), model(x), atol=1e-6)


def test_a_failed_export_is_recorded_not_raised(tmp_path):
    class Untraceable(nn.Module):
        def forward(self, x):
            return x * float(x.sum())  # data-dependent Python float: export cannot trace it

    facts = deploy.export_model(Untraceable().eval(), torch.randn(2, 3), tmp_path, ["torch_export", "onnx"])
    assert facts["export_error"].startswith(("UserError", "GuardOnDataDependentSymNode", "TorchRuntimeError"))
    assert "\n" not in facts["export_error"] and not (tmp_path / deploy.MODEL_FILE).exists()
    assert deploy.export_model(Untraceable(), torch.randn(2, 3), tmp_path, []) == {}


def test_int8_is_measured_where_it_is_deployed():
    cuda = torch.device("cuda")
    assert C.deploy_device("quantize_static", cuda).type == "cpu"
    assert C.deploy_device("qat", cuda).type == "cpu" and C.deploy_device("quantize_dynamic", cuda).type == "cpu"
    assert C.deploy_device("prune", cuda) == cuda and C.deploy_device("sparse24", cuda) == cuda


def test_sparse24_plan_counts_eligible_layers_and_their_flops_share():
    mlp = build_model(compose_cfg("model=mlp").model)  # 64 -> 256 -> 256 -> 10
    plan = C.sparse24_plan(mlp, torch.randn(4, 1, 8, 8))
    assert len(plan["layers"]) == 2
    expected = (64 * 256 + 256 * 256) / (64 * 256 + 256 * 256 + 256 * 10)
    assert plan["flops_share"] == pytest.approx(expected, rel=1e-3)


def test_sparse24_with_no_eligible_layer_or_full_precision_is_one_line():
    cfg = compose_cfg("model=small_cnn")
    model = build_model(cfg.model).eval()
    cpu_bf16 = build_precision(compose_cfg("precision=bf16").precision, torch.device("cpu"))
    cuda = torch.device("cuda")  # the checks below come before any CUDA work
    with pytest.raises(
        FastGPUError, match=r"found no layer it can convert.*\(this model's: head \(64->10\)\).*model=mlp"
    ):
        C.sparse24(model, cuda, cpu_bf16, torch.randn(2, 1, 8, 8))
    fp32 = build_precision(compose_cfg("precision=fp32").precision, torch.device("cpu"))
    with pytest.raises(FastGPUError, match="use precision=bf16 or fp16"):
        C.sparse24(model, cuda, fp32, torch.randn(2, 1, 8, 8))
    with pytest.raises(FastGPUError, match="needs a CUDA GPU"):
        C.sparse24(model, torch.device("cpu"), cpu_bf16, torch.randn(2, 1, 8, 8))
