from equiv.suite.fixtures import adapter, device, profile, registered_adapter  # noqa: F401
