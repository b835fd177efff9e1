"""Self-contained HTML reports with embedded figures."""
