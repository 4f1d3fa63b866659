"""Tests for master."""
