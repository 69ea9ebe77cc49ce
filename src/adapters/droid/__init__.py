"""Factory Droid adapter: ``droid exec --output-format stream-json`` driven through the
shared CLI run loop, with a BYOK custom model and air-gapped by default."""

from codeyard.adapters.droid.parser import DroidStreamParser
from codeyard.adapters.droid.settings import CUSTOM_MODEL_ID, DroidWireApi
from codeyard.adapters.droid.spec import DROID_INTERRUPT, DroidOptions, DroidSpec

__all__ = [
    "CUSTOM_MODEL_ID",
    "DROID_INTERRUPT",
    "DroidOptions",
    "DroidSpec",
    "DroidStreamParser",
    "DroidWireApi",
]
