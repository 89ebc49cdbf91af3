"""The GPU check judges: experiments/gpu_verdict.py fails on each wrong figure the issue lists."""

import sys

import pytest
from conftest import REPO

sys.path.insert(0, str(REPO / "experiments"))
from gpu_verdict import judge  # noqa: E402

SETTINGS = [  # precision, channels_last, compile (mode), fused SGD, samples/s
    ("fp32", False, False, False, 900),
    ("bf16", True, False, False, 4600),
    ("bf16", True, True, False, 6400),
    ("bf16", True, "max-autotune-no-cudagraphs", True, 7400),  # 1.156x the plain bf16 + cl + compile
]


def points_and_plain(**changes):
    points, plain = [], []
    for precision, cl, compiled, fused, speed in SETTINGS:
        points.append(
            {
                "status": "ok",
                "precision_mode": precision,
                "channels_last": cl,
                "compile": bool(compiled),
                "compile_mode": (compiled if isinstance(compiled, str) else "default") if compiled else None,
                "optimizer_impl": "fused" if fused else "foreach",
                "throughput": speed,
                "data_time_share": 0.01,
                "energy_per_sample_j": 0.15 if cl else 0.7,
            }
        )
        plain.append(
            {"precision": precision, "channels_last": cl, "compile": compiled, "fused": fused, "samples_per_s": speed}
        )
    for key, value in changes.items():
        index, field = key.split("__")
        points[int(index)][field] = value
    return points, plain


def failed(verdict):
    return {c["check"] for c in verdict["checks"] if not c["passed"]}


def test_a_healthy_run_passes():
    verdict = judge(*points_and_plain(), tests_exit=0, speed_enforced=True)
    assert verdict["passed"] and not failed(verdict) and verdict["bf16_cl_speedup"] == pytest.approx(4600 / 900)


@pytest.mark.parametrize(
    "changes, check",
    [
        ({"1__throughput": 4400}, "FastGPU / plain >= 0.97"),  # 0.957x the plain loop
        ({"0__throughput": 1200}, "bf16 + channels_last >= 4.0x fp32"),
        ({"1__export_error": "UserError: Constraints violated (batch)!"}, "no export_error"),
        ({"0__data_time_share": 0.64}, "device-resident data share <= 5%"),
        ({"2__energy_per_sample_j": 0.537}, "compile energy/sample within 20% of eager bf16+cl"),
        ({"2__status": "failed"}, "every point finished"),
        ({"3__throughput": 7300}, "best lever point >= 1.15x the plain loop's bf16 + cl + compile"),
    ],
)
def test_each_wrong_figure_fails_the_verdict(changes, check):
    verdict = judge(*points_and_plain(**changes), tests_exit=0, speed_enforced=True)
    assert not verdict["passed"] and check in failed(verdict)


def test_failed_cuda_tests_fail_it_and_the_cpu_fallback_only_advises_on_speed():
    assert not judge(*points_and_plain(), tests_exit=1, speed_enforced=True)["passed"]
    advisory = judge(*points_and_plain(**{"1__throughput": 4000}), tests_exit=0, speed_enforced=False)
    assert advisory["passed"] and "FastGPU / plain >= 0.97" in failed(advisory)


def test_the_fork_sweep_check_fails_on_a_bad_fork_a_cpu_point_or_a_killed_point():
    from gpu_verdict import judge_fork_sweep

    def point(i, **changes):
        start = "fork server (forked from the sweep's process)"
        return {"point": i, "status": "ok", "device": "cuda", "bad_fork": False, "point_start": start, **changes}

    assert judge_fork_sweep([point(i) for i in range(4)], "cuda")["passed"]
    for wrong in ({"bad_fork": True}, {"device": "cpu"}, {"status": "killed", "error": "killed by SIGKILL"}):
        check = judge_fork_sweep([point(0), point(1, **wrong)], "cuda")
        assert not check["passed"] and check["enforced"] and check["detail"].startswith("point 1:")
    assert not judge_fork_sweep([], "cuda")["passed"]  # no sweep ran: nothing was checked
