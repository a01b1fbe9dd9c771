"""Sphinx configuration of the documentation site: Markdown pages (MyST), the built-in alabaster
theme, nothing fetched while building. Build: `tox -e docs` (sphinx-build -W: a warning fails)."""
project = "bn-equiv"
author = "the bn-equiv authors"
extensions = ["myst_parser"]
source_suffix = {".md": "markdown"}
root_doc = "index"
# findings/notes/ holds the hand-written parts of the findings pages, which `equiv docs` copies into them
exclude_patterns = ["_build", "findings/notes"]
# the porting page (`equiv porting` writes it): a static page where a reader picks two layers
html_extra_path = ["pick-two.html"]
html_theme = "alabaster"
html_title = "bn-equiv"
html_theme_options = {"description": "Batch normalization, framework by framework, against one oracle",
                      "page_width": "1300px", "body_max_width": "none"}
