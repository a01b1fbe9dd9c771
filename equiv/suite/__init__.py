"""The suite every implementation is held to, registered or your own, installed or cloned:

    pytest --pyargs equiv.suite --adapters mypkg.bn:batch_norm

the properties (equiv.properties), among them the state after every call, the convention
probes against the declaration, the adapter protocol and the golden vectors.
"""
