"""The golden vectors (reference/data/vectors, shipped with the package) against every selected
adapter: each stored case it can run gives the stored outputs within the stored bounds."""
from equiv import vectors


def test_adapter_passes_stored_vectors(adapter, device):
    results, failed = vectors.check_all(adapter, device)
    assert not failed, "\n".join(failed)
    assert any(r["status"] == "passed" for r in results), f"{adapter.name}: no stored case ran"
