"""Cross-app tests."""
