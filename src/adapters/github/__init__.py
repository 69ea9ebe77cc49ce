"""GitHub: the CodeHost port over the GitHub REST API (:class:`GitHubCodeHost`)."""

from codeyard.adapters.github.code_host import GITHUB_API, GitHubCodeHost

__all__ = ["GITHUB_API", "GitHubCodeHost"]
