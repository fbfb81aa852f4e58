"""adapters stage of the CLIC toolkit; importable as toolkit.adapters."""
