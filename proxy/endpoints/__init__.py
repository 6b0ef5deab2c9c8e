"""One small object per cached API (chat completions first): what differs per endpoint."""
