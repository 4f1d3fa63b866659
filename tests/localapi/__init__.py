"""Tests for localapi."""
