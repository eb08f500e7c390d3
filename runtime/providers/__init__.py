"""Model providers behind one neutral shape: Anthropic, OpenAI(-compatible), scripted."""
