"""Test doubles shipped with codeyard (the scripted model server), usable offline."""
