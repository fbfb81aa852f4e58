"""export stage of the CLIC toolkit; importable as toolkit.export."""
