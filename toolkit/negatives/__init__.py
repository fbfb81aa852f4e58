"""Hard-negative generators: pure functions over the stored parse of a caption, behind one registry.

Nothing here imports torch, SQLAlchemy or spaCy; training and evaluation call these on stored tags.
"""
