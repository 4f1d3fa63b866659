"""Tests for integrity."""
