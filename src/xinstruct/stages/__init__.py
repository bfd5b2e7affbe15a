"""The method's stages. Each is a function from saved datasets to a saved dataset plus a report."""
