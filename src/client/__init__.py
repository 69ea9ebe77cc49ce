"""The async client an orchestrator embeds to drive codeyard workers."""
