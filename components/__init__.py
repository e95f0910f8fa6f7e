"""execal's UI: one module per panel (layout + callbacks), pure figure builders in figures.py."""
