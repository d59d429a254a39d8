"""The webhook inbox and billing notifications."""

__all__: list[str] = []
