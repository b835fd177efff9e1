"""Test-only helpers: builders of small valid images/DICOMs and the generated bad-input corpus."""
