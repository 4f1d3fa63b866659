"""Tests for agents."""
