"""README.md's counts and tables are generated (equiv/readme.py): the committed README is what
`equiv readme` writes. NumPy only."""
from pathlib import Path

from equiv import readme

README = Path(__file__).resolve().parent.parent / "README.md"


def test_readme_numbers_are_generated():
    text = README.read_text()
    assert set(m.group(1) for m in readme.MARK.finditer(text)) == set(readme.GENERATORS)
    new = readme.render(text)
    assert new == text, f"README.md is stale ({', '.join(readme.stale(text, new))}): run `equiv readme`"


def test_report_and_readme_count_divergences_alike():
    from equiv.findings import divergence_counts
    from equiv.known import KNOWN, NET_FINDINGS
    layer, net = divergence_counts(KNOWN)
    assert (layer, net) == (len(KNOWN), len({f.id for f in NET_FINDINGS}))
    assert f"{layer + net} documented divergences" in README.read_text()
