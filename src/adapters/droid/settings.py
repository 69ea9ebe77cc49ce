"""The ``~/.factory/settings.json`` codeyard writes for one Droid turn (BYOK custom model).

Droid reads custom models from ``customModels`` and names them ``custom:<displayName with
spaces as dashes>-<index>``; codeyard writes exactly one, so its id is
:data:`CUSTOM_MODEL_ID`. ``apiKey`` is the reference ``${CODEYARD_DROID_API_KEY}``, which
Droid expands from its environment: the key itself is never written to disk.
Verified against droid 0.215.0 (model id, ``${VAR}`` expansion, ``commandAllowlist``).
"""

from __future__ import annotations

import json
from enum import StrEnum

#: Environment variable holding the custom model's API key (referenced by settings.json).
API_KEY_ENV = "CODEYARD_DROID_API_KEY"
DISPLAY_NAME = "codeyard"
#: The id Droid gives the one custom model codeyard configures (index 0).
CUSTOM_MODEL_ID = f"custom:{DISPLAY_NAME}-0"
DEFAULT_MAX_OUTPUT_TOKENS = 8192


class DroidWireApi(StrEnum):
    """The model API a custom model speaks: values are Droid's ``provider`` names.

    ``base_url`` conventions follow the SDK Droid uses for each: the Anthropic SDK appends
    ``/v1/messages`` to the server root; the OpenAI SDK appends ``/chat/completions`` or
    ``/responses`` to an API root that already ends in ``/v1``.
    """

    ANTHROPIC = "anthropic"
    """Anthropic Messages, ``POST {base_url}/v1/messages``."""
    CHAT_COMPLETIONS = "generic-chat-completion-api"
    """OpenAI Chat Completions, ``POST {base_url}/chat/completions``."""
    RESPONSES = "openai"
    """OpenAI Responses, ``POST {base_url}/responses``."""


def render_settings(
    *,
    wire_api: DroidWireApi | None,
    base_url: str | None,
    model: str | None,
    max_output_tokens: int = DEFAULT_MAX_OUTPUT_TOKENS,
    allowed_commands: tuple[str, ...] = (),
    cloud_sync: bool = False,
) -> str:
    """settings.json text. Without ``base_url`` there is no custom model (Factory's own)."""
    settings: dict[str, object] = {"cloudSessionSync": cloud_sync}
    if base_url is not None and wire_api is not None and model is not None:
        settings["customModels"] = [
            {
                "model": model,
                "displayName": DISPLAY_NAME,
                "baseUrl": base_url,
                "apiKey": "${" + API_KEY_ENV + "}",
                "provider": wire_api.value,
                "maxOutputTokens": max_output_tokens,
            }
        ]
    if allowed_commands:
        # Droid matches these as command prefixes; it still asks (and exec then stops the
        # turn) for anything above the autonomy level that is not listed.
        settings["commandAllowlist"] = list(allowed_commands)
    return json.dumps(settings, indent=2, ensure_ascii=False) + "\n"
