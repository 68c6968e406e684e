"""The StackFlow bridge (``bridge.py`` says why it exists and how it is built)."""

from meetingtasks.node.stackflow.bridge import StackFlowBridge

__all__ = ["StackFlowBridge"]
