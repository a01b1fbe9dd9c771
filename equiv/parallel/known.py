"""Documented data-parallel findings: what a data-parallel BatchNorm does that a single device
does not, measured on a witness run that its test pins (a strict xfail where the layer departs
from what a user would expect, a plain assertion of the measured value otherwise).
``equiv findings`` lists them under "Data-parallel"."""
from dataclasses import dataclass


@dataclass(frozen=True)
class ParallelFinding:
    id: str
    implementations: tuple   # names in equiv.parallel.REGISTRY
    reason: str              # what differs and why, the source line, the measured numbers
    test: str                # the test that runs the witness: tests/<file>::<name>
    advice: str = ""


_WITNESS = ("witness: float64, 2 channels, shards of 8 rows with means 0, 5, −3, 2 (std 1), 3 steps, "
            "momentum 0.1")

KNOWN = [
    ParallelFinding(
        id="torch-ddp-rank0-broadcast",
        implementations=("torch.ddp",),
        reason=("DistributedDataParallel (torch 2.13.0, forward_sync_buffers / broadcast_buffers default True) "
                "broadcasts rank 0's buffers to every replica before each forward "
                "(torch/nn/parallel/distributed.py:1782, _pre_forward → _sync_buffers; :2417 'The process with "
                "rank 0 is considered the authoritative copy'), "
                "then each replica updates them from its own shard: replica r's running statistics after k steps are "
                "rank 0's chain through step k − 1 plus one update from r's k-th shard, not its own chain ("
                + _WITNESS + ", R = 2: replica 1's running mean 0.449 where its own chain is 1.332)."),
        test="tests/test_parallel_torch.py::test_ddp_replica_stats_are_not_their_own_chain",
        advice="read running statistics from rank 0 only (the others are one step off rank 0's); "
               "forward_sync_buffers=False keeps each replica's own"),
    ParallelFinding(
        id="torch-ddp-checkpoint-rank0-shard",
        implementations=("torch.ddp", "torch.ddp.local_buffers"),
        reason=("Plain BatchNorm under DDP normalizes each replica by its own shard, and rank 0's "
                "checkpoint (model.module.state_dict()) holds running statistics from rank 0's shards only, "
                "never the global batch's: with forward_sync_buffers=True they are exactly rank 0's own chain "
                "(the broadcast only overwrites the others). " + _WITNESS + ": running mean (−0.049, 0.003) "
                "and running var (0.834, 0.905) where the global batch's are (0.641, 0.646) and (2.817, 2.551) "
                "with R = 2; (−0.068, −0.027), (0.841, 0.887) against (0.212, 0.281), (3.225, 3.285) with R = 4: "
                "off by the spread of the shard means, whatever the dtype."),
        test="tests/test_parallel_torch.py::test_ddp_checkpoint_is_rank0_shard_not_global_batch",
        advice="convert to SyncBatchNorm (on GPUs) or shuffle so that every shard has the global "
               "batch's statistics; re-estimate running statistics on the global data before exporting"),
    ParallelFinding(
        id="torch-ddp-grad-mean",
        implementations=("torch.ddp", "torch.ddp.local_buffers"),
        reason=("DDP all-reduces the parameter gradients and divides by the world size "
                "(torch/distributed/algorithms/ddp_comm_hooks/default_hooks.py:26, "
                "tensor.div_(group_to_use.size()); the built-in reducer, no hook registered, divides alike: "
                "measured): every replica's dgamma, dbeta is Σ over replicas / R, 1/R of the global batch's "
                "gradient of Σ y·dy (measured "
                "ratio 0.5 with R = 2, 0.25 with R = 4, to 1e-15), whatever the shard sizes: with unequal "
                "shards a replica's values weigh 1/(R·n_r) of a mean loss, not 1/N. An empty shard still "
                "counts in R (its zero gradients are averaged in)."),
        test="tests/test_parallel_torch.py::test_ddp_averages_gradients",
        advice="scale the learning rate, or the loss, by R when porting from a summed gradient; "
               "with unequal shards weight each replica's loss by n_r·R/N"),
    ParallelFinding(
        id="torch-ddp-empty-shard",
        implementations=("torch.ddp", "torch.ddp.local_buffers"),
        reason=("A replica given an empty batch (0, C[, H, W]) runs: BatchNorm returns an empty output, zero "
                "gradients and leaves its running statistics untouched. Under forward_sync_buffers=True an empty "
                "shard on rank 0 freezes every replica's running statistics: each forward starts from rank 0's "
                "unchanged buffers, and rank 0's checkpoint after k steps equals the initial state exactly."),
        test="tests/test_parallel_torch.py::test_ddp_empty_shard_on_rank0_freezes_the_checkpoint",
        advice="drop_last=True in the sampler (DistributedSampler pads instead of emptying a shard)"),
    ParallelFinding(
        id="torch-syncbn-cpu-refused",
        implementations=("torch.syncbn",),
        reason=("SyncBatchNorm does not run on the CPU (torch 2.13.0): DistributedDataParallel refuses it at "
                "construction, ValueError 'SyncBatchNorm layers only work with GPU modules' "
                "(torch/nn/parallel/distributed.py:2459); alone in a gloo group its forward raises ValueError "
                "'SyncBatchNorm expected input tensor to be on GPU or XPU or privateuseone' "
                "(torch/nn/modules/batchnorm.py:851). Its math is not reachable another way: the autograd Function "
                "(torch/nn/modules/_functions.py SyncBatchNorm, gloo's all_gather path included) calls "
                "torch.batch_norm_stats, batch_norm_gather_stats_with_counts, batch_norm_elemt, "
                "batch_norm_backward_reduce and batch_norm_backward_elemt, none of which has a CPU kernel "
                "(NotImplementedError: Could not run 'aten::batch_norm_stats' with arguments from the 'CPU' backend). "
                "On CUDA it is held to the oracle by the generic property (torch.syncbn)."),
        test="tests/test_parallel_torch.py::test_syncbn_refuses_the_cpu",
        advice="on CPU clusters there is no synchronized BatchNorm in torch: use GroupNorm/LayerNorm, or "
               "all-reduce the batch moments by hand"),
]


def by_id(finding_id):
    return next(f for f in KNOWN if f.id == finding_id)
