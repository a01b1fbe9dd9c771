"""The book's from-scratch batch norm (Dive into Deep Learning, ch. "Batch Normalization"),
copied verbatim per framework: subjects under test, not code of ours."""
