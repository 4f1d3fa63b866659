"""Tests for worker."""
