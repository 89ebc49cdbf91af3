"""The meter's windows against known answers: a fake clock and a fake energy counter with a known power
trace drive the real RunMeter, so every figure has an exact expected value."""

import time

import pytest
import torch
from conftest import compose_cfg

from fastgpu.errors import FastGPUError
from fastgpu.job.launch import launch
from fastgpu.measure.clock import StepClock
from fastgpu.measure.meter import RunMeter
from fastgpu.measure.reduce import all_reduce
from fastgpu.zoo.data import DeviceBatches, build_data

CPU = torch.device("cpu")


class FakeClock:
    def __init__(self):
        self.t = 100.0

    def __call__(self):
        return self.t

    def advance(self, seconds):
        self.t += seconds


class FakeMonitor:
    """An energy counter integrating a power that the test sets, and samples taken when the test says."""

    def __init__(self, clock):
        self.clock, self.t0, self.power, self.samples = clock, clock.t, 0.0, []
        self._energy, self._last = 0.0, clock.t

    def energy_j(self):
        self._energy += self.power * (self.clock.t - self._last)
        self._last = self.clock.t
        return self._energy

    def run(self, seconds, power, util):
        """Advance time at a constant power; one sample in the middle."""
        self.energy_j()
        self.power = power
        self.samples.append(
            {
                "system/time_s": self.clock.t + seconds / 2 - self.t0,
                "system/gpu_util_percent": util,
                "system/gpu_power_w": power,
                "system/cpu_percent": util,
            }
        )
        self.clock.advance(seconds)


def run_epochs(meter, monitor, clock, epochs, steps, data_s, step_s, power_of_step, eval_s=5.0, batch=8):
    def loader():  # the device waits `data_s` for each batch
        for _ in range(steps):
            if data_s:
                monitor.run(data_s, power_of_step(meter.steps_done), util=10)
            yield None, torch.zeros(batch)

    for _ in range(epochs):
        for _ in meter.batches(loader(), lambda b: b):
            monitor.run(step_s, power_of_step(meter.steps_done), util=90)
            meter.step_end()
        meter.epoch_end()
        with meter.evaluating():
            monitor.run(eval_s, 1000.0, util=50)  # evaluation: excluded from every training figure


def test_windows_exclude_warmup_and_evaluation_and_give_the_known_energy():
    clock = FakeClock()
    monitor = FakeMonitor(clock)
    meter = RunMeter(CPU, warmup_steps=3, monitor=monitor, now=clock)

    def power(step):
        return 400.0 if step < 3 else 100.0  # compilation burns 400 W, the steady steps 100 W

    run_epochs(meter, monitor, clock, epochs=2, steps=5, data_s=0.5, step_s=1.5, power_of_step=power)
    out = meter.summary(world_size=1, reduce=all_reduce, samples=monitor.samples, log_every=2)

    assert meter.state.step_times == pytest.approx([2.0] * 10)
    assert out["timed_steps"] == 7 and out["warmup_steps"] == 3
    assert out["throughput"] == pytest.approx(8 / 2.0) and out["timed_samples"] == 7 * 8
    assert out["throughput_intervals"] == pytest.approx([4.0] * 4)  # steady steps in twos: 4-5, 6-7, 8-9, 10
    assert out["throughput_cv"] == pytest.approx(0.0)
    assert out["data_time_share"] == pytest.approx(0.25)  # 0.5 s of every 2 s step waits for data
    assert out["energy_j"] == pytest.approx(7 * 2.0 * 100.0)  # the 7 steady steps at 100 W, nothing else
    assert out["energy_per_sample_j"] == pytest.approx(100.0 * 2.0 / 8)
    assert out["warmup_energy_j"] == pytest.approx(3 * 2.0 * 400.0)
    assert out["mean_gpu_power_w"] == pytest.approx(100.0)
    assert out["mean_gpu_util_percent"] == pytest.approx(50.0)  # (10 + 90) / 2 over steady samples only
    assert out["eval_time_s"] == pytest.approx(10.0) and out["train_time_s"] == pytest.approx(20.0)
    assert out["warmup_time_s"] == pytest.approx(6.0)


def test_ranks_sum_energy_and_average_utilisation():
    clock = FakeClock()
    monitor = FakeMonitor(clock)
    meter = RunMeter(CPU, warmup_steps=0, monitor=monitor, now=clock)
    run_epochs(meter, monitor, clock, epochs=1, steps=4, data_s=0.0, step_s=1.0, power_of_step=lambda s: 200.0, batch=4)
    # rank 1, call by call: interval samples (sum), interval seconds (max), energy/util (sum), wall (max)
    other_rank = [[8, 8], [4.0, 4.0], [400.0, 1.0, 30.0, 1.0, 0.0], [8.0]]

    def reduce(values, op):
        other = other_rank.pop(0)
        return [a + b for a, b in zip(values, other)] if op == "sum" else [max(a, b) for a, b in zip(values, other)]

    out = meter.summary(world_size=2, reduce=reduce, samples=monitor.samples, log_every=2)
    assert out["energy_j"] == pytest.approx(4 * 200.0 + 400.0)
    assert out["energy_per_sample_j"] == pytest.approx(1200.0 / 32)
    assert out["mean_gpu_util_percent"] == pytest.approx((90.0 + 30.0) / 2)
    assert out["throughput"] == pytest.approx(16 / 4.0)  # both ranks' samples over the slowest rank's time


def test_data_share_reads_high_for_a_slow_loader_and_low_for_data_in_memory():
    def share(fetch_s, compute_s):
        meter = RunMeter(CPU, warmup_steps=1, monitor=None)

        def slow_batches():
            for _ in range(6):
                time.sleep(fetch_s)
                yield torch.ones(4), torch.ones(4)

        for _ in meter.batches(slow_batches(), lambda b: b):
            time.sleep(compute_s)
            meter.step_end()
        meter.epoch_end()
        return meter.summary(1, all_reduce, [], log_every=2)["data_time_share"]

    assert share(fetch_s=0.05, compute_s=0.0) > 0.8
    assert share(fetch_s=0.0, compute_s=0.05) < 0.2


def test_step_clock_pairs_ready_and_end_marks():
    clock = FakeClock()
    steps = StepClock(CPU, now=clock)
    steps.start()
    for data_s, compute_s in [(1, 2), (3, 4)]:
        clock.advance(data_s)
        steps.ready()
        clock.advance(compute_s)
        steps.step()
    assert steps.collect() == ([3, 7], [1, 3])
    clock.advance(1)
    steps.step()  # no ready mark (a loop without a loader): the whole step counts as compute
    assert steps.collect() == ([1], [0.0])


def test_unknown_sync_debug_mode_is_one_line():
    with pytest.raises(FastGPUError, match="trainer.sync_debug='loud' is not known; use one of off, warn, error"):
        RunMeter(CPU, 1, None, sync_debug="loud")


@pytest.mark.parametrize("drop_last", [True, False])
def test_device_batches_match_the_dataloader_and_resume_mid_epoch(drop_last):
    cfg = compose_cfg(
        "data=synthetic",
        "data.train_samples=50",
        "data.val_samples=8",
        "data.batch_size=8",
        f"data.drop_last={str(drop_last).lower()}",
    ).data
    data = build_data(cfg, seed=3)
    train_set = data.train.dataset
    resident = DeviceBatches(train_set, data.train_sampler, cfg.batch_size, drop_last)
    for skip in (0, 16):
        data.train_sampler.set_epoch(2, skip=skip)
        expected = list(data.train)
        got = list(resident)
        assert len(got) == len(expected) == len(resident)
        for (x, y), (ex, ey) in zip(got, expected):
            assert torch.equal(x, ex) and torch.equal(y, ey)


def test_run_records_the_defined_windows(tmp_path, quiet_wandb):
    cfg = compose_cfg(
        "trainer.max_steps=40",
        "trainer.warmup_steps=10",
        "trainer.log_every_n_steps=10",
        "trainer.progress_bar=false",
        "trainer.checkpoint=false",
        "export=[]",
        "inference.benchmark=false",
    )
    metrics = launch(cfg, tmp_path)
    assert metrics["warmup_steps"] == 10 and metrics["timed_steps"] == 30
    assert metrics["timed_samples"] == 30 * 64 and len(metrics["throughput_intervals"]) == 3  # 3 log intervals
    assert metrics["throughput_ci_low"] <= metrics["throughput"] <= metrics["throughput_ci_high"]
    seconds = metrics["throughput_interval_seconds"]
    assert metrics["throughput"] == pytest.approx(30 * 64 / sum(seconds))  # work over the timed window
    assert metrics["median_interval_rate"] == pytest.approx(sorted(metrics["throughput_intervals"])[1])
    assert metrics["throughput_ci_covers"] == "within-run 95%" and metrics["stall_ratio"] >= 1
    assert 0 <= metrics["data_time_share"] < 0.5  # digits in memory: the step is compute
    assert "energy_j" not in metrics  # no energy counter on a CPU


def test_the_loops_own_work_between_steps_is_step_time_not_data_time():
    """A log step, a checkpoint or gradual pruning runs after a step's end: before, it was booked as the next
    step's wait for data."""
    clock = FakeClock()
    monitor = FakeMonitor(clock)
    meter = RunMeter(CPU, warmup_steps=0, monitor=monitor, now=clock)

    def loader():
        for _ in range(4):
            monitor.run(0.5, 0.0, util=10)  # the batch's own wait
            yield None, torch.zeros(8)

    for step, _ in enumerate(meter.batches(loader(), lambda b: b)):
        monitor.run(1.5, 0.0, util=90)
        meter.step_end()
        if step % 2 == 0:  # a log step: 3 s of the loop's own work
            clock.advance(3.0)
            meter.loader_wait()
    meter.epoch_end()
    out = meter.summary(world_size=1, reduce=all_reduce, samples=monitor.samples, log_every=4)
    assert meter.state.step_times == pytest.approx([2.0, 5.0, 2.0, 5.0])  # the work is in the step time
    assert meter.state.data_times == pytest.approx([0.5] * 4)  # but not in the wait for data
    assert out["data_time_share"] == pytest.approx(2.0 / 14.0)


def test_a_resumed_meter_warms_up_again_and_keeps_only_its_own_windows():
    clock = FakeClock()
    monitor = FakeMonitor(clock)
    first = RunMeter(CPU, warmup_steps=2, monitor=monitor, now=clock)
    run_epochs(first, monitor, clock, 1, steps=6, data_s=0.0, step_s=1.0, power_of_step=lambda s: 100.0)
    saved = first.state_dict()
    assert saved["steady_windows"]

    clock2 = FakeClock()  # a new process: a new monitor clock
    monitor2 = FakeMonitor(clock2)
    resumed = RunMeter(CPU, warmup_steps=2, monitor=monitor2, now=clock2)
    resumed.load_state_dict(saved)
    assert resumed.state.steady_windows == []  # the old process's windows mean nothing on this clock

    def slow_after_resume(step):  # not used for time: the step times below carry the recompilation
        return 100.0

    steps = iter([9.0, 9.0, 1.0, 1.0])  # the first two steps after the resume recompile

    def loader():
        for _ in range(4):
            yield None, torch.zeros(8)

    for _ in resumed.batches(loader(), lambda b: b):
        monitor2.run(next(steps), slow_after_resume(0), util=90)
        resumed.step_end()
    resumed.epoch_end()
    out = resumed.summary(world_size=1, reduce=all_reduce, samples=monitor2.samples, log_every=2)
    assert out["warmup_steps"] == 4 and out["timed_steps"] == 6  # 2 at the start, 2 again after the resume
    assert out["step_time_p90_ms"] == pytest.approx(1000.0)  # the recompiling steps are not steady
    assert out["warmup_time_s"] == pytest.approx(2 * 1.0 + 2 * 9.0)


def _timed_run(step_seconds: list, log_every: int, batches_per_step: int = 1) -> dict:
    """A meter driven by a fake clock through steps of the given durations (no warm-up, 8 samples a batch)."""
    clock = FakeClock()
    meter = RunMeter(CPU, warmup_steps=0, monitor=None, now=clock, batches_per_step=batches_per_step)
    durations = iter(step_seconds)
    for _ in meter.batches([(None, torch.zeros(8))] * len(step_seconds), lambda b: b):
        clock.advance(next(durations))
        meter.step_end()
    meter.epoch_end()
    return meter.summary(world_size=1, reduce=all_reduce, samples=[], log_every=log_every)


def test_a_planted_stall_slows_the_headline_and_shows_in_the_stall_figure():
    """Two runs with the same median interval; one stalls 5x in every tenth interval (a recompile, a loader falling
    behind, a checkpoint). The median interval rate hides it; the headline (work over time) does not."""
    jitter = [1.0 + 0.02 * ((7 * i) % 5 - 2) for i in range(400)]  # +-4%: a real run's spread, no stall
    steady = _timed_run(jitter, log_every=4)
    stalled_steps = list(jitter)
    for interval in range(9, 100, 10):  # every tenth interval of 4 steps lasts 5x as long
        stalled_steps[4 * interval] += 4 * 4.0
    stalled = _timed_run(stalled_steps, log_every=4)
    assert stalled["median_interval_rate"] == pytest.approx(steady["median_interval_rate"], rel=0.02)
    assert stalled["throughput"] < 0.8 * steady["throughput"]  # 90 intervals of 4 s and 10 of 20 s: 400/560 s
    assert stalled["throughput_ci_high"] < steady["throughput_ci_low"]  # the intervals part
    assert stalled["stall_ratio"] == pytest.approx(5.0, rel=0.1) and steady["stall_ratio"] < 1.1


def test_with_gradient_accumulation_each_log_interval_holds_whole_optimizer_steps():
    """4 micro-batches an optimizer step: three of 0.1 s and the one that steps the optimizer 0.5 s. Log intervals of
    2 optimizer steps are 8 loader batches, 1.6 s each: equal, where intervals of 2 loader batches alternate."""
    micro = [0.1, 0.1, 0.1, 0.5] * 12
    out = _timed_run(micro, log_every=2, batches_per_step=4)
    assert out["throughput_interval_seconds"] == pytest.approx([1.6] * 6)
    assert out["throughput_cv"] == pytest.approx(0.0, abs=1e-9)
    unaligned = _timed_run(micro, log_every=2, batches_per_step=1)
    assert unaligned["throughput_cv"] > 0.3  # 0.2 s and 0.6 s intervals: the CV the misalignment made up
