"""The worker manager: the control plane that creates, watches and removes workers."""
