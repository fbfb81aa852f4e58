"""Shared vocabulary every stage may use: errors, paths and URLs, caption text, hashing, the stored parse.

Nothing here imports torch, SQLAlchemy, spaCy or MLflow, so the torch-free runtime can depend on it.
"""
