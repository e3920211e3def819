"""Runtime: what every other package leans on, and nothing domain-specific.

Owns the project's errors and the CLI runner, atomic file writes, cache and repository paths, device choice,
torchrun helpers, peak-memory measurement and PNG export through the browser.
May import: nothing of the project.
"""
