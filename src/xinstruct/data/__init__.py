"""Data: web-text and seed loading (local files and Hub datasets), filters, bundled sample data."""
