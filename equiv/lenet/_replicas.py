"""What the BN-LeNets whose replicas run in a worker process (equiv.lenet.tf_mirrored_net,
mxnet_sync_net) share: the net keeps every replica's parameters and statistics as the worker
returned them, and answers with replica 0's."""


def keep(net, res):
    net.replica_params, net.replica_states = res["params"], res["states"]
    net.params, net.state = res["params"][0], res["states"][0]


def get_params(net):
    return {k: v.copy() for k, v in net.params.items()}


def get_state(net):
    return {k: v.copy() for k, v in net.state.items()}
