"""Conversions to and from other frameworks' parameter layouts."""
