"""Submission support: round rules, system description, compliance verification, tree generation and checks."""
