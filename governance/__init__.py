"""governance stage of the CLIC toolkit; importable as toolkit.governance."""
