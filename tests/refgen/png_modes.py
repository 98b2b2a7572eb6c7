"""Reference cases for png_modes (filled in by its owner)."""


def cases(b):
    """Adds this family's inputs and cases to the builder `b` (see make_refdata.Builder)."""
