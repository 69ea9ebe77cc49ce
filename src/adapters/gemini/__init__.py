"""Gemini CLI adapter: ``gemini --output-format stream-json`` driven through the shared CLI
run loop."""

from codeyard.adapters.gemini.parser import GeminiParser
from codeyard.adapters.gemini.spec import GeminiOptions, GeminiSpec

__all__ = ["GeminiOptions", "GeminiParser", "GeminiSpec"]
