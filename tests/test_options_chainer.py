"""chainer.links.BatchNormalization beyond the protocol (Chainer 7.8.1; lines cited are
chainer/links/normalization/batch_normalization.py (L) and chainer/functions/normalization/
batch_normalization.py (F)): ``finetune=True`` (the adapter's ``momentum="cumulative"``) over batches of
unequal size is the plain average of the per-batch statistics, the running variance unbiased per batch
(L:325-327: N += 1, decay = 1 − 1/N; F:52, 62-65), not the whole data's statistics (the gap is
reference.options.average_gap's); ``start_finetuning`` resets the count (L:352-361); a finetune call
normalizes with the batch's statistics; the mode is the process-wide ``chainer.config.train``, True by
default."""
import numpy as np
import pytest

import reference as ref
from reference import options as ro

chainer = pytest.importorskip("chainer", reason="install it with: pip install chainer==7.8.1 'numpy<2' 'setuptools<70'")
from chainer import links  # noqa: E402

RNG = np.random.default_rng(3)
BATCHES = [RNG.standard_normal((n, 3, 2, 2)) * s + o for n, s, o in ((2, 1.0, 0.0), (5, 3.0, 2.0), (3, 0.5, -1.0))]


def _finetune(link, batches):
    with chainer.using_config("train", True):
        return [np.array(link(b, finetune=True).array) for b in batches]


def test_finetune_is_the_plain_average_of_the_batch_statistics_not_the_whole_datas():
    link = links.BatchNormalization(3, dtype=np.float64)
    link.avg_mean[...] = 7.0   # forgotten at the first finetune call (decay 1 − 1/1 = 0)
    ys = _finetune(link, BATCHES)
    mean, var = ro.batch_average(BATCHES, unbiased=True)
    np.testing.assert_allclose(link.avg_mean, mean, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(link.avg_var, var, rtol=1e-13)
    assert link.N == 3
    whole_mean, whole_var = ro.whole_data_stats(BATCHES, unbiased=True)
    gap_mean, gap_var = ro.average_gap(BATCHES, unbiased=True)
    np.testing.assert_allclose(link.avg_mean - whole_mean, gap_mean, rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(link.avg_var - whole_var, gap_var, rtol=1e-10, atol=1e-13)
    assert np.abs(gap_var).max() > 0.1          # unequal batches of other means: a gap one can see
    # every finetune call normalizes with its own batch's statistics
    for b, y in zip(BATCHES, ys):
        np.testing.assert_allclose(y, ref.batch_norm_train(b, np.ones(3), np.zeros(3), eps=2e-5)[0], rtol=1e-12,
                                   atol=1e-12)


def test_start_finetuning_resets_the_count():
    link = links.BatchNormalization(3, dtype=np.float64)
    _finetune(link, BATCHES)
    link.start_finetuning()
    assert link.N == 0
    _finetune(link, BATCHES[1:])
    mean, var = ro.batch_average(BATCHES[1:], unbiased=True)
    np.testing.assert_allclose(link.avg_mean, mean, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(link.avg_var, var, rtol=1e-13)


def test_a_plain_call_trains_and_decay_weighs_the_old_value():
    assert chainer.config.train is True
    link = links.BatchNormalization(3, decay=0.75, dtype=np.float64)
    assert (link.decay, link.eps) == (0.75, 2e-5)
    x = BATCHES[1]
    y = np.array(link(x).array)
    _, mean, var = ref.batch_norm_train(x, np.ones(3), np.zeros(3), eps=2e-5)
    np.testing.assert_allclose(y, ref.batch_norm_train(x, np.ones(3), np.zeros(3), eps=2e-5)[0], rtol=1e-12,
                               atol=1e-12)
    em, ev = ref.update_running_stats(np.zeros(3), np.ones(3), mean, var, x.size // 3, new_batch_weight=0.25,
                                      unbiased=True)
    np.testing.assert_allclose(link.avg_mean, em, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(link.avg_var, ev, rtol=1e-13)
    with chainer.using_config("train", False):   # inference: the running statistics, no update
        yi = np.array(link(x, finetune=True).array)
    np.testing.assert_allclose(yi, ref.batch_norm_infer(x, np.ones(3), np.zeros(3), em, ev, eps=2e-5), rtol=1e-12)
    np.testing.assert_allclose(link.avg_mean, em, rtol=1e-13, atol=1e-15)
