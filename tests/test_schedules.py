import math

import pytest

from quantgpt.freeze import threshold_at
from quantgpt.schedules import cosine, progress
from quantgpt.train_config import TrainConfig
from quantgpt.trainer import lr_factor


def test_progress_and_cosine():
    assert [progress(s, 10, 30) for s in (10, 20, 30, 40)] == [0.0, 0.5, 1.0, 1.0]
    assert (cosine(0.0), cosine(0.5), cosine(1.0)) == (1.0, pytest.approx(0.5), pytest.approx(0.0))


def test_lr_and_threshold_follow_the_same_cosine():
    cfg = TrainConfig(bits="2-2-8", warmup=0.1, schedule="cosine")
    # 100 steps, 10 of warmup: step 55 is half way through the cosine
    assert lr_factor(cfg, 55, 100) == pytest.approx(0.5)
    assert lr_factor(cfg, 4, 100) == pytest.approx(0.5)  # warmup: (4 + 1) / 10
    # the threshold: from 0.1 at a quarter of the steps down to the final value at the last
    assert threshold_at(25, 100, 0.03) == pytest.approx(0.1)
    assert threshold_at(100, 100, 0.03) == pytest.approx(0.03)
    assert threshold_at(62, 100, 0.03) == pytest.approx(0.03 + 0.07 * 0.5 * (1 + math.cos(math.pi * (62 - 25) / 75)))
