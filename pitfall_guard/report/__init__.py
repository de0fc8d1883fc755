"""Reporters: turn findings into text for people (code frames) or machines (JSON)."""
