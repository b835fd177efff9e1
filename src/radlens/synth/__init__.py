"""Controllable synthesis (issue 7): prompt parsing; masks and images come later."""

from radlens.synth.prompt import Finding, ParsedPrompt, PromptError, parse_prompt

__all__ = ["Finding", "ParsedPrompt", "PromptError", "parse_prompt"]
