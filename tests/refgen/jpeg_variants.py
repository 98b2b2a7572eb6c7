"""Reference cases for jpeg_variants (filled in by its owner)."""


def cases(b):
    """Adds this family's inputs and cases to the builder `b` (see make_refdata.Builder)."""
